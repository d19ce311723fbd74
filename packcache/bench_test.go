package packcache

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The benchmarks run on a generated repository of realistic size: 3,000
// files of text in 60 directories, 200 commits each changing 40 files,
// written by git fast-import from a fixed seed and repacked with bitmaps,
// as a serving repository would be. It is kept in the temporary directory
// between runs (benchRepoDir).
const (
	benchFiles   = 3000
	benchCommits = 200
	benchChanged = 40
)

func benchRepoDir() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("shoal-packcache-bench-%d-%d-%d", benchFiles, benchCommits, benchChanged), "repo.git")
}

// benchRepo returns the generated repository, generating it if needed.
func benchRepo(b *testing.B) string {
	b.Helper()
	dir := benchRepoDir()
	if _, err := os.Stat(filepath.Join(dir, "shoal-bench-ok")); err == nil {
		return dir
	}
	os.RemoveAll(dir)
	run(b, "", "init", "-q", "--bare", "-b", "main", dir)
	cmd := exec.Command("git", "-C", dir, "fast-import", "--quiet")
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(in, 1<<20)
	writeHistory(w)
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	in.Close()
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
	run(b, dir, "repack", "-a", "-d", "-b", "-q")
	if err := os.WriteFile(filepath.Join(dir, "shoal-bench-ok"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// writeHistory writes the fast-import stream: every file in the first
// commit, then benchChanged files rewritten in part by each commit.
func writeHistory(w io.Writer) {
	rng := rand.New(rand.NewPCG(42, 42))
	files := make([][]string, benchFiles)
	for i := range files {
		files[i] = make([]string, 120)
		for j := range files[i] {
			files[i][j] = randomLine(rng)
		}
	}
	for c := range benchCommits {
		fmt.Fprintf(w, "commit refs/heads/main\ncommitter T <t@example.com> %d +0000\ndata <<EOM\ncommit %d\nEOM\n", 1700000000+c*3600, c)
		changed := make([]int, 0, benchChanged)
		if c == 0 {
			for i := range files {
				changed = append(changed, i)
			}
		} else {
			for range benchChanged {
				changed = append(changed, rng.IntN(benchFiles))
			}
		}
		for _, i := range changed {
			if c > 0 {
				for range 10 {
					files[i][rng.IntN(len(files[i]))] = randomLine(rng)
				}
			}
			data := strings.Join(files[i], "")
			fmt.Fprintf(w, "M 644 inline dir%02d/file%04d.txt\ndata %d\n%s\n", i%60, i, len(data), data)
		}
		if c == benchCommits/2 {
			fmt.Fprintf(w, "reset refs/tags/v1\nfrom refs/heads/main\n\n")
		}
	}
}

// randomLine is a line of source-like text: words and a hex identifier.
func randomLine(rng *rand.Rand) string {
	words := []string{"func", "return", "if", "err", "nil", "value", "config", "cache", "entry", "index", "for", "range", "the", "node", "state"}
	var b strings.Builder
	for range 3 + rng.IntN(6) {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(' ')
	}
	fmt.Fprintf(&b, "%016x%016x\n", rng.Uint64(), rng.Uint64())
	return b.String()
}

// cloneRequest captures the request a real "git clone --bare -q" sends
// for the repository, in the given protocol version.
func cloneRequest(b *testing.B, dir string, version string) post {
	s := newServer(b, nil, map[string]string{"r": dir}, true)
	clone(b, s.url("r"), "-c", "protocol.version="+version, "--no-checkout")
	return s.lastPost(b)
}

// drain is a child process reading a loopback TCP connection into
// /dev/null, like a client downloading: the server side writes to the
// returned connection. The child is waited for only at the end, so its
// CPU time is not counted in RUSAGE_CHILDREN during the benchmark.
func drain(b *testing.B) *net.TCPConn {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	cmd := exec.Command("bash", "-c", fmt.Sprintf("exec cat < /dev/tcp/127.0.0.1/%d > /dev/null", port))
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	conn, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(); cmd.Wait() })
	return conn.(*net.TCPConn)
}

// cpu returns the CPU time of this process and its waited-for children.
func cpu() time.Duration {
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}

// BenchmarkCloneHitVsGit serves the same clone request, alternately, by
// git upload-pack (through the cache's bypass path) and from a published
// cache entry, to a loopback TCP client in another process. It reports
// server CPU (this process plus git) and wall time per clone for each,
// and their ratios; and, as the floor under a hit, the CPU of a bare
// io.Copy (sendfile) of the entry's file to the same connection.
func BenchmarkCloneHitVsGit(b *testing.B) {
	for _, version := range []string{"0", "2"} {
		b.Run("v"+version, func(b *testing.B) { benchHitVsGit(b, version) })
	}
}

func benchHitVsGit(b *testing.B, version string) {
	dir := benchRepo(b)
	req := cloneRequest(b, dir, version)
	c := newCache(b, Config{})
	conn := drain(b)
	ctx := context.Background()
	if _, res, err := serve(b, c, "r", dir, req.protocol, req.body); res != Miss || err != nil {
		b.Fatalf("priming: %v %v", res, err)
	}
	path := entryPath(c)
	var gitCPU, gitWall, hitCPU, hitWall, floorCPU time.Duration
	var size int64
	b.ResetTimer()
	for range b.N {
		cpu0, t0 := cpu(), time.Now()
		resp, err := c.bypass(dir, ParseProtocol(req.protocol), bytes.NewReader(req.body), ErrBypass)
		if err != nil {
			b.Fatal(err)
		}
		if size, err = resp.Stream(ctx, conn); err != nil {
			b.Fatal(err)
		}
		resp.Close()
		cpu1, t1 := cpu(), time.Now()
		if _, err := c.ServeUploadPack(ctx, conn, "r", dir, req.protocol, bytes.NewReader(req.body)); err != nil {
			b.Fatal(err)
		}
		cpu2, t2 := cpu(), time.Now()
		sendFile(b, conn, path)
		cpu3 := cpu()
		gitCPU, gitWall = gitCPU+cpu1-cpu0, gitWall+t1.Sub(t0)
		hitCPU, hitWall = hitCPU+cpu2-cpu1, hitWall+t2.Sub(t1)
		floorCPU += cpu3 - cpu2
	}
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / n }
	b.ReportMetric(float64(size)/(1<<20), "MiB/clone")
	b.ReportMetric(ms(gitCPU), "git-cpu-ms/clone")
	b.ReportMetric(ms(hitCPU), "hit-cpu-ms/clone")
	b.ReportMetric(ms(floorCPU), "sendfile-cpu-ms/clone")
	b.ReportMetric(float64(hitCPU)/float64(gitCPU), "cpu-ratio")
	b.ReportMetric(ms(gitWall), "git-wall-ms/clone")
	b.ReportMetric(ms(hitWall), "hit-wall-ms/clone")
	b.ReportMetric(float64(hitWall)/float64(gitWall), "wall-ratio")
	if st := c.Stats(); st.Hits != uint64(b.N) {
		b.Fatalf("stats %+v", st)
	}
}

