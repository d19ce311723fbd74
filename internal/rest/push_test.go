package rest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/shoal-dev/shoal/internal/rest"
)

// A push bumps the open pull requests whose source branch it moved, and
// only those, through the cache; git is asked only when such a pull
// request exists.
func TestRecordPush(t *testing.T) {
	n, w := setup(t)
	var before [3]pr
	for i := range before {
		n.do(t, "GET", prPath(w.prs[i]), "reader", nil).want(t, 200).decode(t, &before[i]) // cached now
	}
	var asked map[string]string
	push := rest.Push{Project: "PROJ", Repo: "secret",
		// feature/0 moved; git refused feature/1; "other" has no pull request.
		Branches: map[string]string{"feature/0": "a", "feature/1": "b", "other": "c"},
		BranchesAt: func(_ context.Context, want map[string]string) (map[string]bool, error) {
			asked = want
			return map[string]bool{"feature/0": true, "other": true}, nil
		}}
	if err := rest.RecordPush(context.Background(), n.store, n.cache, push); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 3 {
		t.Fatalf("git was asked about %v", asked)
	}
	var after [3]pr
	for i := range after {
		n.do(t, "GET", prPath(w.prs[i]), "reader", nil).want(t, 200).decode(t, &after[i])
	}
	if after[0].Version != before[0].Version+1 || after[1].Version != before[1].Version || after[2].Version != before[2].Version {
		t.Fatalf("versions %d %d %d → %d %d %d; want only the first bumped", before[0].Version, before[1].Version, before[2].Version,
			after[0].Version, after[1].Version, after[2].Version)
	}
	// No open pull request from the pushed branches: git is not asked.
	push.Branches = map[string]string{"nobody": "x"}
	push.BranchesAt = func(context.Context, map[string]string) (map[string]bool, error) {
		t.Fatal("git asked without a pull request to bump")
		return nil, nil
	}
	if err := rest.RecordPush(context.Background(), n.store, n.cache, push); err != nil {
		t.Fatal(err)
	}
	// git's failure is the push's record's failure; an unknown repository is one too.
	push.Branches = map[string]string{"feature/2": "x"}
	push.BranchesAt = func(context.Context, map[string]string) (map[string]bool, error) { return nil, errors.New("git broke") }
	if err := rest.RecordPush(context.Background(), n.store, n.cache, push); err == nil {
		t.Fatal("a failure of git was not reported")
	}
	push.Repo = "missing"
	if err := rest.RecordPush(context.Background(), n.store, n.cache, push); err == nil {
		t.Fatal("a push to an unknown repository was recorded")
	}
}
