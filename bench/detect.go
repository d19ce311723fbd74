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

// Options configures an experiment that times something once per trial,
// on a fresh cluster each time.
type Options struct {
	// Binary is the shoal executable.
	Binary string
	// N is the cluster size.
	N int
	// Preset is the nodes' tuning: "loopback" or "lan".
	Preset string
	// Trials is how many clusters to start and time.
	Trials int
	// Dir is a scratch directory.
	Dir string
	// Progress, if set, is told after each trial.
	Progress func(trial int, d time.Duration)
	// GossipKey, if set, is the nodes' gossip key (base64): gossip is
	// encrypted.
	GossipKey string
	// FirstTrial numbers the first trial (default 1), for experiments
	// that alternate settings one trial at a time.
	FirstTrial int
}

// Result holds one duration per trial.
type Result struct {
	Preset string `json:"preset"`
	// Encrypted: the nodes' gossip was encrypted (Options.GossipKey).
	Encrypted bool            `json:"encrypted,omitempty"`
	N         int             `json:"n"`
	Samples   []time.Duration `json:"samples_ns"`
}

// Quantile returns the q-quantile (0..1) of the samples, nearest rank.
func (r *Result) Quantile(q float64) time.Duration {
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
func Detect(ctx context.Context, o Options) (*Result, error) {
	if o.N < 2 {
		return nil, fmt.Errorf("detect: need at least 2 nodes, got %d", o.N)
	}
	return trials(ctx, "detect", o, localcluster.Options{}, detectOnce)
}

// trials runs once per trial on a fresh cluster started with base's
// settings plus o's, and collects the durations it returns.
func trials(ctx context.Context, name string, o Options, base localcluster.Options,
	once func(context.Context, Options, *localcluster.Cluster) (time.Duration, error)) (*Result, error) {
	if o.Trials < 1 {
		return nil, fmt.Errorf("%s: need at least 1 trial", name)
	}
	res := &Result{Preset: o.Preset, N: o.N, Encrypted: o.GossipKey != ""}
	first := max(o.FirstTrial, 1)
	for t := first; t < first+o.Trials; t++ {
		lo := base
		lo.Binary, lo.N, lo.Preset, lo.LogLevel, lo.WatchParent = o.Binary, o.N, o.Preset, "warn", true
		lo.GossipKey = o.GossipKey
		variant := o.Preset
		if o.GossipKey != "" {
			variant += "-key"
		}
		lo.Dir = filepath.Join(o.Dir, name+"-"+variant+"-"+strconv.Itoa(t))
		os.RemoveAll(lo.Dir)
		c, err := localcluster.Start(ctx, lo)
		if err != nil {
			return res, fmt.Errorf("trial %d: %w", t, err)
		}
		d, err := once(ctx, o, c)
		c.Stop(10 * time.Second)
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

func detectOnce(ctx context.Context, o Options, c *localcluster.Cluster) (time.Duration, error) {
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
			d, err := waitFailed(ctx, p.HTTP, c.Token(), victim.Name, start)
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

func waitFailed(ctx context.Context, httpAddr, token, victim string, start time.Time) (time.Duration, error) {
	for {
		v, err := localcluster.FetchView(ctx, httpAddr, token)
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
