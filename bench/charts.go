package bench

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// chart is one figure: a y value per stage, one line per arm.
type couplingChart struct {
	file, title, ylabel string
	y                   func(StageResult) float64
}

// WriteCharts draws throughput, p99 latency and inter-node bytes per
// operation against clients, one line per arm (colour: cluster size;
// solid with circles: local, dashed with triangles: distributed, dotted
// with squares: near), as PNG and SVG. It returns the PNG
// file names.
func WriteCharts(dir string, r *CouplingResults) ([]string, error) {
	bytesLabel, bytesY := "inter-node bytes per operation (B, peer RPC sockets)", func(x StageResult) float64 { return x.Traffic.SocketBytesPerOp }
	if hasNoSocketBytes(r) {
		bytesLabel, bytesY = "L2 remote-call bytes per operation (B)", func(x StageResult) float64 { return x.Traffic.L2BytesPerOp }
	}
	charts := []couplingChart{
		{"throughput", "Throughput vs clients", "throughput (operations/s)", func(x StageResult) float64 { return x.Total.OpsPerSec }},
		{"p99", "p99 latency vs clients (all operations)", "p99 latency (ms)", func(x StageResult) float64 { return x.Total.P99Ms }},
		{"bytes-per-op", "Inter-node traffic per operation", bytesLabel, bytesY},
		{"cpu-per-op", "Node CPU per operation", "node CPU time per operation (ms)", func(x StageResult) float64 { return x.CPU.NodesMsPerOp }},
	}
	var files []string
	for _, c := range charts {
		p, err := drawChart(r, c)
		if err != nil {
			return files, err
		}
		for _, ext := range []string{".png", ".svg"} {
			if err := p.Save(7*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, c.file+ext)); err != nil {
				return files, err
			}
		}
		files = append(files, c.file+".png")
	}
	if len(r.Switch) > 0 && len(r.Switch[0].Stage.Timeline) > 0 {
		for _, c := range []struct {
			file, title, ylabel string
			y                   func(TimelineBucket) float64
		}{
			{"switch-throughput", "Throughput through the mode switches", "throughput (operations/s)", func(b TimelineBucket) float64 { return b.OpsPerSec }},
			{"switch-p99", "p99 latency through the mode switches", "p99 latency (ms)", func(b TimelineBucket) float64 { return b.P99Ms }},
		} {
			p, err := drawTimeline(r.Switch[0], c.title, c.ylabel, c.y)
			if err != nil {
				return files, err
			}
			for _, ext := range []string{".png", ".svg"} {
				if err := p.Save(9*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, c.file+ext)); err != nil {
					return files, err
				}
			}
			files = append(files, c.file+".png")
		}
	}
	return files, nil
}

// drawTimeline draws y per bucket of a switch stage, with each switch's
// start (dashed) and end (dotted) marked by a vertical line.
func drawTimeline(sr SwitchRun, title, ylabel string, y func(TimelineBucket) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s (%s, %d nodes)", title, timelineModes(sr), len(sr.Nodes))
	p.X.Label.Text = "seconds into the measured window (points at bucket middles)"
	p.Y.Label.Text = ylabel
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	pts := make(plotter.XYs, len(sr.Stage.Timeline))
	ymax := 0.0
	for i, b := range sr.Stage.Timeline {
		pts[i].X, pts[i].Y = b.At+b.Seconds/2, y(b)
		ymax = max(ymax, pts[i].Y)
	}
	ymax = max(ymax, 1e-9) * 1.3
	p.Y.Min, p.Y.Max = 0, ymax
	p.Y.Tick.Marker = niceTicks{}
	last := sr.Stage.Timeline[len(sr.Stage.Timeline)-1]
	p.X.Min, p.X.Max = 0, last.At+last.Seconds
	line, err := plotter.NewLine(pts)
	if err != nil {
		return nil, err
	}
	line.Color, line.Width = plotutil.Color(0), vg.Points(1.5)
	p.Add(line)
	p.Legend.Add(ylabel, line)
	for i, ev := range sr.Switches {
		col := plotutil.Color(i + 1)
		for k, x := range []float64{ev.At, ev.At + ev.Seconds} {
			l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: ymax}})
			if err != nil {
				return nil, err
			}
			l.Color, l.Width = col, vg.Points(1)
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			if k == 1 {
				l.Dashes = []vg.Length{vg.Points(1), vg.Points(2)}
			}
			p.Add(l)
			if k == 0 {
				label := fmt.Sprintf("switch to %s at %.1fs, took %.2fs", ev.To, ev.At, ev.Seconds)
				if !ev.OK() {
					label += " (failed)"
				}
				p.Legend.Add(label, l)
			}
		}
	}
	return p, nil
}

