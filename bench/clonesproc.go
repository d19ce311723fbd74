package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of the times in /proc/<pid>/stat. It is
// 100 on every Linux architecture Go supports (the kernel's ABI exports
// it as a constant, whatever CONFIG_HZ is).
const clockTicks = 100

// procCPU is a process's CPU time so far, its own (utime + stime) and
// that of its children it has waited for (cutime + cstime), which for a
// node holds every git process it ran, and their children.
type procCPU struct{ self, children float64 }

func (c procCPU) total() float64 { return c.self + c.children }

// readProcCPU reads /proc/<pid>/stat.
func readProcCPU(pid int) (procCPU, error) {
	f, err := statFields(pid)
	if err != nil {
		return procCPU{}, err
	}
	// After "pid (comm) ": state is field 3; utime 14, stime 15, cutime
	// 16, cstime 17 (1-based, as in proc(5)); f[0] is field 3.
	var t [4]float64
	for i := range t {
		v, err := strconv.ParseInt(f[11+i], 10, 64)
		if err != nil {
			return procCPU{}, fmt.Errorf("/proc/%d/stat: field %d: %w", pid, 14+i, err)
		}
		t[i] = float64(v) / clockTicks
	}
	return procCPU{self: t[0] + t[1], children: t[2] + t[3]}, nil
}

// statFields returns the fields of /proc/<pid>/stat after "pid (comm)":
// the command may hold spaces and parentheses, so split after the last ')'.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

// treePSS is the proportional set size of the processes roots and all
// their descendants, now: what a server and the git processes it runs
// hold, with pages shared between them (a pack file mapped by every git)
// counted once in all.
func treePSS(roots []int) uint64 {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, err := statFields(pid); err == nil { // else gone meanwhile
			parent[pid], _ = strconv.Atoi(f[1])
		}
	}
	in := map[int]bool{}
	for _, r := range roots {
		in[r] = true
	}
	inTree := func(pid int) bool {
		for depth := 0; depth < 64; depth++ {
			if in[pid] {
				return true
			}
			p, ok := parent[pid]
			if !ok || p <= 1 {
				return false
			}
			pid = p
		}
		return false
	}
	var sum uint64
	for pid := range parent {
		if inTree(pid) {
			sum += pss(pid)
		}
	}
	return sum
}

// pss is a process's proportional set size from smaps_rollup, 0 if it is
// gone.
func pss(pid int) uint64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// familyCPU is the CPU time (seconds) of pid and of its children alive
// now, each with the children it waited for: a PostgreSQL server's
// postmaster, its backends and its background workers (a backend that
// exited was waited for by the postmaster, and counts in its own).
func familyCPU(pid int) (float64, error) {
	t, err := readProcCPU(pid)
	if err != nil {
		return 0, err
	}
	sum := t.total()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	parent := strconv.Itoa(pid)
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		f, err := statFields(child)
		if err != nil || f[1] != parent { // f[1] is field 4, the parent's PID
			continue // not a child, or gone since the listing
		}
		if c, err := readProcCPU(child); err == nil {
			sum += c.total()
		}
	}
	return sum, nil
}
