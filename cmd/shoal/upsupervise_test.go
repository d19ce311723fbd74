package main

import (
	"testing"
	"time"
)

func TestRestartBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{2: time.Second, 3: 2 * time.Second, 4: 4 * time.Second, 7: 30 * time.Second, 50: 30 * time.Second} {
		if got := backoff(n); got != want {
			t.Errorf("backoff(%d) = %v, want %v", n, got, want)
		}
	}
	for name, want := range map[string]int{"node1": 1, "node12": 12, "nope": 0, "node": 0} {
		if got := index(name); got != want {
			t.Errorf("index(%q) = %d, want %d", name, got, want)
		}
	}
}
