package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// durations is a set of samples of one quantity.
type durations []time.Duration

// quantile returns the q-quantile (0 ≤ q ≤ 1) by the nearest-rank method:
// the smallest sample with at least q of the samples at or below it. The
// p99 of 100 samples is the 99th smallest; of fewer than 100, the largest.
func (d durations) quantile(q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(math.Ceil(q * float64(len(s))))
	if rank < 1 {
		rank = 1
	}
	return s[rank-1]
}

func (d durations) median() time.Duration { return d.quantile(0.5) }

func (d durations) max() time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

func (d durations) min() time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Min(d)
}

// summary is how a measure is reported: the median of its rounds and the
// spread, the smallest and largest round.
type summary struct {
	median, lo, hi float64
	n              int
}

func summarize(rounds []float64) summary {
	if len(rounds) == 0 {
		return summary{}
	}
	s := slices.Clone(rounds)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return summary{median: med, lo: s[0], hi: s[len(s)-1], n: len(s)}
}

func summarizeDurations(rounds []time.Duration) summary {
	f := make([]float64, len(rounds))
	for i, d := range rounds {
		f[i] = seconds(d)
	}
	return summarize(f)
}

func seconds(d time.Duration) float64 { return d.Seconds() }

// ratio is a/b, NaN when b is zero.
func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// fmtDur writes a duration given in seconds with a unit that suits it.
func fmtDur(s float64) string {
	switch {
	case math.IsNaN(s):
		return "n/a"
	case s < 1e-3:
		return fmt.Sprintf("%.0f µs", s*1e6)
	case s < 10e-3:
		return fmt.Sprintf("%.2f ms", s*1e3)
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1e3)
	default:
		return fmt.Sprintf("%.2f s", s)
	}
}

// fmtSpread writes a summary of durations as "median (lo–hi)".
func fmtSpread(s summary) string {
	if s.n == 0 {
		return "n/a"
	}
	if s.n == 1 {
		return fmtDur(s.median)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtDur(s.median), fmtDur(s.lo), fmtDur(s.hi))
}

func fmtBytes(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.0f KiB", b/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", b)
	}
}
