package mutex_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/internal/locktest"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// TestSoloHandsOverToLocalWaiters: the first goroutine locks on the solo
// path (no loop); goroutines that come while it holds queue in the loop,
// and its Unlock hands the acquisition over: they get the lock by local
// handoff, with the same token and no request to the server, and a local
// TryLock is refused without one.
func TestSoloHandsOverToLocalWaiters(t *testing.T) {
	w := newWorld(t)
	s := w.session()
	m := w.mutex(s)
	g := lock(t, m)
	if snap := m.Inspect(); !snap.Held || snap.Token != g.Token() || snap.Waiting != 0 {
		t.Fatalf("Inspect of a solo holder: %+v, token %d", snap, g.Token())
	}
	before := w.Drv.SessionStats(s.ID()).Requests
	if _, err := m.TryLock(context.Background()); !errors.Is(err, recipes.ErrLocked) {
		t.Fatalf("local TryLock while a solo goroutine holds: %v, want ErrLocked", err)
	}
	got := lockAsync(t, m)
	waitFor(t, "a local waiter", func() bool { return m.Inspect().Waiting == 1 })
	got2 := lockAsync(t, m)
	waitFor(t, "two local waiters", func() bool { return m.Inspect().Waiting == 2 })
	unlock(t, g)
	g1 := granted(t, got)
	if g1.Token() != g.Token() {
		t.Fatalf("local handoff token %d, want the solo acquisition's %d", g1.Token(), g.Token())
	}
	unlock(t, g1)
	g2 := granted(t, got2)
	if got := w.Drv.SessionStats(s.ID()).Requests - before; got != 0 {
		t.Errorf("the refused TryLock and two local handoffs cost %d requests, want 0", got)
	}
	unlock(t, g2)
	if err := g.Err(); !errors.Is(err, recipes.ErrReleased) {
		t.Errorf("the solo guard after Unlock: %v", err)
	}
	waitFor(t, "the lock to be released", func() bool { _, ok := w.owner(); return !ok })
	w.empty()
}

// TestSoloHandsOverWhileAcquiring: the solo goroutine waits at the server
// (another session holds); a local goroutine that comes meanwhile queues in
// the loop and gets the lock from the solo goroutine's acquisition once
// that one is unlocked.
func TestSoloHandsOverWhileAcquiring(t *testing.T) {
	w := newWorld(t)
	other, first, second := soloWaitsAtServer(context.Background(), t, w)
	unlock(t, other)
	r1 := <-first
	if r1.err != nil {
		t.Fatal(r1.err)
	}
	g1 := r1.g
	if g1.Token() <= other.Token() {
		t.Fatalf("token %d after %d", g1.Token(), other.Token())
	}
	unlock(t, g1)
	g2 := granted(t, second)
	if g2.Token() != g1.Token() {
		t.Fatalf("second goroutine's token %d, want the handed-off %d", g2.Token(), g1.Token())
	}
	unlock(t, g2)
	w.empty()
}

// TestSoloFailureHandsWaitersToTheLoop: a solo Lock whose ctx ends while it
// waits at the server fails; a local goroutine that queued behind it in the
// meantime is served by the loop, which acquires for it.
func TestSoloFailureHandsWaitersToTheLoop(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	other, first, second := soloWaitsAtServer(ctx, t, w)
	cancel()
	if r := <-first; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled solo Lock: guard %v, err %v", r.g != nil, r.err)
	}
	unlock(t, other)
	g := granted(t, second)
	if g.Token() <= other.Token() {
		t.Fatalf("token %d after %d", g.Token(), other.Token())
	}
	unlock(t, g)
	w.empty()
}

