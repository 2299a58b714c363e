// Package locktest is test support for the recipes: a coordination service
// on the in-memory driver with an operator's connection, sessions that are
// closed when the test ends, and helpers that lock, unlock and wait for
// conditions within a bound. Only the recipes' tests import it.
package locktest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/session"
)

// World is one in-memory coordination service with an operator's
// connection, which tests use to look at (and tamper with) the tree.
type World struct {
	T   testing.TB
	Drv *memory.Driver
	Obs backend.Conn // the operator's connection, for listing and deleting
}

// NewWorld starts a World that is shut down when the test ends.
func NewWorld(t testing.TB) *World {
	t.Helper()
	drv := NewDriver(t)
	obs, err := drv.Open(context.Background(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return &World{T: t, Drv: drv, Obs: obs}
}

// Session opens a session with a 10s TTL (unless opts say otherwise) that
// is closed when the test ends.
func (w *World) Session(opts ...session.Option) *session.Session {
	w.T.Helper()
	return OpenSession(w.T, w.Drv, append([]session.Option{session.WithTTL(10 * time.Second)}, opts...)...)
}

// Children lists dir as the operator sees it.
func (w *World) Children(dir string) []backend.Node {
	w.T.Helper()
	kids, err := w.Obs.Children(context.Background(), dir)
	if err != nil {
		w.T.Fatal(err)
	}
	return kids
}

// Disconnect cuts s's connection (memory.Driver.Disconnect).
func (w *World) Disconnect(s *session.Session) {
	w.T.Helper()
	if err := w.Drv.Disconnect(s.ID()); err != nil {
		w.T.Fatal(err)
	}
}

// Reconnect restores s's connection (memory.Driver.Reconnect).
func (w *World) Reconnect(s *session.Session) {
	w.T.Helper()
	if err := w.Drv.Reconnect(s.ID()); err != nil {
		w.T.Fatal(err)
	}
}

// Expire expires s on the server (memory.Driver.Expire).
func (w *World) Expire(s *session.Session) {
	w.T.Helper()
	if err := w.Drv.Expire(s.ID()); err != nil {
		w.T.Fatal(err)
	}
}

// NewDriver returns a memory driver that is closed when the test or
// benchmark ends.
func NewDriver(tb testing.TB) *memory.Driver {
	drv := memory.New()
	tb.Cleanup(func() { drv.Close() })
	return drv
}

// OpenSession opens a session on d that is closed when the test or
// benchmark ends.
func OpenSession(tb testing.TB, d backend.Driver, opts ...session.Option) *session.Session {
	tb.Helper()
	s, err := session.New(context.Background(), d, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// Names returns the nodes' names, for messages.
func Names(nodes []backend.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Name
	}
	return out
}

// Eventually waits for cond, checking it every millisecond, and fails the
// test if it does not hold within the bound. It is for conditions no
// channel announces (the server tree, the memory driver's counters, a
// recipe's local state); it never orders events.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Guard is what the helpers need of a recipe's guard.
type Guard interface {
	Done() <-chan struct{}
	Err() error
	Unlock(ctx context.Context) error
}

// Locker is a recipe's lock (a *mutex.Mutex, a *fairlock.Lock).
type Locker[G Guard] interface {
	Lock(ctx context.Context) (G, error)
}

// MustLock locks l, failing the test if Lock fails or does not return
// within the bound.
func MustLock[G Guard](t testing.TB, within time.Duration, l Locker[G]) G {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	g, err := l.Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	return g
}

// MustUnlock unlocks g, failing the test if Unlock fails.
func MustUnlock(t testing.TB, g Guard) {
	t.Helper()
	if err := g.Unlock(context.Background()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

// Ended waits for g's Done and returns its Err; it fails the test if the
// hold does not end within the bound.
func Ended(t testing.TB, within time.Duration, g Guard, what string) error {
	t.Helper()
	select {
	case <-g.Done():
		return g.Err()
	case <-time.After(within):
		t.Fatalf("%s: guard still live after %v", what, within)
		return nil
	}
}

// Concurrently runs f rounds times on each of goroutines goroutines and
// returns when all are done.
func Concurrently(goroutines, rounds int, f func()) {
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range rounds {
				f()
			}
		})
	}
	wg.Wait()
}

// UnlockPanics checks that Unlock of l, which nobody holds, panics (as
// sync.Mutex's does).
func UnlockPanics(t testing.TB, l sync.Locker) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Error("Unlock of an unlocked Locker did not panic")
		}
	}()
	l.Unlock()
}
