package fairlock_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/coordkit/coordkit/recipes/fairlock"
	"github.com/coordkit/coordkit/recipes/internal/locktest"
	"github.com/coordkit/coordkit/session"
)

// These benchmarks run on the in-memory driver: they measure the recipe's
// own cost (allocations, goroutines, bookkeeping), not a server's. The
// real-server benchmarks are in the integration module.

// benchLocks returns n Locks on path, each on a session of its own, all on
// one memory driver.
func benchLocks(b *testing.B, path string, n int) []*fairlock.Lock {
	b.Helper()
	drv := locktest.NewDriver(b)
	locks := make([]*fairlock.Lock, n)
	for i := range locks {
		l, err := fairlock.New(locktest.OpenSession(b, drv, session.WithTTL(time.Minute)), path)
		if err != nil {
			b.Fatal(err)
		}
		locks[i] = l
	}
	return locks
}

// BenchmarkUncontended: one Lock + Unlock cycle with nobody else queued.
func BenchmarkUncontended(b *testing.B) {
	benchUncontended(b, context.Background())
}

// BenchmarkUncontendedCancellable: as BenchmarkUncontended with a ctx that
// can be cancelled, which runs the create on its own goroutine.
func BenchmarkUncontendedCancellable(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	benchUncontended(b, ctx)
}

func benchUncontended(b *testing.B, ctx context.Context) {
	l := benchLocks(b, "/bench/uncontended", 1)[0]
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
	locks := benchLocks(b, "/bench/contended", 4)
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
