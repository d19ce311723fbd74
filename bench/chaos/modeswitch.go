package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"
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
// the switch starts, a stronger one once it is complete.
func (e *Env) switchMode(ctx context.Context, rng *rand.Rand, mode string) error {
	up := e.upNodes()
	if len(up) == 0 {
		return errors.New("no node running")
	}
	strict := e.modeStrict(mode)
	if !strict {
		e.SetStrict(false)
	}
	body, _ := json.Marshal(map[string]string{"mode": mode})
	i := up[rng.IntN(len(up))]
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	code, b, err := e.Admin(ctx, i, http.MethodPut, "/v1/cache/mode", body)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("switching to %s through node%d: %d %v %s", mode, i, code, err, b)
	}
	if strict {
		e.SetStrict(true)
	}
	return nil
}

func injectModeSwitch(ctx context.Context, e *Env, rng *rand.Rand, f Fault) (*Injected, error) {
	home := e.setting.CacheMode
	start := 0
	for i, m := range modeCycle {
		if m == home {
			start = i
		}
	}
	first, second := modeCycle[(start+1)%3], modeCycle[(start+2)%3]
	if err := e.switchMode(ctx, rng, first); err != nil {
		return nil, err
	}
	done, healing := make(chan error, 1), make(chan struct{})
	go func() {
		t := time.NewTimer(f.Hold / 2)
		defer t.Stop()
		select {
		case <-t.C:
			done <- e.switchMode(context.WithoutCancel(ctx), rng, second)
		case <-healing:
			done <- nil
		}
	}()
	return &Injected{Target: fmt.Sprintf("%s→%s→%s→%s", home, first, second, home), Heal: func(ctx context.Context) error {
		close(healing)
		err := <-done
		return errors.Join(err, e.switchMode(ctx, rng, home))
	}}, nil
}
