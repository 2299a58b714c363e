package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

// The order-statistic interval for the median: the ranks and coverages are
// those of the binomial tables (n=21: ranks 6 and 16, 97.3%; n=10: ranks 2
// and 9, 97.9%; n=6: the extremes, 96.9%), and fewer than 6 samples give
// none at 95%.
func TestMedianCI(t *testing.T) {
	seq := func(n int) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = float64(n - i) // descending: medianCI must sort
		}
		return xs
	}
	for _, tc := range []struct {
		n              int
		median, lo, hi float64
		coverage       float64
	}{
		{21, 11, 6, 16, 0.9734},
		{10, 5.5, 2, 9, 0.9785},
		{6, 3.5, 1, 6, 0.9688},
	} {
		iv, ok := medianCI(seq(tc.n), 0.95)
		if !ok {
			t.Fatalf("n=%d: no interval", tc.n)
		}
		_, coverage, _ := medianRanks(tc.n, 0.95)
		if iv.median != tc.median || iv.lo != tc.lo || iv.hi != tc.hi || math.Abs(coverage-tc.coverage) > 5e-4 {
			t.Errorf("n=%d: got median %v [%v, %v] coverage %.4f, want %v [%v, %v] %.4f",
				tc.n, iv.median, iv.lo, iv.hi, coverage, tc.median, tc.lo, tc.hi, tc.coverage)
		}
	}
	if iv, ok := medianCI(seq(5), 0.95); ok {
		t.Errorf("n=5: got an interval %+v, want none (its best coverage is 93.8%%)", iv)
	}
	if _, ok := medianCI(nil, 0.95); ok {
		t.Error("no samples: got an interval")
	}
}

func TestBinomialCDF(t *testing.T) {
	// P(X ≤ 5) for n=21 is 27,896 / 2^21.
	if got, want := binomialCDF(21, 5), 27896.0/(1<<21); math.Abs(got-want) > 1e-12 {
		t.Errorf("binomialCDF(21, 5) = %v, want %v", got, want)
	}
	if got := binomialCDF(7, 7); math.Abs(got-1) > 1e-12 {
		t.Errorf("binomialCDF(7, 7) = %v, want 1", got)
	}
}

// Per-round ratios pair each round of a row with the same round of the
// reference, so that more is better in both kinds of section.
func TestPairedRatios(t *testing.T) {
	ref := &row{id: "ref", ref: true, rates: []float64{100, 200, 400}}
	r := &row{id: "ours", rates: []float64{150, 200, 200}}
	s := &section{kind: throughput, rows: []*row{ref, r}}
	got := s.pairedRatios(r)
	want := []float64{1.5, 1, 0.5}
	if len(got) != len(want) {
		t.Fatalf("paired ratios %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("paired ratios %v, want %v", got, want)
		}
	}
	if s.pairedRatios(ref) != nil {
		t.Error("the reference against itself: want no ratios")
	}
	short := &row{id: "short", rates: []float64{1}}
	s.rows = append(s.rows, short)
	if s.pairedRatios(short) != nil {
		t.Error("a row that ran fewer rounds than the reference: want no ratios")
	}

	lref := &row{id: "ref", ref: true, perRound: []time.Duration{4 * time.Millisecond, 2 * time.Millisecond}}
	lr := &row{id: "ours", perRound: []time.Duration{time.Millisecond, 4 * time.Millisecond}}
	ls := &section{kind: latency, rows: []*row{lref, lr}}
	lg := ls.pairedRatios(lr)
	if len(lg) != 2 || lg[0] != 4 || lg[1] != 0.5 {
		t.Errorf("latency paired ratios %v, want [4 0.5] (reference ÷ ours)", lg)
	}
}

