package mutex_test

import (
	"context"
	"errors"
	"testing"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/recipes"
)

// TestStaleUnlockKeepsNewOwner: an operator deletes A's owner node, B
// takes the lock (a new owner node at the same path, with the same data
// version on ZooKeeper-like backends), then A unlocks. A's Unlock must not
// delete B's node: a third process would otherwise get the lock while B
// holds it.
func TestStaleUnlockKeepsNewOwner(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	mA, mB, mC := w.mutex(w.session()), w.mutex(w.session()), w.mutex(w.session())
	gA := lock(t, mA)
	n, ok := w.owner()
	if !ok {
		t.Fatal("no owner node")
	}
	if err := w.obs.Delete(ctx, n.Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	gB, err := mB.TryLock(ctx)
	if err != nil {
		t.Fatalf("B's TryLock after the operator's delete: %v", err)
	}
	if gB.Token() <= gA.Token() {
		t.Fatalf("B's token %d is not larger than A's %d", gB.Token(), gA.Token())
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
