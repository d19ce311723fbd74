package bench

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/shoal-dev/shoal/internal/cpupin"
)

// pins is where CouplingOptions.PinLoadgen keeps the processes: the load
// generator on its CPUs, the nodes and the database server on the
// others. A nil *pins pins nothing.
type pins struct {
	lg, rest []int
}

func newPins(o CouplingOptions) (*pins, error) {
	if !o.PinLoadgen {
		return nil, nil
	}
	if o.InProcess || o.LoadgenInProcess {
		return nil, errors.New("coupling: a CPU of its own for the load generator needs the nodes and the load generator as processes (not --in-process or --loadgen-in-process)")
	}
	cpus, err := cpupin.Available()
	if err != nil {
		return nil, err
	}
	return splitCPUs(cpus)
}

// splitCPUs gives the load generator the first of cpus and the nodes the
// rest; it needs two.
func splitCPUs(cpus []int) (*pins, error) {
	if len(cpus) < 2 {
		return nil, fmt.Errorf("coupling: %d CPU(s) available; a CPU of its own for the load generator needs at least 2", len(cpus))
	}
	return &pins{lg: cpus[:1], rest: cpus[1:]}, nil
}

// String says where the processes run, for the manifest; "" unpinned.
func (p *pins) String() string {
	if p == nil {
		return ""
	}
	return fmt.Sprintf("load generator on CPU %s; nodes and database server on CPU %s", cpupin.String(p.lg), cpupin.String(p.rest))
}

// nodeCPUs is how many CPUs the nodes share.
func (p *pins) nodeCPUs() int {
	if p == nil {
		return runtime.NumCPU()
	}
	return len(p.rest)
}

// loadgen pins the load generator process.
func (p *pins) loadgen(pid int) error {
	if p == nil {
		return nil
	}
	return pin(pid, p.lg, "the load generator")
}

// node pins a node's (or the database server's) process.
func (p *pins) node(pid int) error {
	if p == nil {
		return nil
	}
	return pin(pid, p.rest, fmt.Sprintf("process %d", pid))
}

// pin keeps process pid (0: none), named what in its error, on cpus.
func pin(pid int, cpus []int, what string) error {
	if pid == 0 {
		return nil
	}
	if err := cpupin.Pin(pid, cpus); err != nil {
		return fmt.Errorf("pinning %s: %w", what, err)
	}
	return nil
}

// nodes pins every node process of an arm.
func (p *pins) nodes(ns []NodePlacement) error {
	for _, n := range ns {
		if err := p.node(n.PID); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}