// throttled writes at most rate bytes per second: a slow client.
type throttled struct {
	w     io.Writer
	rate  float64
	start time.Time
	n     int64
}

func (t *throttled) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := min(len(p), 32<<10)
		n, err := t.w.Write(p[:k])
		t.n += int64(n)
		if err != nil {
			return 0, err
		}
		p = p[k:]
		if ahead := time.Duration(float64(t.n)/t.rate*1e9) - time.Since(t.start); ahead > 0 {
			time.Sleep(ahead) // the client's pace, not a wait for an event
		}
	}
	return total, nil
}

// BenchmarkSlowClient serves one clone to a client reading at 8 MiB/s,
// once straight from git and once as a cache miss, and reports how long
// git lived in each case and how long the client took.
func BenchmarkSlowClient(b *testing.B) {
	dir := benchRepo(b)
	req := cloneRequest(b, dir, "2")
	const rate = 8 << 20
	var bypassGit, missGit, clientWall time.Duration
	for range b.N {
		c := newCache(b, Config{})
		ctx := context.Background()
		resp, err := c.bypass(dir, 2, bytes.NewReader(req.body), ErrBypass)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := resp.Stream(ctx, &throttled{w: io.Discard, rate: rate, start: t0}); err != nil {
			b.Fatal(err)
		}
		resp.Close()
		bypassGit += time.Since(t0)

		var gitEnd time.Time
		c.hookWrite = func(*entry, int64, *exec.Cmd) { gitEnd = time.Now() }
		t1 := time.Now()
		if _, err := c.ServeUploadPack(ctx, &throttled{w: io.Discard, rate: rate, start: t1}, "r", dir, req.protocol, bytes.NewReader(req.body)); err != nil {
			b.Fatal(err)
		}
		clientWall += time.Since(t1)
		missGit += gitEnd.Sub(t1) // the last write is git's end, give or take its exit
		c.Close()
	}
	n := float64(b.N)
	b.ReportMetric(bypassGit.Seconds()/n, "git-lifetime-nocache-s")
	b.ReportMetric(missGit.Seconds()/n, "git-lifetime-miss-s")
	b.ReportMetric(clientWall.Seconds()/n, "client-s")
}

