package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/internal/locktest"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// staleUnlock: A holds; tamper does an operator's damage; B takes the lock
// (a new owner node at the same path, with the same data version on
// ZooKeeper-like backends), then A unlocks. A's Unlock must not delete B's
// node: a third process would otherwise get the lock while B holds it.
// afterB, if not nil, runs once B holds.
func staleUnlock(t *testing.T, w *world, sA *session.Session, tamper, afterB func(ctx context.Context)) {
	t.Helper()
	ctx := context.Background()
	mA, mB, mC := w.mutex(sA), w.mutex(w.session()), w.mutex(w.session())
	gA := lock(t, mA)
	tamper(ctx)
	gB, err := mB.TryLock(ctx)
	if err != nil {
		t.Fatalf("B's TryLock after the operator's delete: %v", err)
	}
	if gB.Token() <= gA.Token() {
		t.Fatalf("B's token %d is not larger than A's %d", gB.Token(), gA.Token())
	}
	if afterB != nil {
		afterB(ctx)
	}
	if err := gA.Unlock(ctx); err != nil {
		t.Fatalf("A's stale Unlock: %v", err)
	}
	if cur, ok := w.owner(); !ok || cur.Token != gB.Token() {
		t.Fatalf("after A's stale Unlock the owner node is %+v (exists %v), want B's (token %d)", cur, ok, gB.Token())
	}
	if _, err := mC.TryLock(ctx); !errors.Is(err, recipes.ErrLocked) {
		t.Fatalf("C's TryLock while B holds: %v, want ErrLocked", err)
	}
	if gB.Err() != nil {
		t.Fatalf("B's guard ended: %v", gB.Err())
	}
	unlock(t, gB)
	w.empty()
}

// deleteOwner is the operator deleting the owner node only.
func (w *world) deleteOwner(ctx context.Context) {
	w.T.Helper()
	n, ok := w.owner()
	if !ok {
		w.T.Fatal("no owner node")
	}
	if err := w.obs.Delete(ctx, n.Path, backend.AnyVersion); err != nil {
		w.T.Fatal(err)
	}
}

// TestStaleUnlockKeepsNewOwner: the operator deletes A's owner node (A's
// pin keeps the lock's directory): B's stamped create moves the
// directory's version, and A's stamped delete is refused.
func TestStaleUnlockKeepsNewOwner(t *testing.T) {
	w := newWorld(t)
	staleUnlock(t, w, w.session(), w.deleteOwner, nil)
}

