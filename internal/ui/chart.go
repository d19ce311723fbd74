package ui

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// value is one point of a series.
type value struct {
	at time.Time
	v  float64
}

type seriesData struct {
	name, class string
	values      []value
}

// chart is an SVG line chart drawn on the node: the template writes its
// polylines and labels.
type chart struct {
	Title, Unit string
	W, H        int
	// Plot area.
	X0, Y0, X1, Y1 int
	Series         []series
	YTicks         []tick
	XTicks         []tick
	Empty          bool
	// Summary is the latest value of each series, for screen readers and
	// the legend.
	Summary string
}

type series struct {
	Name, Class, Points, Last string
}

type tick struct {
	Pos   int
	Label string
}

// Chart geometry, in SVG user units (the SVG scales to its container).
const (
	chartW, chartH = 640, 200
	padL, padR     = 52, 12
	padT, padB     = 12, 26
)

// drawChart scales the series to a chart of the last window before now.
func drawChart(title, unit string, window time.Duration, now time.Time, ss []seriesData) chart {
	c := chart{Title: title, Unit: unit, W: chartW, H: chartH, X0: padL, Y0: padT, X1: chartW - padR, Y1: chartH - padB}
	start := now.Add(-window)
	maxV := 0.0
	n := 0
	for _, s := range ss {
		for _, p := range s.values {
			if p.at.Before(start) {
				continue
			}
			maxV = math.Max(maxV, p.v)
			n++
		}
	}
	c.Empty = n == 0
	top := niceCeil(maxV)
	if unit == "%" {
		top = 100
	}
	xOf := func(t time.Time) float64 {
		f := float64(t.Sub(start)) / float64(window)
		return float64(c.X0) + f*float64(c.X1-c.X0)
	}
	yOf := func(v float64) float64 {
		return float64(c.Y1) - v/top*float64(c.Y1-c.Y0)
	}
	var summary []string
	for _, s := range ss {
		var b strings.Builder
		last := ""
		for _, p := range s.values {
			if p.at.Before(start) {
				continue
			}
			fmt.Fprintf(&b, "%.1f,%.1f ", xOf(p.at), yOf(p.v))
			last = formatValue(p.v) + unit
		}
		if last == "" {
			last = "no data"
		}
		c.Series = append(c.Series, series{Name: s.name, Class: s.class, Points: strings.TrimSpace(b.String()), Last: last})
		summary = append(summary, s.name+" "+last)
	}
	c.Summary = strings.Join(summary, ", ")
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		c.YTicks = append(c.YTicks, tick{Pos: int(math.Round(yOf(v))), Label: formatValue(v) + unit})
	}
	step := window / 5
	for i := 0; i <= 5; i++ {
		t := start.Add(time.Duration(i) * step)
		label := "now"
		if i < 5 {
			label = "−" + human(now.Sub(t))
		}
		c.XTicks = append(c.XTicks, tick{Pos: int(math.Round(xOf(t))), Label: label})
	}
	return c
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// formatValue writes a chart value compactly.
func formatValue(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 1, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 0, 64) + "k"
	case v >= 100 || v == math.Trunc(v):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
