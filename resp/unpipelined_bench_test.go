package resp_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/server"
)

// BenchmarkUnpipelined is what `redis-benchmark -c 50 -t set|get` does
// against a 3-node in-process shoal cluster (anonymous access, backups
// 1): 50 connections, each sending one command and waiting for its reply.
// "cluster": as with --cluster, each node's connections (in cluster mode)
// use one key that node owns; "plain": every connection is on node 1 and
// uses one key (forwarded when node 1 does not own it), as redis-benchmark
// without --cluster. It reports ops/s, the p99 latency and cpu-us/op: the
// CPU time of the whole process (nodes and clients) per command, which a
// shared machine's load changes far less than it changes the rate.
func BenchmarkUnpipelined(b *testing.B) {
	sc := startShoal(b, 3, func(i int, c *server.Config) { c.RESP.Anonymous = true })
	const conns = 50
	for _, mode := range []string{"cluster", "plain"} {
		// The connections and their keys.
		var cs []*benchConn
		for i := range conns {
			node := 0
			if mode == "cluster" {
				node = i % len(sc.addrs)
			}
			c, err := dialBench(sc.addrs[node], mode == "cluster")
			if err != nil {
				b.Fatal(err)
			}
			defer c.nc.Close()
			if mode == "cluster" {
				c.key, err = c.ownKey(node)
			} else {
				c.key = "key:__rand_int__"
			}
			if err != nil {
				b.Fatal(err)
			}
			cs = append(cs, c)
		}
		for _, op := range []string{"set", "get"} {
			b.Run(mode+"/"+op, func(b *testing.B) {
				lat := make([][]time.Duration, conns)
				var wg sync.WaitGroup
				cpu0 := processCPU()
				start := time.Now()
				for w, c := range cs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var cmd string
						if op == "set" {
							cmd = fmt.Sprintf("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$3\r\nxxx\r\n", len(c.key), c.key)
						} else {
							cmd = fmt.Sprintf("*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(c.key), c.key)
						}
						for i := w; i < b.N; i += conns {
							t0 := time.Now()
							reply, err := c.do(cmd)
							if err != nil || reply[0] == '-' {
								b.Errorf("%s: %q %v", op, reply, err)
								return
							}
							lat[w] = append(lat[w], time.Since(t0))
						}
					}()
				}
				wg.Wait()
				el := time.Since(start)
				cpu := processCPU() - cpu0
				if n := reportOps(b, lat, el); n > 0 {
					b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-us/op")
				}
			})
		}
	}
}

type benchConn struct {
	nc  net.Conn
	r   *bufio.Reader
	key string
}

func dialBench(addr string, clusterMode bool) (*benchConn, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &benchConn{nc: nc, r: bufio.NewReader(nc)}
	if clusterMode {
		// A CLUSTER command puts the connection in cluster mode: it is
		// answered MOVED, not forwarded.
		if _, err := c.do("*2\r\n$7\r\nCLUSTER\r\n$4\r\nMYID\r\n"); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return c, nil
}

// do sends one command and reads a one-line or bulk reply.
func (c *benchConn) do(cmd string) (string, error) {
	if _, err := c.nc.Write([]byte(cmd)); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if line[0] == '$' && !strings.HasPrefix(line, "$-1") {
		var n int
		fmt.Sscanf(line, "$%d", &n)
		if _, err := io.ReadFull(c.r, make([]byte, n+2)); err != nil {
			return "", err
		}
	}
	return line, nil
}

// ownKey finds a key the connection's node owns (no MOVED).
func (c *benchConn) ownKey(node int) (string, error) {
	for i := range 10000 {
		k := fmt.Sprintf("key:{n%d-%d}", node, i)
		reply, err := c.do(fmt.Sprintf("*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(k), k))
		if err != nil {
			return "", err
		}
		if !strings.HasPrefix(reply, "-MOVED") {
			return k, nil
		}
	}
	return "", fmt.Errorf("no key owned by node %d", node+1)
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
