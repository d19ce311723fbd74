package cp

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-dev/shoal/cluster"
)

func TestPlan(t *testing.T) {
	now := time.Unix(1000, 0)
	voter := func(id string) raft.Server {
		return raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(id + ":r")}
	}
	nonvoter := func(id string) raft.Server {
		return raft.Server{Suffrage: raft.Nonvoter, ID: raft.ServerID(id), Address: raft.ServerAddress(id + ":r")}
	}
	mem := func(name string, st cluster.MemberState, ago time.Duration) cluster.Member {
		return cluster.Member{Name: name, State: st, Since: now.Add(-ago), Meta: cluster.Meta{Raft: name + ":r"}}
	}
	alive := func(name string) cluster.Member { return mem(name, cluster.StateAlive, time.Hour) }
	for _, tc := range []struct {
		name    string
		servers []raft.Server
		members []cluster.Member
		want    string
	}{
		{"steady", []raft.Server{voter("a"), voter("b"), voter("c")},
			[]cluster.Member{alive("a"), alive("b"), alive("c")}, ""},
		{"newcomer joins as non-voter", []raft.Server{voter("a"), voter("b"), voter("c")},
			[]cluster.Member{alive("a"), alive("b"), alive("c"), alive("d")}, "add-nonvoter d"},
		{"newcomer fills a missing voter", []raft.Server{voter("a"), voter("b")},
			[]cluster.Member{alive("a"), alive("b"), alive("d")}, "add-voter d"},
		{"voter failed within grace is kept", []raft.Server{voter("a"), voter("b"), voter("c"), nonvoter("d")},
			[]cluster.Member{alive("a"), alive("b"), mem("c", cluster.StateFailed, 5*time.Second), alive("d")}, ""},
		{"voter failed past grace is replaced", []raft.Server{voter("a"), voter("b"), voter("c"), nonvoter("d")},
			[]cluster.Member{alive("a"), alive("b"), mem("c", cluster.StateFailed, time.Minute), alive("d")},
			"add-voter d, remove c"},
		{"dead voter with no replacement goes", []raft.Server{voter("a"), voter("b"), voter("c")},
			[]cluster.Member{alive("a"), alive("b"), mem("c", cluster.StateFailed, time.Minute)}, "remove c"},
		{"departed server goes at once", []raft.Server{voter("a"), voter("b"), voter("c"), nonvoter("d")},
			[]cluster.Member{alive("a"), alive("b"), alive("c"), mem("d", cluster.StateLeft, 0)}, "remove d"},
		{"the leader is never removed", []raft.Server{voter("a"), voter("b")},
			[]cluster.Member{mem("a", cluster.StateFailed, time.Hour), alive("b")}, ""},
		{"moved address is re-added", []raft.Server{voter("a"), voter("b"), voter("c")},
			[]cluster.Member{alive("a"), alive("b"), {Name: "c", State: cluster.StateAlive, Meta: cluster.Meta{Raft: "c:new"}}},
			"add-voter c@c:new"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, c := range plan(tc.servers, tc.members, "a", 3, 10*time.Second, now) {
				s := c.kind + " " + c.id
				if c.address != "" && c.address != c.id+":r" {
					s += "@" + c.address
				}
				got = append(got, s)
			}
			if g := strings.Join(got, ", "); g != tc.want {
				t.Fatalf("plan = %q, want %q", g, tc.want)
			}
		})
	}
}

// A server that no member record names (a voter that failed before the
// leader joined: memberlist tells a joiner of no dead member) is treated
// as failed since the leader first missed it: kept within the grace, as a
// voter restarting would be, removed after it, and forgotten once it is
// back.
func TestPlanServerUnknownToTheLeader(t *testing.T) {
	t0 := time.Unix(1000, 0)
	servers := []raft.Server{
		{Suffrage: raft.Voter, ID: "a", Address: "a:r"},
		{Suffrage: raft.Voter, ID: "b", Address: "b:r"},
		{Suffrage: raft.Voter, ID: "c", Address: "c:r"},
	}
	alive := func(name string) cluster.Member {
		return cluster.Member{Name: name, State: cluster.StateAlive, Since: t0.Add(-time.Hour), Meta: cluster.Meta{Raft: name + ":r"}}
	}
	since := map[string]time.Time{}
	step := func(now time.Time, members ...cluster.Member) string {
		var got []string
		for _, c := range plan(servers, withMissing(servers, members, since, now), "a", 3, 10*time.Second, now) {
			got = append(got, c.kind+" "+c.id)
		}
		return strings.Join(got, ", ")
	}
	if got := step(t0, alive("a"), alive("b")); got != "" {
		t.Fatalf("a server the leader has just found missing: plan = %q, want nothing", got)
	}
	if got := step(t0.Add(9*time.Second), alive("a"), alive("b")); got != "" {
		t.Fatalf("within the grace: plan = %q, want nothing", got)
	}
	if got := step(t0.Add(10*time.Second), alive("a"), alive("b")); got != "remove c" {
		t.Fatalf("past the grace: plan = %q, want %q", got, "remove c")
	}
	if got := step(t0.Add(11*time.Second), alive("a"), alive("b"), alive("c")); got != "" || len(since) != 0 {
		t.Fatalf("c back: plan = %q, missing %v; want nothing, nothing", got, since)
	}
	if got := step(t0.Add(12*time.Second), alive("a"), alive("b")); got != "" {
		t.Fatalf("c missing again: its grace starts again; plan = %q", got)
	}
}
