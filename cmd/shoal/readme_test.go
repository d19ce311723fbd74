package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/cli"
)

var update = flag.Bool("update", false, "rewrite the generated parts of README.md")

// The README's table of 'shoal node' flags is generated from the flags'
// definitions, so it cannot disagree with them: go test ./cmd/shoal -run
// TestREADME -update rewrites it.
func TestREADMENodeFlags(t *testing.T) {
	const path = "../../README.md"
	const begin, end = "<!-- BEGIN shoal node flags: generated, see cmd/shoal/readme_test.go -->\n", "<!-- END shoal node flags -->"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i, j := strings.Index(readme, begin), strings.Index(readme, end)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the markers %q and %q", begin, end)
	}
	s := cli.New("node", "", "")
	bindNode(s)
	var table bytes.Buffer
	s.Markdown(&table)
	if got := readme[i+len(begin) : j]; got != table.String() {
		if !*update {
			t.Fatalf("README.md's table of node flags is out of date: go test ./cmd/shoal -run TestREADME -update\n%s", table.String())
		}
		if err := os.WriteFile(path, []byte(readme[:i+len(begin)]+table.String()+readme[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
