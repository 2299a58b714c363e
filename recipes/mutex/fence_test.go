package mutex_test

import (
	"context"
	"errors"
	"testing"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/fence"
)

// zkGuards is a Conn whose GuardedSet checks what a ZooKeeper multi can:
// a node's existence and version, never its czxid (the guards' tokens are
// dropped). The memory driver alone compares tokens, which hides what a
// fence must do without them.
type zkGuards struct{ backend.Conn }

func (z zkGuards) GuardedSet(ctx context.Context, gs []backend.Guard, path string, data []byte, version int64) (backend.Node, error) {
	out := append([]backend.Guard(nil), gs...)
	for i := range out {
		out[i].Token = 0
	}
	return z.Conn.GuardedSet(ctx, out, path, data, version)
}

// paused is a released grant whose holder checked Err before it was paused:
// only the server can refuse its write now.
type paused struct{ recipes.Held }

func (paused) Err() error { return nil }

// TestFenceRefusesReleasedHolderWithoutTokens: A holds and releases (its
// session alive), B takes the lock; A's write, fenced by its grant, reaches
// the server only now. With checks that cannot compare tokens (ZooKeeper)
// the write must still be refused: P/owner exists again, but it is B's.
func TestFenceRefusesReleasedHolderWithoutTokens(t *testing.T) {
	w := newWorld(t)
	sa, sb := w.session(), w.session()
	ma, mb := w.mutex(sa), w.mutex(sb)
	ctx := context.Background()
	if _, err := sa.Conn().Create(ctx, "/data/stock", []byte("3"), backend.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ga := lock(t, ma)
	conn := zkGuards{sa.Conn()}
	if _, err := fence.Set(ctx, conn, ga, "/data/stock", []byte("2"), backend.AnyVersion); err != nil {
		t.Fatalf("fenced write while holding: %v", err)
	}
	unlock(t, ga)
	gb := lock(t, mb)
	if _, err := fence.Set(ctx, conn, paused{ga}, "/data/stock", []byte("stale"), backend.AnyVersion); !errors.Is(err, fence.ErrStale) {
		t.Fatalf("a released holder's write while another process holds: %v, want ErrStale", err)
	}
	if n, err := w.obs.Get(ctx, "/data/stock"); err != nil || string(n.Data) != "2" {
		t.Fatalf("data %q (%v), want the holder's write only", n.Data, err)
	}
	unlock(t, gb)
	if err := w.obs.Delete(ctx, "/data/stock", backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	w.empty()
}