// TestStaleUnlockAfterDeleteAll: the operator deletes everything under the
// lock's path, pin included, so the lock's directory goes and is made again
// by B's acquisition: its version starts over, and B's stamp may equal A's.
// The pin A's release checks is gone, so its stamped delete is refused.
func TestStaleUnlockAfterDeleteAll(t *testing.T) {
	w := newWorld(t)
	// firstStamp checks that the lock's directory has its first stamp: A's
	// stamp and B's (each the first under a fresh directory) are equal.
	firstStamp := func(ctx context.Context) {
		t.Helper()
		if d, err := w.obs.Get(ctx, lockPath); err != nil || d.Version != 1 {
			t.Fatalf("lock directory %+v (%v): the case needs the first stamp of a fresh directory", d, err)
		}
	}
	staleUnlock(t, w, w.session(), func(ctx context.Context) {
		firstStamp(ctx)
		for _, n := range w.Children(lockPath) {
			if err := w.obs.Delete(ctx, n.Path, backend.AnyVersion); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := w.obs.Get(ctx, lockPath); !errors.Is(err, backend.ErrNoNode) {
			t.Fatalf("the emptied lock directory is still there (%v): the test needs it made again", err)
		}
	}, firstStamp)
}

// TestLostStampedCreateReply: the reply of the stamped create is lost; the
// node is found by its owner with its stamp unknown. The lock is held all
// the same, and its release reads before it deletes (a stamped delete
// cannot be used) and removes the pin: nothing is left.
func TestLostStampedCreateReply(t *testing.T) {
	w := newWorld(t)
	s := w.session()
	m := w.mutex(s)
	unlock(t, lock(t, m)) // the lock's directory exists from now on
	if err := w.Drv.FailNextReply(s.ID()); err != nil {
		t.Fatal(err)
	}
	g := lock(t, m)
	if n, ok := w.owner(); !ok || n.Token != g.Token() {
		t.Fatalf("owner node %+v (exists %v), token %d", n, ok, g.Token())
	}
	before := w.Drv.SessionStats(s.ID())
	unlock(t, g)
	if got := w.Drv.SessionStats(s.ID()).Requests - before.Requests; got != 3 {
		t.Errorf("the release cost %d requests, want 3 (read, delete, unpin)", got)
	}
	w.empty()
}

// unstampedDriver opens Conns without backend.ParentStamps: the mutex then
// falls back to a watch armed with its create (as on a ZooKeeper lock
// directory the session may not write).
type unstampedDriver struct{ backend.Driver }

func (d unstampedDriver) Open(ctx context.Context, ttl time.Duration) (backend.Conn, error) {
	c, err := d.Driver.Open(ctx, ttl)
	if err != nil {
		return nil, err
	}
	return struct{ backend.Conn }{c}, nil
}

// TestUnstampedRelease: without stamps, an uncontended cycle is the create
// with its watch and a delete by version while the watch is silent (2
// requests), and a stale Unlock still leaves a newer owner node alone (the
// watch fired: the release reads first).
func TestUnstampedRelease(t *testing.T) {
	w := newWorld(t)
	sA := locktest.OpenSession(t, unstampedDriver{w.Drv}, session.WithTTL(10*time.Second))
	mA := w.mutex(sA)
	unlock(t, lock(t, mA))
	before := w.Drv.SessionStats(sA.ID())
	unlock(t, lock(t, mA))
	if got := w.Drv.SessionStats(sA.ID()).Requests - before.Requests; got != 2 {
		t.Errorf("uncontended Lock+Unlock without stamps cost %d requests, want 2 (create and watch, delete)", got)
	}
	staleUnlock(t, w, sA, w.deleteOwner, nil)
}

// TestLostCreateReplyLeavesNoDeadlock: A's create of the owner node is
// applied but its reply is lost (without stamps the memory driver, like
// etcd, reports a connection loss for a fixed-path create), and B queues
// while A's node is there. A's next create finds its own node: it must
// remove it rather than queue behind B, who waits at the head for that very
// node to go. Both get the lock, one after the other.
func TestLostCreateReplyLeavesNoDeadlock(t *testing.T) {
	w := newWorld(t)
	sA := locktest.OpenSession(t, unstampedDriver{w.Drv}, session.WithTTL(10*time.Second))
	sB := locktest.OpenSession(t, unstampedDriver{w.Drv}, session.WithTTL(10*time.Second))
	mA, mB := w.mutex(sA), w.mutex(sB)
	unlock(t, lock(t, mA)) // the lock's directory exists from now on
	if err := w.Drv.FailNextReply(sA.ID()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tokens := make(chan int64, 2)
	errs := make(chan error, 2)
	take := func(m *mutex.Mutex) {
		g, err := m.Lock(ctx)
		if err == nil {
			tokens <- g.Token()
			err = g.Unlock(context.Background())
		}
		errs <- err
	}
	go take(mA)
	waitFor(t, "A's node, whose reply was lost", func() bool { n, ok := w.owner(); return ok && n.Owner == sA.ID() })
	go take(mB)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("Lock or Unlock: %v (the processes wait for each other)", err)
		}
	}
	if a, b := <-tokens, <-tokens; a == b {
		t.Fatalf("both grants have token %d", a)
	}
	w.empty()
}

// An attempt that gives up after its create of the owner node was applied
// with its reply lost (without stamps the memory driver, like etcd, reports
// a connection loss for a fixed-path create) has left an owner node of its
// live session that nobody holds. It must be removed, or every other
// process waits for it as long as the session lives: the tests below give
// up in each way an attempt can (a TryLock's one shot, run on the caller's
// goroutine or detached; a Lock whose ctx ends, alone or through the loop),
// and check that the node goes while the session lives on.

