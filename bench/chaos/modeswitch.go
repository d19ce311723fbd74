package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/modeswitch"
)

// FaultModeSwitch switches the running cluster's cache mode through the
// other two modes and, at the heal, back to the setting's (LOCAL →
// DISTRIBUTED → NEAR → LOCAL from a LOCAL setting), with PUT
// /v1/cache/mode through a running node: the workload must see no failed
// request and no stale read through the switches.
const FaultModeSwitch FaultKind = "mode-switch"

func init() { RegisterFault(FaultModeSwitch, injectModeSwitch) }

var modeCycle = []string{"local", "distributed", "near"}

// modeStrict is whether the cluster promises never-stale reads in mode.
func (e *Env) modeStrict(mode string) bool {
	return mode != "local" || e.setting.Invalidation == "sync"
}

// switchMode switches the cluster to mode through a running node and
// records what the new mode promises: a weaker promise from the moment
// the switch starts, a stronger one once it is complete. An answer that
// leaves the outcome open (the PUT timed out, a 409 while an earlier
// switch is still under way) is followed until the switch is seen
// complete (modeswitch.Switch), within SwitchTimeout.
// Each switch is described to note ("→distributed through node2 in
// 1.234s, 1 open answer followed").
func (e *Env) switchMode(ctx context.Context, rng *rand.Rand, mode string, note func(string)) error {
	up := e.upNodes()
	if len(up) == 0 {
		return errors.New("no node running")
	}
	strict := e.modeStrict(mode)
	if !strict {
		e.SetStrict(false)
	}
	i := up[rng.IntN(len(up))]
	ctx, cancel := context.WithTimeout(ctx, SwitchTimeout)
	defer cancel()
	do := func(ctx context.Context, method string, body []byte) (int, []byte, error) {
		return e.Admin(ctx, i, method, modeswitch.Path, body)
	}
	start := time.Now()
	res, err := modeswitch.Switch(ctx, do, mode, modeswitch.Options{})
	d := fmt.Sprintf("→%s through node%d in %v", mode, i, time.Since(start).Round(time.Millisecond))
	if n := len(res.Open); n > 0 {
		d += fmt.Sprintf(" (%d open answers followed: %s)", n, strings.Join(res.Open, "; "))
	}
	if err != nil {
		d += " failed"
	}
	note(d)
	if err != nil {
		return fmt.Errorf("switching to %s through node%d: %w (answers followed: %s)", mode, i, err, strings.Join(res.Open, "; "))
	}
	if strict {
		e.SetStrict(true)
	}
	return nil
}

// SwitchTimeout bounds one switch of the mode-switch fault.
const SwitchTimeout = 2 * time.Minute

func injectModeSwitch(ctx context.Context, e *Env, rng *rand.Rand, f Fault) (*Injected, error) {
	home := e.setting.CacheMode
	start := 0
	for i, m := range modeCycle {
		if m == home {
			start = i
		}
	}
	var mu sync.Mutex
	var notes []string
	note := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		notes = append(notes, s)
	}
	first, second := modeCycle[(start+1)%3], modeCycle[(start+2)%3]
	if err := e.switchMode(ctx, rng, first, note); err != nil {
		return nil, err
	}
	done, healing := make(chan error, 1), make(chan struct{})
	go func() {
		t := time.NewTimer(f.Hold / 2)
		defer t.Stop()
		select {
		case <-t.C:
			done <- e.switchMode(context.WithoutCancel(ctx), rng, second, note)
		case <-healing:
			done <- nil
		}
	}()
	return &Injected{Target: fmt.Sprintf("%s→%s→%s→%s", home, first, second, home),
		Heal: func(ctx context.Context) error {
			close(healing)
			err := <-done
			return errors.Join(err, e.switchMode(ctx, rng, home, note))
		},
		Detail: func() string {
			mu.Lock()
			defer mu.Unlock()
			return "switches " + strings.Join(notes, ", ")
		}}, nil
}
