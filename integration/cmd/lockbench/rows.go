package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"
)

// kind is what a section measures.
type kind int

const (
	throughput kind = iota // acquisitions per second, one figure per round
	latency                // handoff samples, pooled over the rounds
)

// section is a group of rows measured against one reference, taking turns
// within each round.
type section struct {
	id    string // in lock paths and bar keys
	title string
	kind  kind
	unit  string
	rows  []*row
}

// row is one implementation in a section and what it measured.
type row struct {
	id    string // unique in its section
	name  string
	ref   bool // the section's reference
	floor bool // a lower bound, not a competitor
	run   runFunc

	rates    []float64       // throughput: one per round
	samples  []time.Duration // latency: every sample of every round
	perRound []time.Duration // latency: the median of each round
}

func (s *section) reference() *row {
	for _, r := range s.rows {
		if r.ref {
			return r
		}
	}
	return nil
}

func (s *section) row(id string) *row {
	for _, r := range s.rows {
		if r.id == id {
			return r
		}
	}
	return nil
}

// value is the row's headline figure: the median rate over the rounds, or
// the median handoff in seconds over all samples.
func (s *section) value(r *row) float64 {
	if s.kind == latency {
		return percentile(r.samples, 50).Seconds()
	}
	return median(r.rates)
}

// ratio compares r with the section's reference so that more is better:
// rate / reference rate, or reference latency / latency. ok is false
// without a reference or a figure.
func (s *section) ratio(r *row) (ratio float64, ok bool) {
	ref := s.reference()
	if ref == nil {
		return 0, false
	}
	v, rv := s.value(r), s.value(ref)
	if v <= 0 || rv <= 0 {
		return 0, false
	}
	if s.kind == latency {
		return rv / v, true
	}
	return v / rv, true
}

func (r *row) record(m measure) {
	if m.samples != nil {
		r.samples = append(r.samples, m.samples...)
		r.perRound = append(r.perRound, percentile(m.samples, 50))
		return
	}
	r.rates = append(r.rates, m.rate)
}

// Units of the sections.
const (
	unitCycles   = "acquire+release/s"
	unitAcquires = "acquisitions/s"
	unitHandoff  = "Unlock returned → other session's Lock returned"
)

// versus is a section in which coordkit's mutex and fairlock meet a
// reference.
func versus(id, title, unit string, k kind, ref *row, mutexRun, fairlockRun runFunc) *section {
	ref.ref = true
	return &section{id: id, title: title, kind: k, unit: unit, rows: []*row{
		ref,
		{id: "mutex", name: "coordkit mutex", run: mutexRun},
		{id: "fairlock", name: "coordkit fairlock", run: fairlockRun},
	}}
}

// sections lists what env can measure, in report order.
func (e *env) sections() []*section {
	var out []*section
	if on := e.zkOn; on != nil {
		for _, z := range []*zkServer{on, e.zkOff} {
			s := versus("zk-"+z.tag()+"-uncontended", "ZooKeeper, uncontended, one session, fsync "+z.tag(), unitCycles, throughput,
				&row{id: "curator", name: "Curator 5.4 InterProcessMutex", run: curatorUncontended(z.curators[0])},
				coordkitLoops(z.drv, newMutex, 1, 1), coordkitLoops(z.drv, newFairlock, 1, 1))
			floors := []*row{
				{id: "raw", name: "go-zookeeper create(ephemeral)+delete", floor: true, run: rawCreateDelete(z)},
				{id: "protocol", name: "go-zookeeper, the mutex's two stamped multis", floor: true, run: rawStampedMultis(z)},
			}
			s.rows = append(floors, s.rows...)
			out = append(out, s)
		}
		out = append(out,
			versus("zk-sessions4", "ZooKeeper, 4 contending sessions, one goroutine (thread) each, fsync on", unitAcquires, throughput,
				&row{id: "curator", name: "Curator 5.4 InterProcessMutex (4 JVMs)", run: curatorThreads(on.curators, 1)},
				coordkitLoops(on.drv, newMutex, 4, 1), coordkitLoops(on.drv, newFairlock, 4, 1)),
			&section{
				id:    "zk-goroutines32",
				title: "ZooKeeper, 32 goroutines (threads) of one process, one session, fsync on",
				unit:  unitAcquires,
				rows: []*row{
					{id: "curator", name: "Curator 5.4 InterProcessMutex (32 threads)", ref: true, run: curatorThreads(on.curators[:1], 32)},
					{id: "mutex", name: "coordkit mutex", run: coordkitLoops(on.drv, newMutex, 1, 32)},
				},
			},
			versus("zk-handoff", "ZooKeeper, handoff between two sessions, fsync on", unitHandoff, latency,
				&row{id: "curator", name: "Curator 5.4 InterProcessMutex (2 JVMs, via the driver protocol)", run: curatorHandoff(on)},
				coordkitHandoff(on.drv, newMutex, awaitMark), coordkitHandoff(on.drv, newFairlock, queuedChildren)))
	}
	if ec := e.etcd; ec != nil {
		reference := func(run runFunc) *row { return &row{id: "concurrency", name: "etcd concurrency.Mutex", run: run} }
		uncontended := versus("etcd-uncontended", "etcd, uncontended, one session", unitCycles, throughput,
			reference(concurrencyLoops(ec, 1)), coordkitLoops(ec.drv, newMutex, 1, 1), coordkitLoops(ec.drv, newFairlock, 1, 1))
		uncontended.rows = append([]*row{{id: "protocol", name: "etcd client, the mutex's two Txns", floor: true, run: rawEtcdTxns(ec)}}, uncontended.rows...)
		out = append(out, uncontended,
			versus("etcd-sessions4", "etcd, 4 contending sessions, one goroutine each", unitAcquires, throughput,
				reference(concurrencyLoops(ec, 4)), coordkitLoops(ec.drv, newMutex, 4, 1), coordkitLoops(ec.drv, newFairlock, 4, 1)),
			&section{
				id:    "etcd-goroutines32",
				title: "etcd, 32 goroutines of one process, one session",
				unit:  unitAcquires,
				rows:  []*row{{id: "mutex", name: "coordkit mutex", run: coordkitLoops(ec.drv, newMutex, 1, 32)}},
			},
			versus("etcd-handoff", "etcd, handoff between two sessions", unitHandoff, latency,
				reference(concurrencyHandoff(ec)), coordkitHandoff(ec.drv, newMutex, awaitMark), coordkitHandoff(ec.drv, newFairlock, queuedChildren)))
	}
	return out
}

