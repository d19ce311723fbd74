package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/internal/cli"
	"github.com/shoal-dev/shoal/internal/localcluster"
)

// 'shoal up' keeps its nodes running: a node that exits on its own is
// started again with backoff, and 'shoal up restart NAME' restarts one on
// demand through a Unix socket in the cluster directory (only the user
// who runs 'shoal up' may use it).

// controlSocket is the name of the control socket in the cluster directory.
const controlSocket = "up.sock"

// Restart backoff: the first restart after 1 s, then twice as long each
// time up to 30 s; a node that ran for stableAfter starts again from 1 s.
const (
	firstBackoff = time.Second
	maxBackoff   = 30 * time.Second
	stableAfter  = time.Minute
)

// backoff is the wait before restart attempt n (n ≥ 2: the first start
// was attempt 1).
func backoff(n int) time.Duration {
	d := firstBackoff
	for i := 2; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

func init() {
	register(&command{name: "up restart", args: "NAME", min: 1, max: 1, bind: bindUpRestart,
		summary: "Restart one node of the cluster a running 'shoal up' watches, and wait until it is ready."})
}

func bindUpRestart(s *cli.Set) runFunc {
	dir, timeout := "shoal-data", 2*time.Minute
	s.String(&dir, "data-dir", "the cluster directory of the running 'shoal up'")
	s.Duration(&timeout, "timeout", "give up waiting after this long")
	return func(ctx context.Context, sio stdio, args []string) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return upRestart(ctx, filepath.Join(dir, controlSocket), args[0], sio.out)
	}
}

// upRestart asks the 'shoal up' listening on sock to restart node name
// and copies its progress to out. The last line is "ok ..." or
// "error: ...".
func upRestart(ctx context.Context, sock, name string, out io.Writer) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return fmt.Errorf("no 'shoal up' answers on %s (is it running on this --data-dir?): %w", sock, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := fmt.Fprintf(conn, "restart %s\n", name); err != nil {
		return err
	}
	sc := bufio.NewScanner(conn)
	last := ""
	for sc.Scan() {
		last = sc.Text()
		if msg, ok := strings.CutPrefix(last, "error: "); ok {
			return errors.New(msg)
		}
		fmt.Fprintln(out, last)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("waiting for 'shoal up': %w", err)
	}
	if !strings.HasPrefix(last, "ok") {
		return errors.New("'shoal up' ended the conversation without an answer")
	}
	return nil
}

// restartReq is an on-demand restart of node i; the outcome goes to done.
type restartReq struct {
	i    int
	done chan error
}

// restarted is what a restart goroutine reports to the supervisor.
type restarted struct {
	i   int
	p   *localcluster.Proc
	err error
	req *restartReq
}

// supervisor watches the nodes of one 'shoal up'. Its state is owned by
// run's goroutine; restarts run in goroutines that only start a process
// and wait for it to be ready, and report back.
type supervisor struct {
	c     *localcluster.Cluster
	n     int
	grace time.Duration
	out   io.Writer
	outMu *sync.Mutex
	// onStart is called after a node started again with the processes
	// that are ready (it rewrites cluster.json).
	onStart func([]*localcluster.Proc)
	procs   []*localcluster.Proc // the last ready process of each node

	attempts map[int]int       // starts of node i in a row without a stable run
	started  map[int]time.Time // when node i last became ready
	busy     map[int]bool      // a restart of node i is under way
	handled  map[*localcluster.Proc]bool
	results  chan restarted
	wg       sync.WaitGroup
}

func newSupervisor(c *localcluster.Cluster, n int, out io.Writer, onStart func([]*localcluster.Proc)) *supervisor {
	sv := &supervisor{c: c, n: n, grace: 15 * time.Second, out: out, outMu: &sync.Mutex{}, onStart: onStart, procs: c.Nodes(),
		attempts: map[int]int{}, started: map[int]time.Time{}, busy: map[int]bool{},
		handled: map[*localcluster.Proc]bool{}, results: make(chan restarted, n)}
	now := time.Now()
	for i := 1; i <= n; i++ {
		sv.attempts[i], sv.started[i] = 1, now
	}
	return sv
}

func (sv *supervisor) say(format string, args ...any) {
	sv.outMu.Lock()
	defer sv.outMu.Unlock()
	fmt.Fprintf(sv.out, format+"\n", args...)
}

// run supervises until ctx ends, then waits for the restarts under way
// (they end with ctx) so that the caller may stop every node.
func (sv *supervisor) run(ctx context.Context, reqs <-chan *restartReq) {
	defer sv.wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-sv.c.Exited():
			sv.exited(ctx, p)
		case r := <-sv.results:
			sv.finished(ctx, r)
		case r := <-reqs:
			sv.onDemand(ctx, r)
		}
	}
}

// exited handles a node that exited: the current process of a node not
// being restarted, which nobody asked to stop.
func (sv *supervisor) exited(ctx context.Context, p *localcluster.Proc) {
	i := index(p.Name)
	if i < 1 || i > sv.n || sv.handled[p] || sv.busy[i] || sv.c.Nodes()[i-1] != p {
		return
	}
	sv.handled[p] = true
	if time.Since(sv.started[i]) >= stableAfter {
		sv.attempts[i] = 1
	}
	sv.attempts[i]++
	d := backoff(sv.attempts[i])
	sv.say("shoal up: %s exited (%v); restarting in %v (attempt %d); log: %s", p.Name, p.ExitErr(), d, sv.attempts[i], p.Log)
	sv.restart(ctx, i, d, false, nil)
}

