package bench

import (
	"context"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/cpupin"
)

// A CPU of its own for the load generator needs it and the nodes as
// processes: asked for with either in process, the run is refused before
// anything starts, and says why.
func TestPinLoadgenNeedsProcesses(t *testing.T) {
	exp, err := ParseExperiment([]byte(tinyExperiment))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []CouplingOptions{
		{Experiment: exp, InProcess: true, LoadgenInProcess: true, PinLoadgen: true},
		{Experiment: exp, LoadgenInProcess: true, Binary: "shoal", PinLoadgen: true},
	} {
		res, err := Coupling(context.Background(), o)
		if err == nil || res != nil || !strings.Contains(err.Error(), "as processes") {
			t.Errorf("in process %v, load generator in process %v: results %v, err %v", o.InProcess, o.LoadgenInProcess, res, err)
		}
	}
}

func TestPinsString(t *testing.T) {
	var none *pins
	if none.String() != "" || none.nodeCPUs() < 1 || none.loadgen(1) != nil || none.node(1) != nil {
		t.Error("a nil *pins pins something")
	}
	p := &pins{lg: []int{0}, rest: []int{1, 2, 3}}
	if got := p.String(); got != "load generator on CPU 0; nodes and database server on CPU 1-3" || p.nodeCPUs() != 3 {
		t.Errorf("String %q, nodeCPUs %d", got, p.nodeCPUs())
	}
}

func TestSplitCPUs(t *testing.T) {
	if _, err := splitCPUs([]int{0}); err == nil || !strings.Contains(err.Error(), "at least 2") {
		t.Fatalf("a split of one CPU: err %v, want one that says 2 are needed", err)
	}
	p, err := splitCPUs([]int{0, 1, 2})
	if err != nil || cpupin.String(p.lg) != "0" || cpupin.String(p.rest) != "1-2" {
		t.Fatalf("splitCPUs(0-2) = %+v, %v", p, err)
	}
}
