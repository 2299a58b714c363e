package mutex_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes/internal/locktest"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// Benchmarks on the in-memory backend measure the recipe's own overhead
// and its server requests per operation (no network: see the integration
// module for ZooKeeper and etcd).

// benchMutexes returns n Mutexes on /bench, each on a session of its own,
// all on one memory driver.
func benchMutexes(b *testing.B, n int) (*memory.Driver, []*mutex.Mutex) {
	drv := locktest.NewDriver(b)
	ms := make([]*mutex.Mutex, n)
	for i := range ms {
		ms[i], _ = mutex.New(locktest.OpenSession(b, drv, session.WithTTL(10*time.Second)), "/bench")
	}
	return drv, ms
}

func reportRequests(b *testing.B, drv *memory.Driver, before memory.Stats) {
	after := drv.Stats()
	b.ReportMetric(float64(after.Requests-before.Requests)/float64(b.N), "requests/op")
	b.ReportMetric(float64(after.WatchEvents-before.WatchEvents)/float64(b.N), "watch-events/op")
}

// BenchmarkUncontended is one goroutine locking and unlocking.
func BenchmarkUncontended(b *testing.B) {
	benchUncontended(b, context.Background())
}

// BenchmarkUncontendedCancellable is BenchmarkUncontended under a context
// that can end, as a request's: Lock then runs its acquisition on another
// goroutine so that it can return at the context's end (see Mutex.Lock),
// and Unlock bounds its release by it.
func BenchmarkUncontendedCancellable(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	benchUncontended(b, ctx)
}

func benchUncontended(b *testing.B, ctx context.Context) {
	drv, ms := benchMutexes(b, 1)
	m := ms[0]
	before := drv.Stats()
	for b.Loop() {
		g, err := m.Lock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		g.Unlock(ctx)
	}
	reportRequests(b, drv, before)
}

// BenchmarkGoroutines32 is 32 goroutines of one session contending.
func BenchmarkGoroutines32(b *testing.B) {
	drv, ms := benchMutexes(b, 1)
	benchGoroutines(b, drv, ms, 32)
}

// BenchmarkSessions4 is 4 sessions, one goroutine each, contending.
func BenchmarkSessions4(b *testing.B) {
	drv, ms := benchMutexes(b, 4)
	benchGoroutines(b, drv, ms, 4)
}

// benchGoroutines runs b.N critical sections spread over n goroutines,
// assigned round robin to the Mutexes.
func benchGoroutines(b *testing.B, drv *memory.Driver, ms []*mutex.Mutex, n int) {
	ctx := context.Background()
	var wg sync.WaitGroup
	work := make(chan struct{}, n)
	before := drv.Stats()
	b.ResetTimer()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := ms[i%len(ms)]
			for range work {
				g, err := m.Lock(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				g.Unlock(ctx)
			}
		}()
	}
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	b.StopTimer()
	reportRequests(b, drv, before)
}