// onDemand restarts node i for 'shoal up restart'.
func (sv *supervisor) onDemand(ctx context.Context, r *restartReq) {
	if sv.busy[r.i] {
		r.done <- fmt.Errorf("node%d is being restarted already", r.i)
		return
	}
	sv.say("shoal up: restarting node%d on request", r.i)
	sv.handled[sv.c.Nodes()[r.i-1]] = true
	sv.attempts[r.i] = 1
	sv.restart(ctx, r.i, 0, true, r)
}

// restart starts node i again after wait, stopping it first if stop, in
// a goroutine that reports to results.
func (sv *supervisor) restart(ctx context.Context, i int, wait time.Duration, stop bool, req *restartReq) {
	sv.busy[i] = true
	join := sv.joinAddr(i)
	sv.wg.Add(1)
	go func() {
		defer sv.wg.Done()
		r := restarted{i: i, req: req}
		if stop {
			sv.c.StopNode(i, sv.grace)
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			r.err = ctx.Err()
		case <-t.C:
			r.p, r.err = sv.c.RestartJoin(ctx, i, join)
		}
		sv.results <- r // buffered for every node: never blocks
	}()
}

// joinAddr is the gossip address of a running node other than i that is
// not being restarted ("" if there is none).
func (sv *supervisor) joinAddr(i int) string {
	for j, p := range sv.procs {
		if j+1 != i && !sv.busy[j+1] && !isDoneCh(p.Done()) {
			return p.Gossip
		}
	}
	return ""
}

// finished handles the outcome of a restart: a node that is ready, or
// one more attempt after a backoff.
func (sv *supervisor) finished(ctx context.Context, r restarted) {
	sv.busy[r.i] = false
	name := fmt.Sprintf("node%d", r.i)
	if r.err == nil && !isDoneCh(r.p.Done()) {
		sv.started[r.i] = time.Now()
		sv.procs[r.i-1] = r.p
		sv.say("shoal up: %s is running again (pid %d)", name, r.p.PID)
		sv.onStart(slices.Clone(sv.procs))
		if r.req != nil {
			r.req.done <- nil
		}
		return
	}
	if ctx.Err() != nil {
		if r.req != nil {
			r.req.done <- ctx.Err()
		}
		return
	}
	if r.p != nil {
		sv.handled[r.p] = true
	}
	if r.req != nil {
		r.req.done <- fmt.Errorf("%s did not start: %v (shoal up keeps trying)", name, errLine(r.err))
	}
	sv.attempts[r.i]++
	d := backoff(sv.attempts[r.i])
	sv.say("shoal up: %s did not start: %v; restarting in %v (attempt %d)", name, errLine(r.err), d, sv.attempts[r.i])
	sv.restart(ctx, r.i, d, false, nil)
}

// index is node i's number from its name "nodeI" (0 if it is not one).
func index(name string) int {
	var i int
	if _, err := fmt.Sscanf(name, "node%d", &i); err != nil {
		return 0
	}
	return i
}

// errLine is an error's first line (a start-up failure carries the
// node's log excerpt after it).
func errLine(err error) string { return strings.TrimSuffix(firstLine(err.Error()), ":") }

func isDoneCh(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// serveControl accepts 'shoal up restart' connections on the control
// socket until ctx ends, and passes their requests to reqs. It returns
// once the listener and every connection are closed.
func serveControl(ctx context.Context, ln net.Listener, n int, reqs chan<- *restartReq) {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			handleControl(ctx, conn, n, reqs)
		}()
	}
}

func handleControl(ctx context.Context, conn net.Conn, n int, reqs chan<- *restartReq) {
	closeOnEnd := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer closeOnEnd()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(conn, 256)).ReadString('\n')
	if err != nil {
		return
	}
	conn.SetReadDeadline(time.Time{})
	verb, name, _ := strings.Cut(strings.TrimSpace(line), " ")
	i := index(name)
	if verb != "restart" || i < 1 || i > n || name != fmt.Sprintf("node%d", i) {
		fmt.Fprintf(conn, "error: unknown request %q: want 'restart NAME' with NAME node1 to node%d\n", strings.TrimSpace(line), n)
		return
	}
	r := &restartReq{i: i, done: make(chan error, 1)}
	select {
	case reqs <- r:
	case <-ctx.Done():
		fmt.Fprintln(conn, "error: shoal up is stopping")
		return
	}
	fmt.Fprintf(conn, "restarting %s ...\n", name)
	select {
	case err := <-r.done:
		if err != nil {
			fmt.Fprintf(conn, "error: %v\n", err)
			return
		}
		fmt.Fprintf(conn, "ok: %s is running again\n", name)
	case <-ctx.Done():
		fmt.Fprintln(conn, "error: shoal up is stopping")
	}
}

// listenControl listens on the control socket in dir, replacing a stale
// one (the caller holds the directory's lock, so no other 'shoal up'
// owns it).
func listenControl(dir string) (net.Listener, error) {
	path := filepath.Join(dir, controlSocket)
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket for 'shoal up restart': %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
