package gitfront

import (
	"bytes"
	"context"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestCommandRecorderParsesPushCommands(t *testing.T) {
	a, b, z := strings.Repeat("a", 40), strings.Repeat("b", 40), strings.Repeat("0", 40)
	var body bytes.Buffer
	body.Write(pktLine("shallow " + a + "\n"))
	body.Write(pktLine(a + " " + b + " refs/heads/main\x00report-status side-band-64k agent=git/2.39\n"))
	body.Write(pktLine(z + " " + a + " refs/heads/feature/new\n"))
	body.Write(pktLine(b + " " + z + " refs/heads/gone"))
	body.Write(pktLine("not a command\n"))
	body.WriteString("0000PACK\x00\x00\x00\x02garbage that is not pkt-lines")
	rec := &commandRecorder{r: &body}
	if _, err := io.Copy(io.Discard, rec); err != nil {
		t.Fatal(err)
	}
	want := []RefUpdate{{a, b, "refs/heads/main"}, {z, a, "refs/heads/feature/new"}, {b, z, "refs/heads/gone"}}
	got := rec.updates()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("updates %+v, want %+v", got, want)
	}
	if got[0].Deleted() || got[1].Deleted() || !got[2].Deleted() {
		t.Errorf("Deleted: %v %v %v", got[0].Deleted(), got[1].Deleted(), got[2].Deleted())
	}
	if RefUpdates(context.Background()) != nil {
		t.Error("RefUpdates outside OnPush is not nil")
	}
}

// A command list longer than the bound yields the commands before it,
// and the body still passes through whole.
func TestCommandRecorderBounded(t *testing.T) {
	a, b := strings.Repeat("a", 40), strings.Repeat("b", 40)
	var body bytes.Buffer
	n := 0
	for body.Len() < maxCommandBytes+1000 {
		body.Write(pktLine(a + " " + b + " refs/heads/branch-" + strings.Repeat("x", 100) + "\n"))
		n++
	}
	total := body.Len()
	rec := &commandRecorder{r: &body}
	copied, _ := io.Copy(io.Discard, rec)
	if copied != int64(total) {
		t.Fatalf("passed %d of %d bytes", copied, total)
	}
	if got := len(rec.updates()); got == 0 || got >= n {
		t.Fatalf("%d of %d commands parsed from a cut-off list", got, n)
	}
}
