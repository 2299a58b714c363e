package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Chart geometry (SVG user units).
const (
	svgWidth    = 980
	svgLabelEnd = 450 // labels are right-aligned here
	svgPlotLeft = 460
	svgPlotEnd  = 930
	svgRowH     = 20
	svgHeadH    = 26
	svgTop      = 64
)

// Bar colours: meets its bar, misses it, has none.
const (
	svgPass  = "#2e7d32"
	svgMiss  = "#c62828"
	svgNoBar = "#1565c0"
)

// svg draws every ratio of the run as a horizontal bar on a log scale
// centred on 1× (the reference), one group per section, with each bar's
// threshold marked. Self-contained: no scripts, styles or fonts to fetch.
func (rep *report) svg() string {
	type item struct {
		label  string
		ratio  float64
		bar    barResult
		hasBar bool
	}
	type group struct {
		title string
		items []item
	}
	var groups []group
	lo, hi := 0.5, 2.0
	for _, s := range rep.sections {
		g := group{title: s.title}
		for _, r := range s.rows {
			ratio, ok := s.ratio(r)
			if !ok || r.ref {
				continue
			}
			it := item{label: r.name, ratio: ratio}
			if r.floor {
				it.label += " (floor)"
			}
			it.bar, it.hasBar = barFor(rep.bars, s, r)
			if it.hasBar {
				hi = math.Max(hi, it.bar.min*1.3)
			}
			lo, hi = math.Min(lo, ratio/1.3), math.Max(hi, ratio*1.3)
			g.items = append(g.items, it)
		}
		if len(g.items) > 0 {
			groups = append(groups, g)
		}
	}
	x := func(v float64) float64 {
		return svgPlotLeft + (math.Log(v)-math.Log(lo))/(math.Log(hi)-math.Log(lo))*(svgPlotEnd-svgPlotLeft)
	}

	height := svgTop + 56
	for _, g := range groups {
		height += svgHeadH + len(g.items)*svgRowH
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, height, svgWidth, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="16" font-weight="bold">%s</text>`+"\n",
		esc("coordkit locks: ratio to the reference of each section (log scale, more is better)"))
	fmt.Fprintf(&b, `<text x="10" y="42" fill="#555">%s</text>`+"\n",
		esc(fmt.Sprintf("%s · %s · %d rounds of %v", rep.info.started.UTC().Format("2006-01-02 15:04 MST"), rep.info.goVersion, rep.cfg.rounds, rep.cfg.duration)))

	// Grid and axis labels.
	plotBottom := height - 46
	for _, t := range []float64{0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500} {
		if t < lo || t > hi {
			continue
		}
		stroke, dash := "#ccc", ` stroke-dasharray="3,3"`
		if t == 1 {
			stroke, dash = "#333", ""
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"%s/>`+"\n", x(t), svgTop-8, x(t), plotBottom, stroke, dash)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%g×</text>`+"\n", x(t), plotBottom+14, t)
	}

	y := svgTop
	for _, g := range groups {
		fmt.Fprintf(&b, `<text x="10" y="%d" font-weight="bold">%s</text>`+"\n", y+16, esc(g.title))
		y += svgHeadH
		for _, it := range g.items {
			colour := svgNoBar
			if it.hasBar {
				colour = svgMiss
				if it.bar.pass {
					colour = svgPass
				}
			}
			x0, x1 := x(1), x(it.ratio)
			left, width := math.Min(x0, x1), math.Max(math.Abs(x1-x0), 1)
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", svgLabelEnd, y+14, esc(it.label))
			fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y+3, width, svgRowH-6, colour)
			anchor, tx := "start", math.Max(x0, x1)+4
			if it.ratio < 1 {
				anchor, tx = "end", math.Min(x0, x1)-4
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="%s">%.2f×</text>`+"\n", tx, y+14, anchor, it.ratio)
			if it.hasBar {
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="black" stroke-width="2"><title>%s</title></line>`+"\n",
					x(it.bar.min), y+1, x(it.bar.min), y+svgRowH-1, esc(fmt.Sprintf("bar: ≥ %g×", it.bar.min)))
			}
			y += svgRowH
		}
	}
	legend := []struct{ colour, text string }{{svgPass, "meets its bar (black tick)"}, {svgMiss, "misses its bar"}, {svgNoBar, "no bar"}}
	lx := 10
	for _, l := range legend {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", lx, height-14, l.colour, lx+16, height-4, esc(l.text))
		lx += 200
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func esc(s string) string { return html.EscapeString(s) }
