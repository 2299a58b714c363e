package main

import (
	"math"
	"slices"
)

// The headline ratio of a row is the ratio of its median to the
// reference's median (section.ratio). Rounds on a small shared machine
// drift together (the rows of a section take turns within a round), so the
// ratios of each round, row over reference, say more about how sure one run
// is: their median and a confidence interval for that median are what
// section.paired reports beside the headline.

// confidence is the coverage the report asks of its intervals.
const confidence = 0.95

// pairedRatios returns, for each round, r's figure over the reference's
// figure of the same round (see perRound), so that more is better. It
// returns nil without a reference or when the two did not run the same
// rounds.
func (s *section) pairedRatios(r *row) []float64 {
	ref := s.reference()
	if ref == nil || ref == r {
		return nil
	}
	ours, theirs := s.perRound(r), s.perRound(ref)
	if len(ours) != len(theirs) {
		return nil
	}
	var out []float64
	for i, v := range ours {
		if v > 0 && theirs[i] > 0 {
			out = append(out, v/theirs[i])
		}
	}
	return out
}

// perRound is r's figure of each round, so that more is better: the rate,
// or for handoff the inverse of the round's median latency (handoffs per
// second), which makes a ratio the reference's latency over r's.
func (s *section) perRound(r *row) []float64 {
	if s.kind != latency {
		return r.rates
	}
	out := make([]float64, len(r.perRound))
	for i, d := range r.perRound {
		if d > 0 {
			out[i] = 1 / d.Seconds()
		}
	}
	return out
}

// interval is a median with a distribution-free confidence interval.
type interval struct{ median, lo, hi float64 }

// medianRanks returns the ranks of the order-statistic confidence interval
// for the median of n samples: [x(k), x(n+1-k)] with the largest k for
// which P(Binomial(n, ½) < k) ≤ (1-conf)/2, and its exact coverage,
// 1 - 2·P(Binomial(n, ½) < k), which holds whatever the distribution of the
// samples, if they are independent. ok is false when n is too small for any
// such interval (fewer than 6 samples for 95%).
func medianRanks(n int, conf float64) (k int, coverage float64, ok bool) {
	tail := (1 - conf) / 2
	for j := 0; j < n/2; j++ {
		if binomialCDF(n, j) > tail {
			break
		}
		k = j + 1 // P(X < k) = P(X ≤ j) ≤ tail
	}
	if k == 0 {
		return 0, 0, false
	}
	return k, 1 - 2*binomialCDF(n, k-1), true
}

// medianCI returns the median of xs and its confidence interval of at
// least conf (see medianRanks); ok is false when xs is too short for one.
func medianCI(xs []float64, conf float64) (iv interval, ok bool) {
	k, _, ok := medianRanks(len(xs), conf)
	if !ok {
		return interval{}, false
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return interval{median: median(s), lo: s[k-1], hi: s[len(s)-k]}, true
}

// binomialCDF is P(X ≤ j) for X ~ Binomial(n, ½).
func binomialCDF(n, j int) float64 {
	sum := 0.0
	for i := 0; i <= j && i <= n; i++ {
		lc := lgamma(float64(n+1)) - lgamma(float64(i+1)) - lgamma(float64(n-i+1))
		sum += math.Exp(lc - float64(n)*math.Ln2)
	}
	return sum
}

func lgamma(x float64) float64 {
	v, _ := math.Lgamma(x)
	return v
}

// paired is the median of r's per-round ratios with its confidence
// interval (see medianCI).
func (s *section) paired(r *row) (interval, bool) {
	return medianCI(s.pairedRatios(r), confidence)
}
