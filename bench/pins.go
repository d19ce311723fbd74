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
	lg, rest, err := cpupin.Split(cpus)
	if err != nil {
		return nil, err
	}
	return &pins{lg: lg, rest: rest}, nil
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
	if err := cpupin.Pin(pid, p.lg); err != nil {
		return fmt.Errorf("pinning the load generator: %w", err)
	}
	return nil
}

// node pins a node's (or the database server's) process.
func (p *pins) node(pid int) error {
	if p == nil || pid == 0 {
		return nil
	}
	if err := cpupin.Pin(pid, p.rest); err != nil {
		return fmt.Errorf("pinning process %d: %w", pid, err)
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
