package testkit

import (
	"slices"
	"testing"
	"time"
)

// Latencies collects samples for a benchmark's percentiles.
type Latencies []time.Duration

// Quantile returns the q-quantile (0..1), nearest rank; zero when empty.
func (l Latencies) Quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}

// Report adds name-p50-µs and name-p99-µs metrics to b.
func (l Latencies) Report(b *testing.B, name string) {
	b.ReportMetric(float64(l.Quantile(0.5).Nanoseconds())/1e3, name+"-p50-µs")
	b.ReportMetric(float64(l.Quantile(0.99).Nanoseconds())/1e3, name+"-p99-µs")
}