// TestTryLockWithLostReplyLeavesNothing: A's TryLock gets a connection loss
// for a create that was applied. A holds nothing, so its node must go, and
// B then gets the lock.
func TestTryLockWithLostReplyLeavesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"background", func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }},
		{"cancellable", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), timeout)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			sA := locktest.OpenSession(t, unstampedDriver{w.Drv}, session.WithTTL(time.Minute))
			sB := locktest.OpenSession(t, unstampedDriver{w.Drv}, session.WithTTL(time.Minute))
			mA, mB := w.mutex(sA), w.mutex(sB)
			unlock(t, lock(t, mA)) // the lock's directory exists from now on
			if err := w.Drv.FailNextReply(sA.ID()); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := tc.ctx()
			defer cancel()
			if g, err := mA.TryLock(ctx); !errors.Is(err, backend.ErrConnectionLoss) {
				t.Fatalf("TryLock with its reply lost: guard %v, err %v; want a connection loss", g != nil, err)
			}
			waitFor(t, "A's left-over owner node to go", func() bool { _, ok := w.owner(); return !ok })
			waitFor(t, "A to be done with the path", func() bool { return mA.Inspect() == (mutex.Snapshot{}) })
			unlock(t, lock(t, mB))
			w.empty()
		})
	}
}

// TestAbandonedLockWithLostReplyLeavesNothing: A's Lock has its create
// applied with the reply lost, the connection drops before it can find out,
// and its ctx ends: Lock returns, and the node of A's session stays only
// until A can reach the server again. It runs on the solo path (A alone),
// and through the loop (the attempt of a second goroutine of A, queued
// behind another process).
func TestAbandonedLockWithLostReplyLeavesNothing(t *testing.T) {
	for _, viaLoop := range []bool{false, true} {
		t.Run(fmt.Sprintf("loop=%v", viaLoop), func(t *testing.T) {
			w := newWorld(t)
			sA := locktest.OpenSession(t, unstampedDriver{w.Drv}, session.WithTTL(time.Minute))
			mA := w.mutex(sA)
			unlock(t, lock(t, mA)) // the lock's directory exists from now on
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errs := make(chan error, 1)
			try := func() {
				g, err := mA.Lock(ctx)
				if g != nil {
					err = fmt.Errorf("granted: %w", g.Unlock(context.Background()))
				}
				errs <- err
			}
			if viaLoop {
				// A holds while B waits and a second goroutine of A waits
				// in the loop. With no local handoff allowed, A's Unlock
				// lets B in, and the loop queues behind B; once it has
				// marked B's node, its next write is the create, when B
				// lets go.
				mA = w.mutex(sA, mutex.WithMaxLocalHandoffs(0))
				sB := locktest.OpenSession(t, unstampedDriver{w.Drv}, session.WithTTL(time.Minute))
				gA := lock(t, mA)
				bGot := lockAsync(t, w.mutex(sB))
				waitFor(t, "B to mark A's node", func() bool { o, ok := w.owner(); return ok && string(o.Data) == mutex.ContendedMark })
				go try()
				waitFor(t, "A's second Lock to wait in the loop", func() bool { return mA.Inspect().Waiting == 1 })
				unlock(t, gA)
				gB := granted(t, bGot)
				waitFor(t, "the loop's acquirer to mark B's node", func() bool {
					o, ok := w.owner()
					return ok && o.Owner == sB.ID() && string(o.Data) == mutex.ContendedMark
				})
				if err := w.Drv.FailNextReply(sA.ID()); err != nil {
					t.Fatal(err)
				}
				unlock(t, gB)
			} else {
				if err := w.Drv.FailNextReply(sA.ID()); err != nil {
					t.Fatal(err)
				}
				go try()
			}
			waitFor(t, "A's create, whose reply was lost", func() bool { o, ok := w.owner(); return ok && o.Owner == sA.ID() })
			if err := w.Drv.Disconnect(sA.ID()); err != nil {
				t.Fatal(err)
			}
			cancel()
			if err := <-errs; !errors.Is(err, context.Canceled) {
				t.Fatalf("abandoned Lock: %v, want context.Canceled", err)
			}
			if o, ok := w.owner(); !ok || o.Owner != sA.ID() || !mA.Inspect().Finishing {
				t.Fatalf("while A is cut off: owner node %+v (exists %v), A's state %+v; want A's node, still to be removed", o, ok, mA.Inspect())
			}
			if err := w.Drv.Reconnect(sA.ID()); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "A's left-over owner node to go", func() bool { _, ok := w.owner(); return !ok })
			waitFor(t, "A to be done with the path", func() bool { return mA.Inspect() == (mutex.Snapshot{}) })
			if sA.Err() != nil {
				t.Fatalf("A's session ended: %v", sA.Err())
			}
			w.empty()
		})
	}
}