// timelineModes is "local → distributed → near".
func timelineModes(sr SwitchRun) string {
	if len(sr.Switches) == 0 {
		return "no switch"
	}
	modes := []string{sr.Switches[0].From}
	for _, ev := range sr.Switches {
		modes = append(modes, ev.To)
	}
	return strings.Join(modes, " → ")
}

func hasNoSocketBytes(r *CouplingResults) bool {
	for _, run := range r.Runs {
		for _, ar := range run {
			if slices.ContainsFunc(ar.Stages, func(x StageResult) bool { return x.Traffic.SocketBytes < 0 }) {
				return true
			}
		}
	}
	return false
}

func drawChart(r *CouplingResults, c couplingChart) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = c.title
	p.X.Label.Text = "concurrent clients"
	p.Y.Label.Text = c.ylabel
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	var sizes, clients []int
	ymax := 0.0
	for _, s := range r.Series() {
		if !slices.Contains(sizes, s.Arm.Nodes) {
			sizes = append(sizes, s.Arm.Nodes)
		}
		for i, sts := range s.Stages {
			if !slices.Contains(clients, s.Clients[i]) {
				clients = append(clients, s.Clients[i])
			}
			ymax = max(ymax, stageMean(sts, c.y))
		}
	}
	// Headroom above the lines for the legend, in the top left corner.
	p.Y.Max = max(ymax, 1e-9) * (1.15 + 0.07*float64(len(r.Series())))
	p.Y.Tick.Marker = niceTicks{}
	p.X.Tick.Marker = clientTicks(clients)
	p.X.Min, p.X.Max = 0, float64(slices.Max(append(clients, 1)))*1.04
	for _, s := range r.Series() {
		pts := make(plotter.XYs, len(s.Stages))
		for i, sts := range s.Stages {
			pts[i].X, pts[i].Y = float64(s.Clients[i]), stageMean(sts, c.y)
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Arm.Name(), err)
		}
		col := plotutil.Color(slices.Index(sizes, s.Arm.Nodes))
		line.Color, points.Color = col, col
		line.Width = vg.Points(1.5)
		points.Shape = draw.CircleGlyph{}
		switch s.Arm.Mode {
		case "distributed":
			line.Dashes = []vg.Length{vg.Points(6), vg.Points(3)}
			points.Shape = draw.TriangleGlyph{}
		case "near":
			line.Dashes = []vg.Length{vg.Points(1.5), vg.Points(2.5)}
			points.Shape = draw.BoxGlyph{}
		}
		p.Add(line, points)
		p.Legend.Add(fmt.Sprintf("%s, %d node(s)", s.Arm.Mode, s.Arm.Nodes), line, points)
	}
	return p, nil
}

// niceTicks puts about six labelled ticks at round numbers.
type niceTicks struct{}

func (niceTicks) Ticks(lo, hi float64) []plot.Tick {
	step := math.Pow(10, math.Floor(math.Log10((hi-lo)/6)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if (hi-lo)/(step*m) <= 7 {
			step *= m
			break
		}
	}
	var ticks []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi; v += step {
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', 6, 64)})
	}
	return ticks
}

// clientTicks labels the client counts of the stages.
func clientTicks(clients []int) plot.ConstantTicks {
	slices.Sort(clients)
	var ticks plot.ConstantTicks
	for _, c := range clients {
		ticks = append(ticks, plot.Tick{Value: float64(c), Label: strconv.Itoa(c)})
	}
	return ticks
}
