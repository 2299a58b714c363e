// Package detach runs work that must be able to outlive the call waiting for
// it: a create that a Lock cannot abandon once sent (its outcome must be
// known, to remove what it made) while the Lock itself must return when its
// context ends. Such a call hands the work to another goroutine and waits for
// it or for its context. A Runner keeps one idle goroutine for the next such
// call, so that an uncontended Lock pays neither a goroutine's start nor the
// growth of its stack (a server call runs deep) every time. A session has
// one Runner, an entry of the sessionlocal.Table its context carries; the
// recipes on the session take it from there (From), so that a process keeps
// at most one idle goroutine per session, however many lock handles it
// makes. The ZooKeeper
// driver keeps one per connection for its calls under a context that can
// end.
package detach

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coordkit/coordkit/internal/sessionlocal"
)

// IdleTimeout is how long a Runner's idle goroutine waits for work before it
// exits.
const IdleTimeout = 5 * time.Second

// Runner runs functions on goroutines that may be reused. It keeps at most
// one idle goroutine, which exits after IdleTimeout without work or when done
// is closed (the session's end: its owner). A Runner is safe for concurrent
// use; make it with New.
type Runner struct {
	done    <-chan struct{}
	idleFor time.Duration
	mu      sync.Mutex
	idle    *worker
}

type worker struct {
	r    *Runner
	work chan func()
}

// New returns a Runner whose goroutines exit, once idle, when done is closed.
func New(done <-chan struct{}) *Runner { return &Runner{done: done, idleFor: IdleTimeout} }

// runnerKey is the Runner's key in a session's sessionlocal.Table.
type runnerKey struct{}

// From returns the Runner of the session whose context ctx is, or derives
// from: one per sessionlocal.Table, made by the first From, with ctx's end
// as its done. session.New calls it first, with the session's own context,
// so that the idle goroutine exits when the session ends. Without a Table,
// From returns nil, which Go takes as "a new goroutine every time".
func From(ctx context.Context) *Runner {
	if sessionlocal.From(ctx) == nil {
		return nil
	}
	return sessionlocal.Get(ctx, runnerKey{}, func() *Runner { return New(ctx.Done()) })
}

// Go runs f on r's idle goroutine, or on a new one if none is idle. A nil
// Runner starts a new goroutine every time.
func (r *Runner) Go(f func()) {
	if r == nil {
		go f()
		return
	}
	r.mu.Lock()
	w := r.idle
	r.idle = nil
	r.mu.Unlock()
	if w == nil {
		w = &worker{r: r, work: make(chan func())}
		go w.loop(f)
		return
	}
	w.work <- f
}

// loop runs f, then waits, idle, for more work.
func (w *worker) loop(f func()) {
	var timer *time.Timer
	for {
		f()
		w.r.mu.Lock()
		if w.r.idle != nil {
			// One idle goroutine is enough.
			w.r.mu.Unlock()
			return
		}
		w.r.idle = w
		w.r.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(w.r.idleFor)
		} else {
			timer.Reset(w.r.idleFor)
		}
		select {
		case f = <-w.work:
			timer.Stop()
			continue
		case <-timer.C:
		case <-w.r.done:
			timer.Stop()
		}
		w.r.mu.Lock()
		if w.r.idle == w {
			w.r.idle = nil
			w.r.mu.Unlock()
			return
		}
		w.r.mu.Unlock()
		// Go took this goroutine before it could leave: its work is on
		// the way.
		f = <-w.work
	}
}

// Call runs f on r and returns its result, or, if ctx ends first, ctx's
// error at once (ok false): f goes on, and abandoned receives its result
// when it returns. Under a ctx that can never end f runs on the caller's
// goroutine.
func Call[T any](ctx context.Context, r *Runner, f func() T, abandoned func(T)) (v T, ok bool) {
	if ctx.Done() == nil {
		return f(), true
	}
	ch := make(chan T, 1)
	var claimed atomic.Bool
	r.Go(func() {
		v := f()
		if claimed.CompareAndSwap(false, true) {
			ch <- v
			return
		}
		abandoned(v)
	})
	select {
	case v := <-ch:
		return v, true
	case <-ctx.Done():
		if claimed.CompareAndSwap(false, true) {
			return v, false
		}
		return <-ch, true
	}
}
