// Package cpupin keeps a running process, every thread of it, on a set of
// CPUs (Linux's sched_setaffinity). The coupling benchmark uses it to give
// its load generator a CPU of its own, away from the nodes it measures, as
// a load generator on a host of its own would be.
package cpupin

import (
	"fmt"
	"strconv"
	"strings"
)

// Split divides cpus between a load generator and what it measures: the
// first CPU for the one, the rest for the other. It needs two CPUs.
func Split(cpus []int) (loadgen, rest []int, err error) {
	if len(cpus) < 2 {
		return nil, nil, fmt.Errorf("cpupin: %d CPU(s) available; a CPU of its own for the load generator needs at least 2", len(cpus))
	}
	return cpus[:1], cpus[1:], nil
}

// String writes cpus as a list: "0", "1-3", "0,2".
func String(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}