// TestSoloHolderSessionEnds: a solo holder whose session is closed while a
// local goroutine waits in the loop: the waiter fails with the session's
// error, the holder's Guard has ended, its Unlock returns nil, and nothing
// is left running (goleak in TestMain).
func TestSoloHolderSessionEnds(t *testing.T) {
	w := newWorld(t)
	s := w.session()
	m := w.mutex(s)
	g := lock(t, m)
	errs := lockErrs(m)
	waitFor(t, "the local waiter", func() bool { return m.Inspect().Waiting == 1 })
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; !errors.Is(err, coordkit.ErrClosed) {
		t.Fatalf("local waiter after Close: %v, want ErrClosed", err)
	}
	if err := ended(t, g); !errors.Is(err, recipes.ErrLost) {
		t.Fatalf("solo guard after Close: %v, want ErrLost", err)
	}
	if err := g.Unlock(context.Background()); err != nil {
		t.Fatalf("Unlock of the lost solo guard: %v", err)
	}
	w.empty()
}

// soloResult is what a Lock returned.
type soloResult struct {
	g   *mutex.Guard
	err error
}

// soloWaitsAtServer makes another session hold the lock, then has a
// goroutine of a second session Lock it with ctx (the solo path: it waits
// at the server, in the queue) and a second goroutine of that session Lock
// it too (it starts the loop and waits there). It returns the other
// session's Guard and the two Locks' outcomes.
func soloWaitsAtServer(ctx context.Context, t *testing.T, w *world) (*mutex.Guard, <-chan soloResult, <-chan *mutex.Guard) {
	t.Helper()
	ma, mb := w.mutex(w.session()), w.mutex(w.session())
	other := lock(t, mb)
	first := make(chan soloResult, 1)
	go func() {
		g, err := ma.Lock(ctx)
		first <- soloResult{g, err}
	}()
	waitFor(t, "the solo goroutine to queue at the server", func() bool { return len(w.queued()) == 1 })
	second := lockAsync(t, ma)
	waitFor(t, "the second goroutine to wait", func() bool { return ma.Inspect().Waiting == 2 })
	return other, first, second
}

