package mutex

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/internal/locktest"
)

// TestTryOutcomeSparesBlockingWaiters: the loop runs a TryLock's one shot
// while another process holds; a blocking Lock of the process arrives, and
// the TryLock's ctx ends before the shot returns ErrLocked. The blocking
// Lock must go on waiting (and get the lock once the other process lets
// go), not fail with the TryLock's ErrLocked.
func TestTryOutcomeSparesBlockingWaiters(t *testing.T) {
	w := locktest.NewWorld(t)
	sA, sB := w.Session(), w.Session()
	mA, err := New(sA, "/locks/try-outcome")
	if err != nil {
		t.Fatal(err)
	}
	mB, err := New(sB, "/locks/try-outcome")
	if err != nil {
		t.Fatal(err)
	}
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
