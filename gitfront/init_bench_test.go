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

// BenchmarkInitBare creates repositories in turn with InitBareBranch
// (which writes the layout itself, initLayout), with the one git process
// it ran before that (git init --bare --template=, then the config
// appended), and with the four it ran first (check-ref-format, init with
// the default template, two config calls): the baselines in the same
// loop. It reports each one's wall time and CPU time (this process's and
// its children's) per repository, and the ratios. The REST API's
// create_repo does this once per call.
func BenchmarkInitBare(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	const shoal, oneGit, fourGit = 0, 1, 2
	var wall, cpu [3]time.Duration
	for i := 0; b.Loop(); i++ {
		for k, create := range []func(){
			func() {
				if err := InitBareBranch(ctx, dir, "p", fmt.Sprintf("s%d", i), "main"); err != nil {
					b.Fatal(err)
				}
			},
			func() { gitInitBare(b, filepath.Join(dir, "g1", fmt.Sprintf("g%d.git", i)), "main") },
			func() { fourGitProcesses(b, filepath.Join(dir, "g4", fmt.Sprintf("g%d.git", i))) },
		} {
			t0, c0 := time.Now(), cpuTime(b)
			create()
			wall[k] += time.Since(t0)
			cpu[k] += cpuTime(b) - c0
		}
	}
	n := float64(b.N)
	for k, name := range []string{"shoal", "1git", "4git"} {
		b.ReportMetric(float64(wall[k].Microseconds())/n, name+"-µs/repo")
		b.ReportMetric(float64(cpu[k].Microseconds())/n, name+"-cpu-µs/repo")
	}
	if cpu[shoal] > 0 && wall[shoal] > 0 {
		b.ReportMetric(float64(cpu[oneGit])/float64(cpu[shoal]), "cpu-1git/shoal")
		b.ReportMetric(float64(wall[oneGit])/float64(wall[shoal]), "wall-1git/shoal")
		b.ReportMetric(float64(cpu[fourGit])/float64(cpu[shoal]), "cpu-4git/shoal")
		b.ReportMetric(float64(wall[fourGit])/float64(wall[shoal]), "wall-4git/shoal")
	}
}

// fourGitProcesses is what InitBareBranch ran first: git check-ref-format,
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
