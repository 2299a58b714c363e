package detach

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit/internal/sessionlocal"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// idle returns r's idle worker, or nil.
func idle(r *Runner) *worker {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.idle
}

// await waits until cond holds for r's idle worker and returns it.
func await(t *testing.T, r *Runner, what string, cond func(*worker) bool) *worker {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if w := idle(r); cond(w) {
			return w
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal(what)
	return nil
}

func idleWorker(t *testing.T, r *Runner) *worker {
	t.Helper()
	return await(t, r, "no idle worker", func(w *worker) bool { return w != nil })
}

func waitNoIdle(t *testing.T, r *Runner) {
	t.Helper()
	await(t, r, "the idle goroutine did not exit", func(w *worker) bool { return w == nil })
}

// Work after work runs on the same goroutine; the idle one exits when done
// closes (goleak checks that none is left).
func TestReuse(t *testing.T) {
	done := make(chan struct{})
	r := New(done)
	ran := make(chan int, 3)
	r.Go(func() { ran <- 1 })
	<-ran
	first := idleWorker(t, r)
	r.Go(func() { ran <- 2 })
	if got := <-ran; got != 2 {
		t.Fatalf("ran %d", got)
	}
	if again := idleWorker(t, r); again != first {
		t.Fatal("the second work did not reuse the idle goroutine")
	}
	close(done)
	waitNoIdle(t, r)
}

// Concurrent work all runs; afterwards at most one goroutine stays idle.
func TestConcurrent(t *testing.T) {
	done := make(chan struct{})
	defer close(done)
	r := New(done)
	var wg sync.WaitGroup
	var mu sync.Mutex
	count := 0
	for range 50 {
		wg.Add(1)
		go func() {
			r.Go(func() {
				defer wg.Done()
				mu.Lock()
				count++
				mu.Unlock()
			})
		}()
	}
	wg.Wait()
	if count != 50 {
		t.Fatalf("%d of 50 ran", count)
	}
	idleWorker(t, r)
}

// An idle goroutine exits after the idle timeout.
func TestIdleTimeout(t *testing.T) {
	r := &Runner{done: make(chan struct{}), idleFor: 10 * time.Millisecond}
	r.Go(func() {})
	idleWorker(t, r)
	waitNoIdle(t, r)
	// A Runner whose goroutine left starts another.
	ran := make(chan struct{})
	r.Go(func() { close(ran) })
	<-ran
	waitNoIdle(t, r)
}

func TestCall(t *testing.T) {
	done := make(chan struct{})
	defer close(done)
	r := New(done)
	never := func(int) { t.Error("abandoned called for a result that was taken") }

	if v, ok := Call(context.Background(), r, func() int { return 7 }, never); v != 7 || !ok {
		t.Fatalf("Call under Background = %d, %v", v, ok)
	}
	if idle(r) != nil {
		t.Fatal("Call under Background used a goroutine")
	}

	ctx, cancel := context.WithCancel(context.Background())
	if v, ok := Call(ctx, r, func() int { return 8 }, never); v != 8 || !ok {
		t.Fatalf("Call = %d, %v", v, ok)
	}

	release := make(chan struct{})
	got := make(chan int, 1)
	go func() {
		time.Sleep(5 * time.Millisecond)
		cancel()
	}()
	v, ok := Call(ctx, r, func() int { <-release; return 9 }, func(v int) { got <- v })
	if ok || v != 0 {
		t.Fatalf("Call whose ctx ended first = %d, %v; want 0, false", v, ok)
	}
	close(release)
	if v := <-got; v != 9 {
		t.Fatalf("abandoned got %d, want 9", v)
	}
}

// From finds the Runner a context carries, also through contexts derived
// from it, and nil where none was put.
func TestFrom(t *testing.T) {
	ctx, cancel := context.WithCancel(sessionlocal.WithTable(context.Background(), sessionlocal.New()))
	r := From(ctx)
	if r == nil || From(ctx) != r {
		t.Fatal("From: not one Runner per Table")
	}
	child, cancelChild := context.WithCancel(ctx)
	defer cancelChild()
	if From(child) != r {
		t.Fatal("From of a derived context: not the parent's Runner")
	}
	if From(sessionlocal.WithTable(context.Background(), sessionlocal.New())) == r {
		t.Fatal("From on another Table: the same Runner")
	}
	if From(context.Background()) != nil {
		t.Fatal("From of a context without a Table: want nil")
	}
	// The Runner ends with the context it was made from: its idle
	// goroutine exits once ctx is cancelled.
	ran := make(chan struct{})
	r.Go(func() { close(ran) })
	<-ran
	idleWorker(t, r)
	cancel()
	waitNoIdle(t, r)

	var none *Runner
	started := make(chan struct{})
	none.Go(func() { close(started) }) // a nil Runner starts a goroutine
	<-started
}
