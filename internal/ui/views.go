package ui

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/gitfront"
	"github.com/shoal-dev/shoal/l2cache"
	"github.com/shoal-dev/shoal/packcache"
	"github.com/shoal-dev/shoal/scheduler"
)

// palette is the number of member colours (CSS classes m0…m7); members
// are coloured by their place in the sorted member list.
const palette = 8

// colours maps each member of the sample to its colour class.
func colours(smp *Sample) map[string]string {
	out := map[string]string{}
	for i, m := range smp.Members {
		out[m.Name] = fmt.Sprintf("m%d", i%palette)
	}
	return out
}

func colourOf(c map[string]string, name string) string {
	if k, ok := c[name]; ok {
		return k
	}
	return "mx" // a name that is no longer a member
}

type partitionsView struct {
	Epoch      uint64
	Count      int
	Mode       string
	Members    []partitionMember
	Owners     []cell
	Backups    []cell
	MovedCount int
	HasBackups bool
}

type partitionMember struct {
	Name, Class      string
	Owned, Backed    int
	State            string
	OwnedPct, BackPc float64
}

type cell struct {
	P      int
	Class  string
	Moved  bool
	Owner  string
	Others string
}

func partitionsOf(smp *Sample) *partitionsView {
	t := smp.Table
	if t == nil {
		return nil
	}
	col := colours(smp)
	v := &partitionsView{Epoch: t.Epoch, Count: len(t.Replicas), Mode: smp.Mode.Mode}
	owned, backed := map[string]int{}, map[string]int{}
	for p, rs := range t.Replicas {
		c := cell{P: p, Class: "none", Owner: "no owner"}
		if len(rs) > 0 {
			c.Class, c.Owner = colourOf(col, rs[0]), rs[0]
			owned[rs[0]]++
			c.Others = strings.Join(rs[1:], ", ")
		}
		if p < len(smp.Moved) && smp.Moved[p] {
			c.Moved = true
			v.MovedCount++
		}
		v.Owners = append(v.Owners, c)
		b := cell{P: p, Class: "none", Owner: "no backup"}
		if len(rs) > 1 {
			v.HasBackups = true
			b.Class, b.Owner = colourOf(col, rs[1]), rs[1]
			for _, m := range rs[1:] {
				backed[m]++
			}
			b.Others = "owner " + rs[0]
		}
		v.Backups = append(v.Backups, b)
	}
	names := map[string]string{}
	for _, m := range smp.Members {
		names[m.Name] = string(m.State)
	}
	for n := range owned {
		if _, ok := names[n]; !ok {
			names[n] = "not a member"
		}
	}
	for n := range backed {
		if _, ok := names[n]; !ok {
			names[n] = "not a member"
		}
	}
	for _, n := range slices.SortedFunc(maps.Keys(names), compareNames) {
		v.Members = append(v.Members, partitionMember{Name: n, Class: colourOf(col, n), Owned: owned[n], Backed: backed[n],
			State: names[n], OwnedPct: pct(uint64(owned[n]), uint64(len(t.Replicas)))})
	}
	return v
}

type cachesView struct {
	Nodes   []cacheNodeRow
	Regions []cacheRegionRow
	Charts  []chart
	Mode    string
}

type cacheNodeRow struct {
	Name, Class, Err string
	counters
	HitRatio float64
	NearHits uint64
	Self     bool
	// Lag is the invalidation lag over the window (LagN invalidations).
	LagN                   uint64
	LagP50, LagP90, LagP99 string
}

type cacheRegionRow struct {
	Node, Region string
	l2cache.RegionStatsSnapshot
	HitRatio float64
}