// runRounds runs a warm-up round (cfg.warmup per row, discarded), then
// cfg.rounds rounds of cfg.duration per row. Within a section the rows take
// turns, starting one further each round. Every run gets a lock path of its
// own.
func runRounds(ctx context.Context, cfg config, runID string, sections []*section) error {
	for round := 0; round <= cfg.rounds; round++ {
		d, label := cfg.duration, fmt.Sprintf("r%d", round)
		if round == 0 {
			d, label = cfg.warmup, "warmup"
		}
		for _, s := range sections {
			fmt.Fprintf(cfg.progress, "lockbench: %-7s %s\n", label, s.title)
			for k := range s.rows {
				r := s.rows[(k+round)%len(s.rows)]
				path := fmt.Sprintf("/lockbench/%s/%s/%s/%s", runID, s.id, r.id, label)
				// A run that hangs (a lost server) must not hang the harness.
				rctx, cancel := context.WithTimeout(ctx, d+2*time.Minute)
				m, err := r.run(rctx, path, d)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						return context.Cause(ctx)
					}
					return fmt.Errorf("%s: %s: %w", s.title, r.name, err)
				}
				if round > 0 {
					r.record(m)
				}
			}
		}
	}
	return nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile is the nearest-rank p-th percentile.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// barSpec is one bar of issue #3: row of section at least min times the
// section's reference.
type barSpec struct {
	section, row string
	min          float64
	what         string
}

func issueBars() []barSpec {
	return []barSpec{
		{"zk-on-uncontended", "mutex", 1.3, "ZooKeeper mutex uncontended, fsync on ≥ 1.3× Curator"},
		{"zk-off-uncontended", "mutex", 1.3, "ZooKeeper mutex uncontended, fsync off ≥ 1.3× Curator"},
		{"zk-on-uncontended", "fairlock", 1.0, "ZooKeeper fairlock uncontended, fsync on ≥ 1.0× Curator"},
		{"zk-off-uncontended", "fairlock", 1.0, "ZooKeeper fairlock uncontended, fsync off ≥ 1.0× Curator"},
		{"zk-sessions4", "fairlock", 1.0, "ZooKeeper 4 sessions: fairlock ≥ 1.0× Curator"},
		{"zk-goroutines32", "mutex", 5, "ZooKeeper 32 goroutines: mutex ≥ 5× Curator 32 threads"},
		{"etcd-uncontended", "mutex", 1.0, "etcd uncontended: mutex ≥ 1.0× concurrency.Mutex"},
		{"etcd-uncontended", "fairlock", 1.0, "etcd uncontended: fairlock ≥ 1.0× concurrency.Mutex"},
		{"etcd-sessions4", "mutex", 5, "etcd 4 sessions: mutex ≥ 5× concurrency.Mutex"},
		{"etcd-sessions4", "fairlock", 5, "etcd 4 sessions: fairlock ≥ 5× concurrency.Mutex"},
	}
}

// barResult is a bar checked against this run.
type barResult struct {
	barSpec
	ratio  float64 // the headline ratio (section.ratio), which decides pass
	pass   bool
	ci     interval // the row's per-round ratios (section.paired)
	haveCI bool
}

// checkBars checks the bars whose rows ran (none of a backend left out by
// -only).
func checkBars(sections []*section) []barResult {
	var out []barResult
	for _, b := range issueBars() {
		for _, s := range sections {
			if s.id != b.section {
				continue
			}
			if r := s.row(b.row); r != nil {
				ratio, ok := s.ratio(r)
				ci, haveCI := s.paired(r)
				out = append(out, barResult{barSpec: b, ratio: ratio, pass: ok && ratio >= b.min, ci: ci, haveCI: haveCI})
			}
		}
	}
	return out
}

// barFor returns the bar of a row, if it has one.
func barFor(bars []barResult, s *section, r *row) (barResult, bool) {
	for _, b := range bars {
		if b.section == s.id && b.row == r.id {
			return b, true
		}
	}
	return barResult{}, false
}
