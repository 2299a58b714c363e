package fairlock_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes/fairlock"
	"github.com/coordkit/coordkit/session"
)

// These benchmarks run on the in-memory driver: they measure the recipe's
// own cost (allocations, goroutines, bookkeeping), not a server's. The
// real-server benchmarks are in the integration module.

func benchSession(b *testing.B, drv *memory.Driver) *session.Session {
	b.Helper()
	s, err := session.New(context.Background(), drv, session.WithTTL(time.Minute))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// BenchmarkUncontended: one Lock + Unlock cycle with nobody else queued.
func BenchmarkUncontended(b *testing.B) {
	drv := memory.New()
	b.Cleanup(func() { drv.Close() })
	l, err := fairlock.New(benchSession(b, drv), "/bench/uncontended")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		g, err := l.Lock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := g.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acquires/s")
}

// BenchmarkUncontendedCancellable: as BenchmarkUncontended with a ctx that
// can be cancelled, which runs the create on its own goroutine.
func BenchmarkUncontendedCancellable(b *testing.B) {
	drv := memory.New()
	b.Cleanup(func() { drv.Close() })
	l, err := fairlock.New(benchSession(b, drv), "/bench/uncontended")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		g, err := l.Lock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := g.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acquires/s")
}

// BenchmarkContended4Sessions: four sessions, one goroutine each, take
// turns; every acquisition but the first is a handoff through a watch.
func BenchmarkContended4Sessions(b *testing.B) {
	drv := memory.New()
	b.Cleanup(func() { drv.Close() })
	const n = 4
	locks := make([]*fairlock.Lock, n)
	for i := range locks {
		l, err := fairlock.New(benchSession(b, drv), "/bench/contended")
		if err != nil {
			b.Fatal(err)
		}
		locks[i] = l
	}
	ctx := context.Background()
	work := make(chan struct{}, b.N)
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	b.ResetTimer()
	var wg sync.WaitGroup
	for _, l := range locks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				g, err := l.Lock(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				if err := g.Unlock(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acquires/s")
}