func (u *UI) cachesView(smp *Sample) cachesView {
	col := colours(smp)
	v := cachesView{Mode: smp.Mode.String()}
	for _, n := range smp.Nodes {
		row := cacheNodeRow{Name: n.Name, Class: colourOf(col, n.Name), Err: n.Err, Self: n.Name == smp.Self}
		if n.Err == "" {
			row.counters = countersOf(n.Stats)
			row.HitRatio = pct(row.Hits, row.Hits+row.Misses)
			row.NearHits = n.Stats.Cache.Node.NearHits
			for _, name := range slices.Sorted(maps.Keys(n.Stats.Cache.Regions)) {
				rs := n.Stats.Cache.Regions[name]
				v.Regions = append(v.Regions, cacheRegionRow{Node: n.Name, Region: name, RegionStatsSnapshot: rs,
					HitRatio: pct(rs.Hits, rs.Hits+rs.Misses)})
			}
		}
		v.Nodes = append(v.Nodes, row)
	}
	pts := u.sampler.points()
	for i := range v.Nodes {
		if q, n := lagQuantiles(pts, v.Nodes[i].Name, 0.5, 0.9, 0.99); n > 0 {
			v.Nodes[i].LagN, v.Nodes[i].LagP50, v.Nodes[i].LagP90, v.Nodes[i].LagP99 = n, q[0], q[1], q[2]
		}
	}
	names := nodeNames(pts)
	rate := func(title, unit string, f func(c counters) uint64) chart {
		var ss []seriesData
		for _, n := range names {
			ss = append(ss, seriesData{name: n, class: colourOf(col, n), values: rates(pts, n, f)})
		}
		return drawChart(title, unit, u.cfg.Window, smp.At, ss)
	}
	v.Charts = append(v.Charts,
		rate("Hits per second", "/s", func(c counters) uint64 { return c.Hits }),
		rate("Misses per second", "/s", func(c counters) uint64 { return c.Misses }),
		rate("Invalidations received per second", "/s", func(c counters) uint64 { return c.InvReceived }))
	var ratio []seriesData
	for _, n := range names {
		ratio = append(ratio, seriesData{name: n, class: colourOf(col, n), values: hitRatios(pts, n)})
	}
	hr := drawChart("Hit ratio (between samples)", "%", u.cfg.Window, smp.At, ratio)
	v.Charts = append(v.Charts, hr)
	return v
}

// lagQuantiles reads the node's invalidation lag quantiles over the ring:
// the histogram's growth from the oldest point that has it to the latest
// (the latest alone if the node restarted between), each quantile the
// upper bound of its bucket ("≤ 512µs"; "> 67s" past the last bound). n is
// the number of invalidations in that growth.
func lagQuantiles(pts []point, node string, qs ...float64) ([]string, uint64) {
	var first, last []uint64
	for _, p := range pts {
		if c, ok := p.Nodes[node]; ok {
			if first == nil && c.Lag != nil {
				first = c.Lag
			}
			last = c.Lag
		}
	}
	if last == nil {
		return nil, 0
	}
	restarted := false // a counter went down
	for i := range last {
		if i < len(first) && first[i] > last[i] {
			restarted = true
		}
	}
	diff := slices.Clone(last)
	var n uint64
	for i := range diff {
		if !restarted && i < len(first) {
			diff[i] -= first[i]
		}
		n += diff[i]
	}
	if n == 0 {
		return nil, 0
	}
	out := make([]string, len(qs))
	for k, q := range qs {
		rank := uint64(math.Ceil(q * float64(n)))
		var seen uint64
		for i, c := range diff {
			seen += c
			if seen >= rank {
				if i >= l2cache.LagBuckets-1 {
					out[k] = "> " + human(l2cache.LagBucketBound(i))
				} else {
					out[k] = "≤ " + humanLag(l2cache.LagBucketBound(i))
				}
				break
			}
		}
	}
	return out, n
}

// humanLag writes a lag bound: 512µs, 4.1ms, 1.05s.
func humanLag(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.3gs", d.Seconds())
}

// nodeNames are the nodes the ring has numbers for, sorted.
func nodeNames(pts []point) []string {
	set := map[string]bool{}
	for _, p := range pts {
		for n := range p.Nodes {
			set[n] = true
		}
	}
	return slices.SortedFunc(maps.Keys(set), compareNames)
}

