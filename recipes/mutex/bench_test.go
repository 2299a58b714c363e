package mutex_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// Benchmarks on the in-memory backend measure the recipe's own overhead
// and its server requests per operation (no network: see the integration
// module for ZooKeeper and etcd).

func benchSession(b *testing.B, drv *memory.Driver) *session.Session {
	b.Helper()
	s, err := session.New(context.Background(), drv, session.WithTTL(10*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func reportRequests(b *testing.B, drv *memory.Driver, before memory.Stats) {
	after := drv.Stats()
	b.ReportMetric(float64(after.Requests-before.Requests)/float64(b.N), "requests/op")
	b.ReportMetric(float64(after.WatchEvents-before.WatchEvents)/float64(b.N), "watch-events/op")
}

// BenchmarkUncontended is one goroutine locking and unlocking.
func BenchmarkUncontended(b *testing.B) {
	drv := memory.New()
	defer drv.Close()
	m, _ := mutex.New(benchSession(b, drv), "/bench")
	ctx := context.Background()
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
	drv := memory.New()
	defer drv.Close()
	m, _ := mutex.New(benchSession(b, drv), "/bench")
	benchGoroutines(b, drv, []*mutex.Mutex{m}, 32)
}

// BenchmarkSessions4 is 4 sessions, one goroutine each, contending.
func BenchmarkSessions4(b *testing.B) {
	drv := memory.New()
	defer drv.Close()
	var ms []*mutex.Mutex
	for range 4 {
		m, _ := mutex.New(benchSession(b, drv), "/bench")
		ms = append(ms, m)
	}
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
