package bench

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// checkProgressLines checks progress written to a file: plain lines, no
// carriage returns, a percentage that never goes back, ending finished.
func checkProgressLines(t *testing.T, out string) {
	t.Helper()
	if strings.Contains(out, "\r") {
		t.Fatalf("carriage returns in progress written to a file:\n%q", out)
	}
	line := regexp.MustCompile(`^\[ *(\d+)%\] .+$`)
	last := -1
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for _, l := range lines {
		m := line.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("progress line %q", l)
		}
		p, _ := strconv.Atoi(m[1])
		if p < last || p > 100 {
			t.Fatalf("progress went from %d%% to %d%%:\n%s", last, p, out)
		}
		last = p
	}
	if lines[len(lines)-1] != "[100%] finished" {
		t.Fatalf("progress ends %q, want [100%%] finished:\n%s", lines[len(lines)-1], out)
	}
}

// The total counts every attempt the quiet guard may make, so a stage run
// again does not move the percentage back, and one that needs no retry
// skips its spare attempts.
func TestProgressNeverGoesBack(t *testing.T) {
	exp, err := ParseExperiment([]byte(tinyExperiment))
	if err != nil {
		t.Fatal(err)
	}
	exp.Modes = exp.Modes[:2] // 4 arms × 1 stage, retries 1, 2 s a stage
	var out bytes.Buffer
	b := newProgress(CouplingOptions{Experiment: exp, Repeat: 1, Progress: &out})
	if b.tty {
		t.Fatal("a buffer is not a terminal")
	}
	if b.total != 4*2*b.per {
		t.Fatalf("total %v, want 8 attempts of %v", b.total, b.per)
	}
	for arm, retried := range []bool{true, false, false, true} {
		b.describe("arm " + strconv.Itoa(arm))
		b.runStage(b.per)()
		if retried {
			b.describe("again")
			b.runStage(b.per)()
			b.skipAttempts(0)
		} else {
			b.skipAttempts(1)
		}
	}
	b.finish()
	checkProgressLines(t, out.String())
	if !strings.Contains(out.String(), "[ 25%] arm 1\n") || !strings.Contains(out.String(), "[ 75%] arm 3\n") {
		t.Fatalf("percentages:\n%s", out.String())
	}

	// A run stopped early says so.
	out.Reset()
	b = newProgress(CouplingOptions{Experiment: exp, Repeat: 1, Progress: &out})
	b.runStage(b.per)()
	b.finish()
	if got := out.String(); got != "[ 12%] stopped\n" {
		t.Fatalf("stopped run: %q", got)
	}
	var nilBar *progress // no Progress writer: nothing shown, nothing fails
	nilBar.describe("x")
	nilBar.runStage(b.per)()
	nilBar.skipAttempts(1)
	nilBar.above(func() {})
	nilBar.finish()
}