// rates are a counter's increase per second between successive points
// that both have the node (a decrease, a restarted node, gives none).
func rates(pts []point, node string, f func(c counters) uint64) []value {
	var out []value
	for i := 1; i < len(pts); i++ {
		a, okA := pts[i-1].Nodes[node]
		b, okB := pts[i].Nodes[node]
		dt := pts[i].At.Sub(pts[i-1].At).Seconds()
		if !okA || !okB || dt <= 0 || f(b) < f(a) {
			continue
		}
		out = append(out, value{at: pts[i].At, v: float64(f(b)-f(a)) / dt})
	}
	return out
}

// hitRatios are the hit ratio (%) of the lookups between successive
// points.
func hitRatios(pts []point, node string) []value {
	var out []value
	for i := 1; i < len(pts); i++ {
		a, okA := pts[i-1].Nodes[node]
		b, okB := pts[i].Nodes[node]
		if !okA || !okB || b.Hits < a.Hits || b.Misses < a.Misses {
			continue
		}
		h, m := b.Hits-a.Hits, b.Misses-a.Misses
		if h+m == 0 {
			continue
		}
		out = append(out, value{at: pts[i].At, v: 100 * float64(h) / float64(h+m)})
	}
	return out
}

type gitView struct {
	Packs     *packcache.Stats
	PackRatio float64
	Git       gitfront.GitStats
	HasFront  bool
	Pools     []gitfront.PoolStats
	Charts    []chart
}

func (u *UI) gitView(smp *Sample) gitView {
	v := gitView{Packs: smp.Packs, HasFront: smp.HasFront, Git: smp.Front.Git, Pools: smp.Front.Pools}
	if p := smp.Packs; p != nil {
		v.PackRatio = pct(p.Hits, p.Hits+p.Misses+p.Joined)
	}
	pts := u.sampler.points()
	if smp.Packs != nil {
		var hits, misses []value
		for i := 1; i < len(pts); i++ {
			a, b := pts[i-1], pts[i]
			dt := b.At.Sub(a.At).Seconds()
			if dt <= 0 || b.PackHits < a.PackHits || b.PackMisses < a.PackMisses {
				continue
			}
			hits = append(hits, value{at: b.At, v: float64(b.PackHits-a.PackHits) / dt})
			misses = append(misses, value{at: b.At, v: float64(b.PackMisses-a.PackMisses) / dt})
		}
		v.Charts = append(v.Charts, drawChart("Pack cache lookups per second", "/s", u.cfg.Window, smp.At,
			[]seriesData{{name: "hits", class: "m0", values: hits}, {name: "misses", class: "m1", values: misses}}))
	}
	var inflight, queued []seriesData
	for i, ps := range smp.Front.Pools {
		var f, q []value
		for _, p := range pts {
			if i < len(p.Pools) {
				f = append(f, value{at: p.At, v: float64(p.Pools[i].InFlight)})
				q = append(q, value{at: p.At, v: float64(p.Pools[i].Queued)})
			}
		}
		class := fmt.Sprintf("m%d", i%palette)
		inflight = append(inflight, seriesData{name: string(ps.Name), class: class, values: f})
		queued = append(queued, seriesData{name: string(ps.Name), class: class, values: q})
	}
	if len(inflight) > 0 {
		v.Charts = append(v.Charts, drawChart("Requests in flight, by pool", "", u.cfg.Window, smp.At, inflight),
			drawChart("Requests queued, by pool", "", u.cfg.Window, smp.At, queued))
	}
	return v
}

type jobRow struct {
	scheduler.Status
	Last    *scheduler.Run
	History []scheduler.Run // newest first
}

func jobsView(smp *Sample) []jobRow {
	var out []jobRow
	for _, st := range smp.Jobs {
		r := jobRow{Status: st}
		for i := len(st.History) - 1; i >= 0; i-- {
			r.History = append(r.History, st.History[i])
		}
		if len(r.History) > 0 {
			r.Last = &r.History[0]
		}
		out = append(out, r)
	}
	slices.SortStableFunc(out, func(a, b jobRow) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func pct(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

// since is how long ago t was, for the templates ("" for a zero time).
func since(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return human(now.Sub(t))
}