// BenchmarkHitThroughput streams a published entry to io.Discard and to a
// loopback TCP client, and reads the same file with cat > /dev/null, the
// physical limit, and sends it to the client with a bare io.Copy
// (sendfile), the limit of the TCP path; it reports MiB/s for each.
func BenchmarkHitThroughput(b *testing.B) {
	dir := benchRepo(b)
	req := cloneRequest(b, dir, "2")
	c := newCache(b, Config{})
	conn := drain(b)
	if _, _, err := serve(b, c, "r", dir, req.protocol, req.body); err != nil {
		b.Fatal(err)
	}
	path := entryPath(c)
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	size := st.Size()
	ctx := context.Background()
	hit := func(w io.Writer) {
		if _, err := c.ServeUploadPack(ctx, w, "r", dir, req.protocol, bytes.NewReader(req.body)); err != nil {
			b.Fatal(err)
		}
	}
	// Ten cats per shell amortise the shell's start; each cat's own
	// start is part of the limit, as it is of any reader.
	cat10 := func() {
		script := `for i in 1 2 3 4 5 6 7 8 9 10; do cat "$0" > /dev/null; done`
		if out, err := exec.Command("sh", "-c", script, path).CombinedOutput(); err != nil {
			b.Fatalf("cat: %v %s", err, out)
		}
	}
	// The three are interleaved so that a change in the machine's load
	// hits them alike.
	var tCat, tDiscard, tTCP, tSendfile time.Duration
	timed := func(d *time.Duration, f func()) { t0 := time.Now(); f(); *d += time.Since(t0) }
	for range b.N {
		timed(&tCat, cat10)
		timed(&tDiscard, func() { hit(io.Discard) })
		timed(&tTCP, func() { hit(conn) })
		timed(&tSendfile, func() { sendFile(b, conn, path) })
	}
	mibs := func(d time.Duration, k int) float64 {
		return float64(size) * float64(b.N*k) / (1 << 20) / d.Seconds()
	}
	cat, discard, tcp, raw := mibs(tCat, 10), mibs(tDiscard, 1), mibs(tTCP, 1), mibs(tSendfile, 1)
	b.ReportMetric(float64(size)/(1<<20), "MiB/entry")
	b.ReportMetric(cat, "cat-MiB/s")
	b.ReportMetric(discard, "hit-discard-MiB/s")
	b.ReportMetric(tcp, "hit-tcp-MiB/s")
	b.ReportMetric(raw, "sendfile-tcp-MiB/s")
	b.ReportMetric(discard/cat, "discard/cat")
	b.ReportMetric(tcp/cat, "tcp/cat")
}

// entryPath returns the file of the cache's only entry.
func entryPath(c *Cache) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.index {
		return e.path
	}
	return ""
}

// sendFile copies the file to conn with io.Copy, which uses sendfile.
func sendFile(b *testing.B, conn *net.TCPConn, path string) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(conn, f); err != nil {
		b.Fatal(err)
	}
}
