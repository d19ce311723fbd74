package gitfront

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// SweepAllQuarantines removes old quarantines in every repository, keeps
// fresh ones and anything that is not a quarantine of a bare repository.
func TestSweepAllQuarantines(t *testing.T) {
	root := t.TempDir()
	mk := func(rel string, age time.Duration) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(-age)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gone := []string{mk("A/one.git/objects/tmp_objdir-incoming-1", 3*time.Hour), mk("B/two.git/objects/tmp_objdir-incoming-2", 2*time.Hour)}
	kept := []string{mk("A/one.git/objects/tmp_objdir-incoming-3", time.Minute), mk("A/one.git/objects/pack", 3*time.Hour),
		mk("A/notbare/objects/tmp_objdir-incoming-4", 3*time.Hour)}
	mk("C", 0) // a project without repositories
	if err := os.WriteFile(filepath.Join(root, "stray-file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := SweepAllQuarantines(context.Background(), root, time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("SweepAllQuarantines = %d, %v; want 2, nil", n, err)
	}
	for _, p := range gone {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there", p)
		}
	}
	for _, p := range kept {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
}
