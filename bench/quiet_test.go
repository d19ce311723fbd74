package bench

import (
	"bytes"
	"io"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testkit"
)

// burnScript busies a shell for a while (a fraction of a second to a few
// seconds, by the machine's speed and load).
const burnScript = `i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done`

// The quiet guard counts as the benchmark's what its processes did: a
// node's git processes (children it waited for, which the node's own
// getrusage does not see) and the runner's children (ss). Here a "node"
// (a shell) runs a busy child and waits for it, and the runner (this
// test) runs and waits for another: the benchmark's share of the window
// must hold both, as the kernel accounted them to the processes when they
// were reaped — so on a quiet machine what is left as other is near zero,
// and on a loaded one it is no more than the machine's busy share less
// that work.
func TestSnapshotCountsBenchmarkChildren(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	node := exec.Command("sh", "-c", "read go; ("+burnScript+"); exec sleep 120")
	stdin, err := node.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		node.Process.Kill()
		node.Wait()
	}()
	pids := []int{os.Getpid(), node.Process.Pid}
	var before, after counterSnapshot
	before.readCPU(pids)
	if !before.benchOK {
		t.Fatal("the snapshot could not read the processes' CPU time")
	}
	io.WriteString(stdin, "go\n")
	// The runner's own child, reaped here.
	own := exec.Command("sh", "-c", burnScript)
	if out, err := own.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ownCPU := (own.ProcessState.UserTime() + own.ProcessState.SystemTime()).Seconds()
	testkit.Eventually(t, 2*time.Minute, "the node's child to finish", func() bool {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(node.Process.Pid) + "/comm")
		return strings.TrimSpace(string(comm)) == "sleep"
	})
	after.readCPU(pids)
	if !after.benchOK {
		t.Fatal("the snapshot could not read the processes' CPU time")
	}
	node.Process.Kill()
	node.Wait()
	// wait4's usage of the shell holds the child it waited for.
	nodeCPU := (node.ProcessState.UserTime() + node.ProcessState.SystemTime()).Seconds()
	counted := after.bench - before.bench
	want := nodeCPU + ownCPU
	t.Logf("the node's and the runner's children used %.2fs and %.2fs; the snapshots counted %.2fs", nodeCPU, ownCPU, counted)
	// Ticks are 10 ms, and the kernel's two accounts of a process's time
	// round differently; the test's own work between the snapshots only
	// adds.
	if counted < 0.9*want-0.03 {
		t.Fatalf("the snapshots counted %.2fs of the benchmark's CPU time, want at least %.2fs (the children's)", counted, want)
	}
	st := stageFigures(LoadSpec{Clients: 1}, &LoadResult{Seconds: 1, NumCPU: 1}, before, after, false)
	share := shareOf((0.9*want-0.03)*clockTicks, before.machine, after.machine)
	if st.CPU.BenchShare < share {
		t.Fatalf("bench share %.3f, below the children's %.3f", st.CPU.BenchShare, share)
	}
	if st.CPU.OthersShare > st.CPU.MachineBusy-share {
		t.Fatalf("others %.3f of the machine with %.3f busy, of which the benchmark's children %.3f", st.CPU.OthersShare, st.CPU.MachineBusy, share)
	}
}

// Other CPU is what is busy less the benchmark's processes and the
// kernel's interrupt work; without the processes' times it falls back
// to the nodes' and load generator's own reports.
func TestStageFiguresOthersShare(t *testing.T) {
	lr := &LoadResult{Seconds: 10, NumCPU: 2, CPUSeconds: 2}
	// 10 s on 2 CPUs: 2,000 ticks, 1,200 busy of which 100 interrupts.
	before := counterSnapshot{machine: machineCPU{busy: 1000, total: 5000, irq: 50}, bench: 100, benchOK: true}
	after := counterSnapshot{machine: machineCPU{busy: 2200, total: 7000, irq: 150}, bench: 108, benchOK: true}
	st := stageFigures(LoadSpec{Clients: 1}, lr, before, after, false)
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"busy", st.CPU.MachineBusy, 0.6}, {"bench", st.CPU.BenchShare, 0.4}, {"irq", st.CPU.IRQShare, 0.05}, {"others", st.CPU.OthersShare, 0.15}} {
		if math.Abs(c.got-c.want) > 1e-9 {
			t.Errorf("%s share %v, want %v", c.name, c.got, c.want)
		}
	}
	before.benchOK = false
	st = stageFigures(LoadSpec{Clients: 1}, lr, before, after, false)
	if math.Abs(st.CPU.OthersShare-0.5) > 1e-9 || st.CPU.BenchShare != 0 { // 0.6 busy less the load generator's 0.1
		t.Errorf("without the processes' times: others %v, bench %v; want 0.5, 0", st.CPU.OthersShare, st.CPU.BenchShare)
	}
}

func TestReadMachineCPU(t *testing.T) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Skip("no /proc")
	}
	if !bytes.HasPrefix(b, []byte("cpu ")) {
		t.Fatalf("/proc/stat starts %q", b[:min(len(b), 20)])
	}
	m := readMachineCPU()
	if m.total == 0 || m.busy > m.total || m.irq > m.busy {
		t.Fatalf("machine CPU %+v", m)
	}
}
