package fence_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/fence"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait is the bound for what must happen promptly.
const wait = 5 * time.Second

// awaitData waits until the node at path holds want, re-reading it each
// time a watch on it fires (no polling), and fails the test if it does not
// within the bound.
func awaitData(t *testing.T, c backend.Conn, path, want, what string) {
	t.Helper()
	deadline := time.After(wait)
	for {
		n, exists, w, err := c.Watch(context.Background(), path)
		if err != nil {
			t.Fatalf("%s: watch %s: %v", what, path, err)
		}
		if exists && string(n.Data) == want {
			w.Stop()
			return
		}
		select {
		case <-w.C():
			w.Stop()
		case <-deadline:
			w.Stop()
			t.Fatalf("%s: %s holds %q (exists %v), not %q, after %v", what, path, n.Data, exists, want, wait)
		}
	}
}

func open(t *testing.T, drv *memory.Driver) *session.Session {
	t.Helper()
	s, err := session.New(context.Background(), drv, session.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// twoSessions returns a memory driver, two sessions a and b on it, and
// the data node /data/config ("v0", made by a), all gone when t ends.
func twoSessions(t *testing.T) (drv *memory.Driver, a, b *session.Session) {
	t.Helper()
	drv = memory.New()
	t.Cleanup(func() { drv.Close() })
	a, b = open(t, drv), open(t, drv)
	ctx := context.Background()
	if _, err := a.Conn().Create(ctx, "/data/config", []byte("v0"), backend.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Conn().Delete(ctx, "/data/config", backend.AnyVersion) })
	return drv, a, b
}

func TestSetWritesOnlyWhileHeld(t *testing.T) {
	ctx := context.Background()
	drv, a, b := twoSessions(t)
	ma, _ := mutex.New(a, "/locks/config")
	mb, _ := mutex.New(b, "/locks/config")

	ga, err := ma.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fence.Set(ctx, a.Conn(), ga, "/data/config", []byte("v1"), backend.AnyVersion); err != nil {
		t.Fatalf("Set while held: %v", err)
	}
	// Another process marks the owner node while it waits: the fence
	// must still hold (it does not compare the owner node's version).
	// The goroutine reports to the test, never to t: if the test fails
	// first, its Lock ends with b's session (closed at cleanup) after the
	// test has returned.
	type locked struct {
		g   *mutex.Guard
		err error
	}
	got := make(chan locked, 1)
	go func() {
		g, err := mb.Lock(ctx)
		got <- locked{g, err}
	}()
	awaitData(t, a.Conn(), ga.Fence().Path, mutex.ContendedMark, "b to mark the owner node")
	if _, err := fence.Set(ctx, a.Conn(), ga, "/data/config", []byte("v2"), backend.AnyVersion); err != nil {
		t.Fatalf("Set while held and contended: %v", err)
	}

	// The holder's node is deleted behind its back (an operator, or an
	// expiry it has not heard of) and b takes the lock: a's write is
	// refused by the server even before a's guard has noticed.
	stale := staleHeld{ga}
	if err := a.Conn().Delete(ctx, ga.Fence().Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	var gb *mutex.Guard
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("b's Lock: %v", r.err)
		}
		gb = r.g
	case <-time.After(wait):
		t.Fatalf("b did not get the lock within %v of the holder's node going", wait)
	}
	_, err = fence.Set(ctx, a.Conn(), stale, "/data/config", []byte("stale"), backend.AnyVersion)
	if !errors.Is(err, fence.ErrStale) || !errors.Is(err, recipes.ErrLost) || !errors.Is(err, backend.ErrGuardFailed) {
		t.Fatalf("stale Set: %v, want ErrStale (ErrLost, ErrGuardFailed)", err)
	}
	// Once the guard has ended, Set refuses without a round trip.
	select {
	case <-ga.Done():
	case <-time.After(wait):
		t.Fatalf("a's guard did not end within %v of its node going", wait)
	}
	before := drv.SessionStats(a.ID()).Requests
	if _, err := fence.Set(ctx, a.Conn(), ga, "/data/config", []byte("stale"), backend.AnyVersion); !errors.Is(err, fence.ErrStale) {
		t.Fatalf("Set after the hold ended: %v", err)
	}
	if drv.SessionStats(a.ID()).Requests != before {
		t.Error("a refused Set reached the server")
	}
	if _, err := fence.Set(ctx, b.Conn(), gb, "/data/config", []byte("v3"), backend.AnyVersion); err != nil {
		t.Fatalf("new holder's Set: %v", err)
	}
	n, _ := b.Conn().Get(ctx, "/data/config")
	if string(n.Data) != "v3" {
		t.Fatalf("data %q, want v3", n.Data)
	}
	// Errors of the write itself pass through.
	if _, err := fence.Set(ctx, b.Conn(), gb, "/data/missing", nil, backend.AnyVersion); !errors.Is(err, backend.ErrNoNode) || errors.Is(err, fence.ErrStale) {
		t.Fatalf("Set of a missing node: %v", err)
	}
	if _, err := fence.Set(ctx, b.Conn(), gb, "/data/config", nil, 0); !errors.Is(err, backend.ErrBadVersion) {
		t.Fatalf("Set with a wrong version: %v", err)
	}
	if _, err := fence.Set(ctx, nil, gb, "/data/config", nil, 0); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Fatalf("nil conn: %v", err)
	}
	var none *mutex.Guard // what a failed Lock leaves
	if _, err := fence.Set(ctx, b.Conn(), none, "/data/config", nil, 0); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Fatalf("nil *mutex.Guard: %v", err)
	}
	if _, err := fence.Set(ctx, b.Conn(), nil, "/data/config", nil, 0); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Fatalf("nil hold: %v", err)
	}
	ga.Unlock(ctx)
	// A released hold's write says so: released, not lost.
	gb.Unlock(ctx)
	_, err = fence.Set(ctx, b.Conn(), gb, "/data/config", []byte("late"), backend.AnyVersion)
	if !errors.Is(err, fence.ErrStale) || !errors.Is(err, recipes.ErrReleased) || errors.Is(err, recipes.ErrLost) {
		t.Fatalf("Set after Unlock: %v, want ErrStale and ErrReleased, not ErrLost", err)
	}
}

