package mutex

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/internal/locktest"
	"github.com/coordkit/coordkit/session"
)

// mustNew is New, ending the test on an error.
func mustNew(t *testing.T, s *session.Session, path string) *Mutex {
	t.Helper()
	m, err := New(s, path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestTryOutcomeSparesBlockingWaiters: the loop runs a TryLock's one shot
// while another process holds; a blocking Lock of the process arrives, and
// the TryLock's ctx ends before the shot returns ErrLocked. The blocking
// Lock must go on waiting (and get the lock once the other process lets
// go), not fail with the TryLock's ErrLocked.
func TestTryOutcomeSparesBlockingWaiters(t *testing.T) {
	w := locktest.NewWorld(t)
	sA, sB := w.Session(), w.Session()
	mA := mustNew(t, sA, "/locks/try-outcome")
	mB := mustNew(t, sB, "/locks/try-outcome")
	gB := locktest.MustLock(t, 10*time.Second, mB)

	// A user of the path keeps A's loop up while it is idle, as a
	// goroutine between attach and its request would.
	p := attach(mA)
	defer func() {
		p.detach(1)
		mA.Inspect() // the loop looks at its exit again after any message
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Error("the loop did not exit once nobody used the path")
		}
	}()
	if err := w.Drv.Stall(sA.ID()); err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithCancel(context.Background())
	defer tcancel()
	tried := make(chan error, 1)
	go func() {
		_, err := mA.TryLock(tctx)
		tried <- err
	}()
	locktest.Eventually(t, 10*time.Second, "the TryLock's shot", func() bool { return mA.Inspect().Waiting == 1 })
	locked := make(chan error, 1)
	var gA *Guard
	go func() {
		g, err := mA.Lock(context.Background())
		gA = g
		locked <- err
	}()
	locktest.Eventually(t, 10*time.Second, "the blocking Lock", func() bool { return mA.Inspect().Waiting == 2 })
	tcancel()
	if err := <-tried; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled TryLock: %v", err)
	}
	if err := w.Drv.Unstall(sA.ID()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-locked:
		t.Fatalf("the blocking Lock returned while another process holds: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	locktest.MustUnlock(t, gB)
	select {
	case err := <-locked:
		if err != nil {
			t.Fatalf("the blocking Lock: %v, want the lock", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking Lock did not get the lock once the other process let go")
	}
	if gA.Token() <= gB.Token() {
		t.Errorf("token %d after %d", gA.Token(), gB.Token())
	}
	locktest.MustUnlock(t, gA)
	if !errors.Is(gA.Err(), recipes.ErrReleased) {
		t.Errorf("released guard: %v", gA.Err())
	}
}

// TestLeftoverOwnerAndPinsRemoved: an owner node of this session is left
// on the server with its pin (a stamped create whose acquisition nobody
// holds), and the session knows it may have left one. Lock removes the node
// and the pin instead of queueing behind them, and nothing is left after
// Unlock.
func TestLeftoverOwnerAndPinsRemoved(t *testing.T) {
	w := locktest.NewWorld(t)
	s := w.Session()
	m := mustNew(t, s, "/locks/leftover")
	stamps, ok := s.Conn().(backend.ParentStamps)
	if !ok {
		t.Fatal("the memory driver has no ParentStamps")
	}
	left, st, err := stamps.CreateStamped(context.Background(), m.srv.owner, nil, ephemeral)
	if err != nil || st.Pin == "" {
		t.Fatalf("leftover: %v (pin %q)", err, st.Pin)
	}
	m.reg.setSuspect(m.path, true)
	g := locktest.MustLock(t, 10*time.Second, m)
	if g.Token() <= left.Token {
		t.Fatalf("token %d after the leftover's %d", g.Token(), left.Token)
	}
	if _, err := w.Obs.Get(context.Background(), st.Pin); !errors.Is(err, backend.ErrNoNode) {
		t.Errorf("the leftover's pin: %v, want it gone", err)
	}
	if m.reg.suspect(m.path) {
		t.Error("still suspect after the leftover was removed")
	}
	locktest.MustUnlock(t, g)
	if kids := w.Children(m.path); len(kids) != 0 {
		t.Fatalf("left after Unlock: %v", locktest.Names(kids))
	}
}

// TestCancelledAttemptKeepsContentionMemory: a release that found another
// process waiting is remembered; a later Lock that queues and is cancelled
// before it gets anything must not erase that (nothing was learnt), so the
// Lock after it still queues.
func TestCancelledAttemptKeepsContentionMemory(t *testing.T) {
	w := locktest.NewWorld(t)
	sA, sB := w.Session(), w.Session()
	mA := mustNew(t, sA, "/locks/memory")
	mB := mustNew(t, sB, "/locks/memory")
	gA := locktest.MustLock(t, 10*time.Second, mA)
	gotB := make(chan *Guard, 1)
	go func() {
		g, err := mB.Lock(context.Background())
		if err != nil {
			t.Error(err)
		}
		gotB <- g
	}()
	locktest.Eventually(t, 10*time.Second, "B to mark the owner node", func() bool {
		n, err := w.Obs.Get(context.Background(), mA.srv.owner)
		return err == nil && string(n.Data) == ContendedMark
	})
	locktest.MustUnlock(t, gA)
	gB := <-gotB
	if gB == nil {
		t.FailNow()
	}
	recalled := func() bool {
		mA.reg.mu.Lock()
		defer mA.reg.mu.Unlock()
		return mA.reg.recentlyContended(mA.path)
	}
	if !recalled() {
		t.Fatal("A's release found B waiting, and A does not remember it")
	}
	// A queues behind B (who holds) and gives up.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := mA.Lock(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("A's Lock while B holds: %v, want DeadlineExceeded", err)
	}
	locktest.Eventually(t, 10*time.Second, "A's attempt to finish", func() bool { return mA.Inspect() == (Snapshot{}) })
	if !recalled() {
		t.Error("a cancelled attempt that got nothing erased what A remembered")
	}
	locktest.MustUnlock(t, gB)
}