// The report shows each row's per-round interval and, for each bar, whether
// the bar lies above, inside or below it; the verdict itself stays the
// headline ratio's.
func TestReportIntervals(t *testing.T) {
	const rounds = 21
	mk := func(f func(i int) float64) []float64 {
		xs := make([]float64, rounds)
		for i := range xs {
			xs[i] = f(i)
		}
		return xs
	}
	// The reference alternates 100 and 110 per round; the mutex runs at
	// 1.20-1.40× of it, the fairlock at 1.5-1.7×.
	ref := &row{id: "curator", name: "Curator", ref: true, rates: mk(func(i int) float64 { return 100 + 10*float64(i%2) })}
	mx := &row{id: "mutex", name: "coordkit mutex", rates: mk(func(i int) float64 { return ref.rates[i] * (1.2 + 0.01*float64(i)) })}
	fl := &row{id: "fairlock", name: "coordkit fairlock", rates: mk(func(i int) float64 { return ref.rates[i] * (1.5 + 0.01*float64(i)) })}
	s := &section{id: "zk-on-uncontended", title: "ZooKeeper, uncontended, one session, fsync on", kind: throughput, unit: unitCycles, rows: []*row{ref, mx, fl}}
	bars := checkBars([]*section{s})
	if len(bars) != 2 {
		t.Fatalf("%d bars for the section, want 2 (mutex, fairlock)", len(bars))
	}
	for _, b := range bars {
		if !b.haveCI {
			t.Fatalf("%s: no interval over %d rounds", b.what, rounds)
		}
		switch b.row {
		case "mutex":
			// Per-round ratios 1.20..1.40, median 1.30: the bar 1.3 is inside.
			if math.Abs(b.ci.median-1.30) > 1e-9 || b.ci.lo >= 1.3 || b.ci.hi < 1.3 {
				t.Errorf("mutex: interval %+v, want median 1.30 around the bar", b.ci)
			}
			if got := certainty(b); got != "bar inside the interval: this run cannot tell" {
				t.Errorf("mutex: certainty %q", got)
			}
		case "fairlock":
			if got := certainty(b); got != "interval above the bar" {
				t.Errorf("fairlock: certainty %q (interval %+v)", got, b.ci)
			}
		}
	}
	rep := &report{cfg: config{rounds: rounds, duration: 300 * time.Millisecond}, sections: []*section{s}, bars: bars}
	md := rep.markdown()
	for _, want := range []string{
		"| Per round [95% CI] | Bar |",
		"| coordkit mutex | ",
		"1.30× [1.25–1.35]",
		"bar inside the interval: this run cannot tell",
		"interval above the bar",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the markdown lacks %q:\n%s", want, md)
		}
	}
	var text strings.Builder
	rep.writeText(&text)
	if !strings.Contains(text.String(), "per round 1.30× [1.25–1.35]: bar inside the interval") {
		t.Errorf("the printed bars lack the interval:\n%s", text.String())
	}
}

// The report's note on intervals names the ranks and the exact coverage at
// the run's number of rounds, or says there are too few.
func TestIntervalNote(t *testing.T) {
	for _, tc := range []struct {
		rounds int
		want   string
	}{
		{21, "with 21 rounds, the 6th and 16th smallest ratio, exact coverage 97.3%"},
		{2, "2 rounds are too few for one"},
	} {
		rep := &report{cfg: config{rounds: tc.rounds}}
		if got := rep.intervalNote(); !strings.Contains(got, tc.want) {
			t.Errorf("%d rounds: note %q lacks %q", tc.rounds, got, tc.want)
		}
	}
	// The interval is built from the ratios a row has, not from the rounds
	// run: a round in which the row measured nothing gives no ratio.
	rates := func(n int, zeroAt int) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			if i != zeroAt {
				xs[i] = 100 + float64(i)
			}
		}
		return xs
	}
	s := &section{kind: throughput, rows: []*row{
		{id: "ref", ref: true, rates: rates(21, -1)},
		{id: "full", rates: rates(21, -1)},
		{id: "dropped", rates: rates(21, 3)},
	}}
	rep := &report{cfg: config{rounds: 21}, sections: []*section{s}}
	got := rep.intervalNote()
	for _, want := range []string{
		"with 20 ratios (of 21 rounds), the 6th and 15th smallest ratio, exact coverage 95.9%",
		"with 21 rounds, the 6th and 16th smallest ratio, exact coverage 97.3%",
		"A round in which a row or its reference measured nothing gives no ratio",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("a row with a round dropped: note %q lacks %q", got, want)
		}
	}
	s.rows = s.rows[:2]
	if got := rep.intervalNote(); strings.Contains(got, "ratios (of") || strings.Contains(got, "gives no ratio") {
		t.Errorf("every round paired: note %q speaks of dropped rounds", got)
	}
	for n, want := range map[int]string{1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 11: "11th", 12: "12th", 13: "13th", 21: "21st", 22: "22nd", 111: "111th"} {
		if got := ordinal(n); got != want {
			t.Errorf("ordinal(%d) = %q, want %q", n, got, want)
		}
	}
}
