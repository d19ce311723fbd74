// Package bench holds shoal's experiments: they start real node processes
// on loopback, drive them, and report figures with their baselines.
package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/localcluster"
)

// DetectOptions configures the failure-detection experiment.
type DetectOptions struct {
	// Binary is the shoal executable.
	Binary string
	// N is the cluster size (at least 2).
	N int
	// Preset is the nodes' tuning: "loopback" or "lan".
	Preset string
	// Trials is how many clusters to start, kill a node of, and time.
	Trials int
	// Dir is a scratch directory.
	Dir string
	// Progress, if set, is told after each trial.
	Progress func(trial int, d time.Duration)
}

// DetectResult holds the time from SIGKILL of a node until every other
// node reports it failed, per trial.
type DetectResult struct {
	Preset  string          `json:"preset"`
	N       int             `json:"n"`
	Samples []time.Duration `json:"samples_ns"`
}

// Quantile returns the q-quantile (0..1) of the samples, nearest rank.
func (r *DetectResult) Quantile(q float64) time.Duration {
	if len(r.Samples) == 0 {
		return 0
	}
	s := slices.Clone(r.Samples)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[i]
}

// Detect runs the experiment: for each trial it starts a fresh N-node
// cluster, SIGKILLs the last node, and polls every other node's
// /v1/cluster every 2 ms until all of them report the node failed.
func Detect(ctx context.Context, o DetectOptions) (*DetectResult, error) {
	if o.N < 2 || o.Trials < 1 {
		return nil, fmt.Errorf("detect: need at least 2 nodes and 1 trial, got %d and %d", o.N, o.Trials)
	}
	res := &DetectResult{Preset: o.Preset, N: o.N}
	for t := 1; t <= o.Trials; t++ {
		d, err := detectOnce(ctx, o, filepath.Join(o.Dir, o.Preset+"-"+strconv.Itoa(t)))
		if err != nil {
			return res, fmt.Errorf("trial %d: %w", t, err)
		}
		res.Samples = append(res.Samples, d)
		if o.Progress != nil {
			o.Progress(t, d)
		}
	}
	return res, nil
}

func detectOnce(ctx context.Context, o DetectOptions, dir string) (time.Duration, error) {
	os.RemoveAll(dir)
	c, err := localcluster.Start(ctx, localcluster.Options{
		Binary: o.Binary, N: o.N, Dir: dir, Preset: o.Preset, LogLevel: "warn", WatchParent: true,
	})
	if err != nil {
		return 0, err
	}
	defer c.Stop(10 * time.Second)
	victim := c.Nodes()[o.N-1]
	start := time.Now()
	if err := c.Kill(o.N); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		slowest  time.Duration
		firstErr error
	)
	for _, p := range c.Nodes()[:o.N-1] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := waitFailed(ctx, p.HTTP, victim.Name, start)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", p.Name, err)
			}
			slowest = max(slowest, d)
		}()
	}
	wg.Wait()
	return slowest, firstErr
}

func waitFailed(ctx context.Context, httpAddr, victim string, start time.Time) (time.Duration, error) {
	for {
		v, err := localcluster.FetchView(ctx, httpAddr)
		if err == nil && localcluster.StateOf(v, victim) == "failed" {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%s never reported failed: %w (last error: %v)", victim, ctx.Err(), err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}