// TestSoloUnlockBoundedByContext: a solo Unlock runs its release on its own
// goroutine, bounded by its ctx. A ctx that can end but does not costs
// nothing more (the two requests of the cycle). A ctx that ends while the
// release cannot reach the server returns its error at once, and the
// release goes on in the background: once reconnected, the owner node goes
// and another session gets the lock.
func TestSoloUnlockBoundedByContext(t *testing.T) {
	w := newWorld(t)
	s := w.session()
	m := w.mutex(s)
	cctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, err := m.Lock(cctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Unlock(cctx); err != nil {
		t.Fatal(err)
	}
	before := w.Drv.SessionStats(s.ID()).Requests
	g, err = m.Lock(cctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Unlock(cctx); err != nil {
		t.Fatal(err)
	}
	if got := w.Drv.SessionStats(s.ID()).Requests - before; got != 2 {
		t.Errorf("a cycle under a cancellable ctx cost %d requests, want 2", got)
	}

	g = lock(t, m)
	w.Disconnect(s)
	short, stop := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer stop()
	if err := g.Unlock(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Unlock whose ctx ended while disconnected: %v, want DeadlineExceeded", err)
	}
	if _, ok := w.owner(); !ok {
		t.Fatal("the owner node went while the session was disconnected")
	}
	w.Reconnect(s)
	other := w.mutex(w.session())
	g2, err := other.Lock(cctx)
	if err != nil {
		t.Fatalf("another session's Lock after the background release: %v", err)
	}
	if g2.Token() <= g.Token() {
		t.Fatalf("token %d after %d", g2.Token(), g.Token())
	}
	unlock(t, g2)
	waitFor(t, "the solo state to leave", func() bool { snap := m.Inspect(); return !snap.Held && snap.Waiting == 0 })
	w.empty()
}

// TestSoloLockBoundedByContext: the server stops answering (Stall) while a
// solo Lock's (or TryLock's) create is in flight. The call returns when its
// ctx ends, not when the server answers again; the abandoned attempt goes
// on in the background. Meanwhile a local TryLock is refused with no request
// and a local Lock waits for the attempt. When the server answers, the
// attempt's owner node is released (not granted to anybody), the waiting
// Lock gets the lock with a later create, and nothing is left.
func TestSoloLockBoundedByContext(t *testing.T) {
	for _, try := range []bool{false, true} {
		name := "Lock"
		if try {
			name = "TryLock"
		}
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			sent := make(chan struct{}, 1)
			s := locktest.OpenSession(t, createSignal{w.Drv, sent}, session.WithTTL(10*time.Second))
			m := w.mutex(s)
			if err := w.Drv.Stall(s.ID()); err != nil {
				t.Fatal(err)
			}
			// The ctx ends once the owner node's create is on its way to the
			// silent server (not after a fixed time, which a late goroutine
			// could spend before Lock even starts).
			short, stop := context.WithCancel(context.Background())
			defer stop()
			errc := make(chan error, 1)
			go func() {
				var err error
				if try {
					_, err = m.TryLock(short)
				} else {
					_, err = m.Lock(short)
				}
				errc <- err
			}()
			select {
			case <-sent:
			case err := <-errc:
				t.Fatalf("%s returned before its create: %v", name, err)
			case <-time.After(timeout):
				t.Fatalf("%s did not send its create within %v", name, timeout)
			}
			waitFor(t, "the create to wait at the silent server", func() bool { return w.Drv.Stalled(s.ID()) == 1 })
			stop()
			select {
			case err := <-errc:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("%s whose ctx ended while the server was silent: %v, want Canceled", name, err)
				}
			case <-time.After(timeout):
				t.Fatalf("%s did not return within %v of its ctx's end while the server was silent", name, timeout)
			}
			// The create is still waiting: the call did not wait for it.
			if n := w.Drv.Stalled(s.ID()); n != 1 {
				t.Fatalf("%d calls wait at the silent server after %s returned, want 1 (the abandoned create)", n, name)
			}
			if snap := m.Inspect(); !snap.Finishing || snap.Waiting != 0 || snap.Held {
				t.Fatalf("Inspect while the abandoned attempt goes on: %+v", snap)
			}
			before := w.Drv.SessionStats(s.ID()).Requests
			if _, err := m.TryLock(context.Background()); !errors.Is(err, recipes.ErrLocked) {
				t.Fatalf("local TryLock while an abandoned attempt goes on: %v, want ErrLocked", err)
			}
			got := lockAsync(t, m)
			waitFor(t, "the local Lock to wait", func() bool { snap := m.Inspect(); return snap.Waiting == 1 && snap.Finishing })
			if err := w.Drv.Unstall(s.ID()); err != nil {
				t.Fatal(err)
			}
			g := granted(t, got)
			// The abandoned create, its release, the waiting Lock's create.
			if got := w.Drv.SessionStats(s.ID()).Requests - before; got < 3 {
				t.Errorf("after the refused TryLock: %d requests, want at least 3", got)
			}
			n, ok := w.owner()
			if !ok || n.Token != g.Token() {
				t.Fatalf("owner node %+v (exists %v), the local Lock's token %d", n, ok, g.Token())
			}
			unlock(t, g)
			waitFor(t, "the path state to leave", func() bool { return m.Inspect() == (mutex.Snapshot{}) })
			w.empty()
		})
	}
}

// createSignal opens Conns that report each stamped create (the owner
// node's) on sent, without blocking, before passing it on; they keep
// backend.ParentStamps, so the mutex takes the same path as on the memory
// driver's own Conns.
type createSignal struct {
	backend.Driver
	sent chan<- struct{}
}

func (d createSignal) Open(ctx context.Context, ttl time.Duration) (backend.Conn, error) {
	c, err := d.Driver.Open(ctx, ttl)
	if err != nil {
		return nil, err
	}
	return signalConn{c, c.(backend.ParentStamps), d.sent}, nil
}

type signalConn struct {
	backend.Conn
	stamps backend.ParentStamps
	sent   chan<- struct{}
}

func (c signalConn) CreateStamped(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, backend.Stamp, error) {
	select {
	case c.sent <- struct{}{}:
	default:
	}
	return c.stamps.CreateStamped(ctx, path, data, opts)
}

func (c signalConn) DeleteStamped(ctx context.Context, path string, version int64, st backend.Stamp) error {
	return c.stamps.DeleteStamped(ctx, path, version, st)
}

func (c signalConn) Unpin(ctx context.Context, st backend.Stamp) error {
	return c.stamps.Unpin(ctx, st)
}
