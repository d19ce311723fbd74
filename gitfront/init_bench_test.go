//go:build unix

package gitfront

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkInitBare creates repositories alternately with InitBareBranch
// and with the four git processes it ran before (check-ref-format, init
// with the default template, two config calls), the baseline in the same
// loop, and reports each one's wall time and CPU time (this process's and
// its children's) per repository, and the ratios. The REST API's
// create_repo does this once per call.
func BenchmarkInitBare(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	var shoalWall, gitWall, shoalCPU, gitCPU time.Duration
	for i := 0; b.Loop(); i++ {
		t0, c0 := time.Now(), cpuTime(b)
		if err := InitBareBranch(ctx, dir, "p", fmt.Sprintf("s%d", i), "main"); err != nil {
			b.Fatal(err)
		}
		t1, c1 := time.Now(), cpuTime(b)
		fourGitProcesses(b, filepath.Join(dir, "g", fmt.Sprintf("g%d.git", i)))
		t2, c2 := time.Now(), cpuTime(b)
		shoalWall += t1.Sub(t0)
		gitWall += t2.Sub(t1)
		shoalCPU += c1 - c0
		gitCPU += c2 - c1
	}
	n := float64(b.N)
	b.ReportMetric(float64(shoalWall.Microseconds())/n, "shoal-µs/repo")
	b.ReportMetric(float64(gitWall.Microseconds())/n, "4git-µs/repo")
	b.ReportMetric(float64(shoalCPU.Microseconds())/n, "shoal-cpu-µs/repo")
	b.ReportMetric(float64(gitCPU.Microseconds())/n, "4git-cpu-µs/repo")
	if shoalCPU > 0 && shoalWall > 0 {
		b.ReportMetric(float64(gitCPU)/float64(shoalCPU), "cpu-4git/shoal")
		b.ReportMetric(float64(gitWall)/float64(shoalWall), "wall-4git/shoal")
	}
}

// fourGitProcesses is what InitBareBranch ran before: git check-ref-format,
// git init with the default template, and two git config calls.
func fourGitProcesses(b *testing.B, dir string) {
	for _, args := range [][]string{
		{"check-ref-format", "refs/heads/main"},
		{"-c", "init.defaultBranch=main", "init", "--bare", "--quiet", dir},
		{"--git-dir", dir, "config", "uploadpack.allowFilter", "true"},
		{"--git-dir", dir, "config", "uploadpack.allowReachableSHA1InWant", "true"},
	} {
		cmd := exec.Command("git", args...)
		cmd.Env = gitEnv(nil)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
}

// cpuTime is this process's CPU time and its waited-for children's.
func cpuTime(b *testing.B) time.Duration {
	var self, kids syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		b.Fatal(err)
	}
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids); err != nil {
		b.Fatal(err)
	}
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}
