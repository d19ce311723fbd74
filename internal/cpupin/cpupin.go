// Package cpupin keeps a running process, every thread of it, on a set of
// CPUs (Linux's sched_setaffinity). The coupling benchmark uses it to give
// its load generator a CPU of its own, away from the nodes it measures, as
// a load generator on a host of its own would be.
package cpupin

import (
	"strconv"
	"strings"
)

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
