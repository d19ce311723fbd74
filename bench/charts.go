package bench

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"

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
	return files, nil
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
