package cluster

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// fakeDNS is a resolver whose answers the test changes, counting lookups.
type fakeDNS struct {
	mu      sync.Mutex
	records map[string][]string
	lookups map[string]int
}

func newFakeDNS() *fakeDNS {
	return &fakeDNS{records: map[string][]string{}, lookups: map[string]int{}}
}

func (d *fakeDNS) set(name string, ips ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.records[name] = ips
}

func (d *fakeDNS) count(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lookups[name]
}

func (d *fakeDNS) LookupHost(ctx context.Context, host string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lookups[host]++
	ips, ok := d.records[host]
	if !ok || len(ips) == 0 {
		return nil, errors.New("no such host")
	}
	return slices.Clone(ips), nil
}

// A seed that is a DNS name is resolved again at each attempt: the name
// first does not resolve, then names only the joining node (left out),
// then the cluster's node, and the join succeeds with that answer.
func TestJoinResolvesNamesAtEachAttempt(t *testing.T) {
	net := newNet(t, 1)
	dns := newFakeDNS()
	withDNS := func(c *Config) { c.LookupHost = dns.LookupHost }
	n1 := startMemNode(t, net, 1, withDNS)
	n2 := startMemNode(t, net, 2, withDNS)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := n2.Join(ctx, []string{"shoal-headless.test:7946"})
		done <- err
	}()
	testkit.Eventually(t, 30*time.Second, "the join to look the name up twice", func() bool { return dns.count("shoal-headless.test") >= 2 })
	dns.set("shoal-headless.test", "10.0.0.2") // only itself: not a seed
	seen := dns.count("shoal-headless.test")
	testkit.Eventually(t, 30*time.Second, "the join to look the name up again", func() bool { return dns.count("shoal-headless.test") >= seen+2 })
	select {
	case err := <-done:
		t.Fatalf("Join returned (%v) while the name named only the joining node", err)
	default:
	}
	dns.set("shoal-headless.test", "10.0.0.2", "10.0.0.1")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Join did not succeed once the name resolved to a member")
	}
	for _, nd := range []*Node{n1, n2} {
		testkit.Eventually(t, 30*time.Second, nd.Name()+" to see both", func() bool { return aliveNames(nd) == "n1,n2" })
	}
}

// Two groups that joined through the same name while it named only
// their own members merge once it names everyone, without another Join:
// the nodes resolve their seeds again while they run. So do nodes whose
// peers came back at new addresses (pods restarted with new IPs).
func TestSeedNamesResolvedAgainWhileRunning(t *testing.T) {
	net := newNet(t, 2)
	dns := newFakeDNS()
	withDNS := func(c *Config) { c.LookupHost = dns.LookupHost; patient(c) }
	var nodes []*Node
	for i := 1; i <= 4; i++ {
		nodes = append(nodes, startMemNode(t, net, i, withDNS))
	}
	joinName := func(nd *Node) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := nd.Join(ctx, []string{"seeds.test:7946"}); err != nil {
			t.Fatalf("%s: %v", nd.Name(), err)
		}
	}
	dns.set("seeds.test", "10.0.0.1")
	joinName(nodes[1])
	dns.set("seeds.test", "10.0.0.3")
	joinName(nodes[3])
	testkit.Eventually(t, 30*time.Second, "two groups", func() bool {
		return aliveNames(nodes[0]) == "n1,n2" && aliveNames(nodes[2]) == "n3,n4"
	})
	dns.set("seeds.test", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")
	for _, nd := range nodes {
		testkit.Eventually(t, 30*time.Second, nd.Name()+" to see all four", func() bool { return aliveNames(nd) == "n1,n2,n3,n4" })
	}
}
