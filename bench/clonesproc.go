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

// treeRSS is the resident memory of the processes roots and all their
// descendants, now: what a server and the git processes it runs hold.
func treeRSS(roots []int) uint64 {
	parent, rss := map[int]int{}, map[int]uint64{}
	ents, _ := os.ReadDir("/proc")
	page := uint64(os.Getpagesize())
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(pid)
		if err != nil {
			continue // gone meanwhile
		}
		ppid, _ := strconv.Atoi(f[1])
		pages, _ := strconv.ParseUint(f[21], 10, 64)
		parent[pid], rss[pid] = ppid, pages*page
	}
	in := map[int]bool{}
	for _, r := range roots {
		in[r] = true
	}
	var inTree func(pid, depth int) bool
	inTree = func(pid, depth int) bool {
		if in[pid] {
			return true
		}
		p, ok := parent[pid]
		if !ok || p <= 1 || depth > 64 {
			return false
		}
		return inTree(p, depth+1)
	}
	var sum uint64
	for pid, r := range rss {
		if inTree(pid, 0) {
			sum += r
		}
	}
	return sum
}
