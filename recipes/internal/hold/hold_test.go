package hold_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/internal/hold"
	"github.com/coordkit/coordkit/recipes/internal/locktest"
	"github.com/coordkit/coordkit/session"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func setup(t *testing.T) (*memory.Driver, *session.Session, backend.Node) {
	t.Helper()
	drv := memory.New()
	t.Cleanup(func() { drv.Close() })
	s, err := session.New(context.Background(), drv, session.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	n, err := s.Conn().Create(context.Background(), "/lock/owner", nil, backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	return drv, s, n
}

func ended(t *testing.T, h *hold.Hold) error {
	t.Helper()
	select {
	case <-h.Done():
		return h.Err()
	case <-time.After(5 * time.Second):
		t.Fatal("hold did not end")
	}
	return nil
}

func TestHoldEndsWhenNodeDeleted(t *testing.T) {
	_, s, n := setup(t)
	h := hold.Start(s, s.HoldContext(), n, n.Token)
	if h.Err() != nil || h.Token() != n.Token {
		t.Fatalf("fresh hold: err %v token %d", h.Err(), h.Token())
	}
	h.Watch()
	if err := s.Conn().Delete(context.Background(), n.Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	err := ended(t, h)
	if !errors.Is(err, recipes.ErrNodeDeleted) || !errors.Is(err, recipes.ErrLost) {
		t.Fatalf("err %v, want ErrNodeDeleted (ErrLost)", err)
	}
	if h.End(recipes.ErrReleased) {
		t.Fatal("End of an already ended hold reported that it ended it")
	}
	if !errors.Is(h.Err(), recipes.ErrNodeDeleted) {
		t.Fatalf("cause changed after End: %v", h.Err())
	}
}

func TestHoldEndsOnSuspend(t *testing.T) {
	drv, s, n := setup(t)
	h := hold.Start(s, s.HoldContext(), n, n.Token)
	drv.Disconnect(s.ID())
	err := ended(t, h)
	if !errors.Is(err, recipes.ErrLost) || !errors.Is(err, session.ErrSuspended) || !errors.Is(err, coordkit.ErrSessionLost) {
		t.Fatalf("err %v, want ErrLost + ErrSuspended", err)
	}
	h.End(recipes.ErrReleased)
}

func TestHoldEpochAlreadyEnded(t *testing.T) {
	drv, s, n := setup(t)
	epoch := s.HoldContext()
	drv.Disconnect(s.ID()) // a suspension between taking the epoch and the grant
	h := hold.Start(s, epoch, n, n.Token)
	if err := ended(t, h); !errors.Is(err, session.ErrSuspended) {
		t.Fatalf("err %v, want ErrSuspended", err)
	}
	h.End(recipes.ErrReleased)
}

func TestHoldReleaseAndDataChange(t *testing.T) {
	drv, s, n := setup(t)
	h := hold.Start(s, s.HoldContext(), n, n.Token)
	h.Watch()
	// Watch arms the watch on the monitor's goroutine: wait until the server
	// has it, so that the Set below fires it.
	stats := func() memory.Stats { return drv.SessionStats(s.ID()) }
	locktest.Eventually(t, 5*time.Second, "the hold's watch to be armed", func() bool { return stats().Watches == 1 })
	// A data change is not a loss: the monitor re-reads and re-arms.
	if _, err := s.Conn().Set(context.Background(), n.Path, []byte("x"), backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	// The server fires the watch within the Set (and disarms it): the
	// event is sent by the time Set returns.
	if st := stats(); st.WatchEvents != 1 {
		t.Fatalf("after the Set: %+v, want the watch fired (1 event)", st)
	}
	// So a watch armed again means the monitor received the change event
	// and went on. A monitor that took the event for a loss ends the hold
	// and never re-arms.
	locktest.Eventually(t, 5*time.Second, "the monitor to re-arm after the change event, or the hold to end", func() bool {
		st := stats()
		return h.Err() != nil || st.WatchEvents == 1 && st.Watches == 1
	})
	if err := h.Err(); err != nil {
		t.Fatalf("hold ended on a data change: %v", err)
	}
	if !h.End(recipes.ErrReleased) {
		t.Fatal("End of a live hold must report that it ended it")
	}
	if !errors.Is(h.Err(), recipes.ErrReleased) || errors.Is(h.Err(), recipes.ErrLost) {
		t.Fatalf("err after release %v, want ErrReleased only", h.Err())
	}
	if !errors.Is(context.Cause(h.Context()), recipes.ErrReleased) {
		t.Fatalf("context cause %v", context.Cause(h.Context()))
	}
}

// Replacing the node (deleted and re-created at the same path by someone
// else) ends the hold: it is a different incarnation.
func TestHoldEndsWhenNodeReplaced(t *testing.T) {
	drv, s, n := setup(t)
	other, err := session.New(context.Background(), drv)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	h := hold.Start(s, s.HoldContext(), n, n.Token)
	defer h.End(recipes.ErrReleased)
	h.Watch()
	if _, err := other.Conn().GuardedSet(context.Background(), nil, n.Path, nil, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	s.Conn().Delete(context.Background(), n.Path, backend.AnyVersion)
	other.Conn().Create(context.Background(), n.Path, nil, backend.CreateOptions{Ephemeral: true})
	if err := ended(t, h); !errors.Is(err, recipes.ErrNodeDeleted) {
		t.Fatalf("err %v, want ErrNodeDeleted", err)
	}
}

// Until Watch is called a hold costs no request and no goroutine, and still
// ends with the session's epoch; a node deleted before Watch is reported
// once Watch is called.
func TestHoldWatchIsLazy(t *testing.T) {
	drv, s, n := setup(t)
	before := drv.SessionStats(s.ID())
	h := hold.Start(s, s.HoldContext(), n, n.Token)
	if err := s.Conn().Delete(context.Background(), n.Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	if h.Err() != nil {
		t.Fatalf("unwatched hold ended by itself: %v", h.Err())
	}
	if got := drv.SessionStats(s.ID()); got.Requests-before.Requests != 1 || got.Watches != 0 {
		t.Fatalf("an unwatched hold made requests or watches: %+v -> %+v (1 request is the delete)", before, got)
	}
	h.Watch()
	h.Watch() // idempotent
	if err := ended(t, h); !errors.Is(err, recipes.ErrNodeDeleted) {
		t.Fatalf("err %v, want ErrNodeDeleted", err)
	}
	h.End(recipes.ErrReleased)

	n2, err := s.Conn().Create(context.Background(), "/lock/owner2", nil, backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	h2 := hold.Start(s, s.HoldContext(), n2, n2.Token)
	if !h2.End(recipes.ErrReleased) {
		t.Fatal("End of a live, unwatched hold must report that it ended it")
	}
	h2.Watch() // after End: nothing to watch
	if got := drv.SessionStats(s.ID()).Watches; got != 0 {
		t.Fatalf("Watch after End armed %d watches", got)
	}
	if !errors.Is(h2.Err(), recipes.ErrReleased) {
		t.Fatalf("err %v, want ErrReleased", h2.Err())
	}
}

// closed reports whether ch is closed, without waiting.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestHoldEndsWithTheSessionsCall: a hold ends in the very call that ends
// the session's HoldContext, Done and Context included (not a goroutine
// later): by the time a subscriber hears of the suspension, or Close
// returns (after which other sessions may take the lock), the hold and every
// context derived from it are done, with a cause that matches ErrLost.
func TestHoldEndsWithTheSessionsCall(t *testing.T) {
	for i := range 100 {
		drv, s, n := setup(t)
		changes, stop := s.Changes()
		h := hold.Start(s, s.HoldContext(), n, n.Token)
		work, cancel := context.WithCancel(h.Context())
		drv.Disconnect(s.ID())
		for c := range changes {
			if c.State == session.StateSuspended {
				break
			}
		}
		if !closed(h.Done()) || !closed(work.Done()) {
			t.Fatalf("round %d: the session told its subscribers of the suspension before the hold ended (Done %v, derived context %v)",
				i, closed(h.Done()), closed(work.Done()))
		}
		if err := context.Cause(h.Context()); !errors.Is(err, recipes.ErrLost) || !errors.Is(err, session.ErrSuspended) {
			t.Fatalf("round %d: Context's cause %v, want ErrLost and ErrSuspended", i, err)
		}
		cancel()
		h.End(recipes.ErrReleased)
		drv.Reconnect(s.ID())
		for c := range changes {
			if c.State == session.StateReconnected {
				break
			}
		}
		stop()

		h2 := hold.Start(s, s.HoldContext(), n, n.Token)
		s.Close(context.Background())
		if !closed(h2.Done()) {
			t.Fatalf("round %d: Close returned before the hold ended", i)
		}
		if err := h2.Err(); !errors.Is(err, recipes.ErrLost) || !errors.Is(err, coordkit.ErrClosed) {
			t.Fatalf("round %d: Err after Close %v, want ErrLost and ErrClosed", i, err)
		}
		h2.End(recipes.ErrReleased)
	}
}