// staleHeld is a hold that has not noticed yet that it is gone: a paused
// process's view.
type staleHeld struct{ recipes.Held }

func (staleHeld) Err() error { return nil }

// SessionID passes the Guard's on, so that Set knows the holder's connection.
func (h staleHeld) SessionID() string { return h.Held.(interface{ SessionID() string }).SessionID() }

// lockConfig takes the mutex at /locks/config on s.
func lockConfig(t *testing.T, s *session.Session) *mutex.Guard {
	t.Helper()
	m, err := mutex.New(s, "/locks/config")
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestSetOnAnExpiredSession: the server has expired the holder's session
// and its connection already says so, but the hold has not heard of it yet.
// Set writes nothing, and its error says the hold is stale (ErrStale,
// ErrLost, and the reason), as for a write the server refused, so that a
// caller who stops on ErrStale does not retry a hold that is gone.
func TestSetOnAnExpiredSession(t *testing.T) {
	drv, a, b := twoSessions(t)
	ctx := context.Background()
	g := lockConfig(t, a)
	if err := drv.Expire(a.ID()); err != nil {
		t.Fatal(err)
	}
	_, err := fence.Set(ctx, a.Conn(), staleHeld{g}, "/data/config", []byte("stale"), backend.AnyVersion)
	if !errors.Is(err, fence.ErrStale) || !errors.Is(err, recipes.ErrLost) || !errors.Is(err, coordkit.ErrSessionLost) {
		t.Fatalf("Set through an expired session: %v, want ErrStale, ErrLost and ErrSessionLost", err)
	}
	awaitData(t, b.Conn(), "/data/config", "v0", "the data after a Set through an expired session")
	g.Unlock(ctx)
}

// TestSetThroughAnotherEndedSession: the connection passed to Set is not
// the holder's, and its own session has ended. That says nothing of the
// hold: the error is the backend's, not ErrStale, and the hold lives on.
func TestSetThroughAnotherEndedSession(t *testing.T) {
	drv, a, b := twoSessions(t)
	ctx := context.Background()
	g := lockConfig(t, a)
	defer g.Unlock(ctx)
	if err := drv.Expire(b.ID()); err != nil {
		t.Fatal(err)
	}
	_, err := fence.Set(ctx, b.Conn(), g, "/data/config", []byte("v1"), backend.AnyVersion)
	if !errors.Is(err, coordkit.ErrSessionLost) || errors.Is(err, fence.ErrStale) || errors.Is(err, recipes.ErrLost) {
		t.Fatalf("Set through another, expired session: %v, want its ErrSessionLost, not ErrStale or ErrLost", err)
	}
	if g.Err() != nil {
		t.Fatalf("the hold ended: %v", g.Err())
	}
	if _, err := fence.Set(ctx, a.Conn(), g, "/data/config", []byte("v1"), backend.AnyVersion); err != nil {
		t.Fatalf("Set through the holder's connection: %v", err)
	}
}

func TestRegister(t *testing.T) {
	r := fence.NewRegister("empty")
	if v, hi := r.Load(); v != "empty" || hi != 0 {
		t.Fatalf("Load = %q, %d", v, hi)
	}
	if err := r.Store(5, "five"); err != nil {
		t.Fatal(err)
	}
	if err := r.Store(5, "five again"); err != nil {
		t.Fatalf("equal token refused: %v", err)
	}
	if err := r.Store(4, "four"); !errors.Is(err, fence.ErrStaleToken) {
		t.Fatalf("smaller token: %v", err)
	}
	if err := r.Admit(9); err != nil {
		t.Fatal(err)
	}
	if err := r.Store(5, "five"); !errors.Is(err, fence.ErrStaleToken) {
		t.Fatalf("token below an admitted one: %v", err)
	}
	if v, hi := r.Load(); v != "five again" || hi != 9 {
		t.Fatalf("Load = %q, %d", v, hi)
	}
	if acc, ref := r.Counts(); acc != 3 || ref != 2 {
		t.Fatalf("Counts = %d, %d", acc, ref)
	}
	var zero fence.Register[int]
	if err := zero.Store(0, 1); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterConcurrent(t *testing.T) {
	var r fence.Register[int64]
	var wg sync.WaitGroup
	for tok := range int64(50) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Store(tok, tok)
		}()
	}
	wg.Wait()
	v, hi := r.Load()
	if hi != 49 || v != 49 {
		t.Fatalf("Load = %d, %d: a smaller token overwrote a larger one", v, hi)
	}
}
