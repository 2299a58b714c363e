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
// figure of the same round, so that more is better: rate ÷ reference rate,
// or the reference's median handoff ÷ r's. It returns nil without a
// reference or when the two did not run the same rounds.
func (s *section) pairedRatios(r *row) []float64 {
	ref := s.reference()
	if ref == nil || ref == r {
		return nil
	}
	var out []float64
	if s.kind == latency {
		if len(r.perRound) != len(ref.perRound) {
			return nil
		}
		for i, d := range r.perRound {
			if d > 0 && ref.perRound[i] > 0 {
				out = append(out, ref.perRound[i].Seconds()/d.Seconds())
			}
		}
		return out
	}
	if len(r.rates) != len(ref.rates) {
		return nil
	}
	for i, v := range r.rates {
		if v > 0 && ref.rates[i] > 0 {
			out = append(out, v/ref.rates[i])
		}
	}
	return out
}

// interval is a median with a distribution-free confidence interval.
type interval struct {
	median, lo, hi float64
	coverage       float64 // the interval's exact coverage, ≥ the one asked
}

// medianCI returns the median of xs and the order-statistic confidence
// interval for it: [x(k), x(n+1-k)] with the largest k for which
// P(Binomial(n, ½) < k) ≤ (1-conf)/2. Its coverage, 1 - 2·P(Binomial(n, ½) <
// k), holds whatever the distribution of xs, for independent samples. ok is
// false when xs is too short for any such interval (fewer than 6 samples for
// 95%).
func medianCI(xs []float64, conf float64) (iv interval, ok bool) {
	n := len(xs)
	if n == 0 {
		return interval{}, false
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	iv.median = median(s)
	tail := (1 - conf) / 2
	k := 0 // the largest k with P(X < k) = P(X ≤ k-1) ≤ tail
	for j := 0; j < n/2; j++ {
		if binomialCDF(n, j) > tail {
			break
		}
		k = j + 1
	}
	if k == 0 {
		return iv, false
	}
	iv.lo, iv.hi = s[k-1], s[n-k]
	iv.coverage = 1 - 2*binomialCDF(n, k-1)
	return iv, true
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
