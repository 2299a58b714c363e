package fence_test

import (
	"context"
	"errors"
	"testing"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/fence"
	"github.com/coordkit/coordkit/recipes/mutex"
)

// entered is a Conn whose GuardedSet says when it has been called, before it
// goes to the server: Set has then passed its check of the hold's Err.
type entered struct {
	backend.Conn
	called chan struct{} // closed at the first GuardedSet
}

func (e entered) GuardedSet(ctx context.Context, gs []backend.Guard, path string, data []byte, version int64) (backend.Node, error) {
	close(e.called)
	return e.Conn.GuardedSet(ctx, gs, path, data, version)
}

// TestSetReportsReleaseDuringTheWrite: the hold is current when Set checks
// it, and its Unlock (on another goroutine) completes while the guarded
// write waits at a stalled server; the server then refuses the write. The
// error says why the hold ended, released, not lost: ErrStale,
// recipes.ErrReleased and backend.ErrGuardFailed (the server's refusal), and
// not recipes.ErrLost. Nothing is written.
//
// The write goes through another session's connection (any connection to
// the backend works for the check, see Set), so that stalling it holds the
// write alone while the holder's own session deletes its owner node; the
// order is fixed by the stall, not by timing.
func TestSetReportsReleaseDuringTheWrite(t *testing.T) {
	ctx := context.Background()
	drv, a, b := twoSessions(t)
	ma, _ := mutex.New(a, "/locks/config")
	ga, err := ma.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}

	if err := drv.Stall(b.ID()); err != nil {
		t.Fatal(err)
	}
	conn := entered{Conn: b.Conn(), called: make(chan struct{})}
	setErr := make(chan error, 1)
	go func() {
		_, err := fence.Set(ctx, conn, ga, "/data/config", []byte("late"), backend.AnyVersion)
		setErr <- err
	}()
	<-conn.called // past Set's check of Err; the write waits at the stall
	if err := ga.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(ga.Err(), recipes.ErrReleased) {
		t.Fatalf("guard after Unlock: %v, want ErrReleased", ga.Err())
	}
	if err := drv.Unstall(b.ID()); err != nil {
		t.Fatal(err)
	}
	err = <-setErr
	if !errors.Is(err, fence.ErrStale) || !errors.Is(err, backend.ErrGuardFailed) {
		t.Fatalf("Set whose hold was released during the write: %v, want ErrStale and ErrGuardFailed (the server refused it)", err)
	}
	if !errors.Is(err, recipes.ErrReleased) || errors.Is(err, recipes.ErrLost) {
		t.Fatalf("Set whose hold was released during the write: %v, want ErrReleased, not ErrLost", err)
	}
	if n, err := a.Conn().Get(ctx, "/data/config"); err != nil || string(n.Data) != "v0" {
		t.Fatalf("data %q (%v), want v0: the refused write went through", n.Data, err)
	}
}
