package bench

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/localcluster"
)

// Failover measures, per trial, the time from SIGKILL of the raft leader
// to the first write that starts after the kill and is acknowledged; the
// writes go through a follower that survives, back to back.
func Failover(ctx context.Context, o Options) (*Result, error) {
	if o.N < 3 {
		return nil, fmt.Errorf("failover: need at least 3 nodes, got %d", o.N)
	}
	return trials(ctx, "failover", o, localcluster.Options{BootstrapExpect: o.N}, failoverOnce)
}

func failoverOnce(ctx context.Context, o Options, c *localcluster.Cluster) (time.Duration, error) {
	leader, err := waitLeader(ctx, c)
	if err != nil {
		return 0, err
	}
	via := c.Nodes()[leader%o.N] // a follower
	client := &http.Client{Timeout: 2 * time.Second}
	put := func(i int) bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut,
			fmt.Sprintf("http://%s/v1/kv/failover/%d", via.HTTP, i), strings.NewReader("x"))
		req.Header.Set("Authorization", "Bearer "+c.Token())
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	for i := 0; i < 20; i++ {
		if !put(i) {
			return 0, fmt.Errorf("write %d failed before the kill", i)
		}
	}
	killed := time.Now()
	if err := c.Kill(leader); err != nil {
		return 0, err
	}
	for i := 20; ; i++ {
		if put(i) {
			return time.Since(killed), nil
		}
		if time.Since(killed) > time.Minute {
			return 0, fmt.Errorf("no write succeeded within a minute of the kill")
		}
	}
}

// waitLeader returns the 1-based index of the node that leads raft.
func waitLeader(ctx context.Context, c *localcluster.Cluster) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		for i, p := range c.Nodes() {
			v, err := localcluster.FetchView(ctx, p.HTTP, c.Token())
			if err == nil && v.Raft.Role == "leader" && v.Raft.Leader == p.Name {
				return i + 1, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no raft leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
