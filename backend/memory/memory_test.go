package memory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/backendtest"
	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/clock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Driver {
		d := memory.New()
		t.Cleanup(func() { _ = d.Close() })
		return d
	})
}

// The helpers below fail the test from the test goroutine only.

const wait = 10 * time.Second

var ctx = context.Background()

// world is a Driver on a fake clock with a session under test (c) and an
// observer session (other).
type world struct {
	t     *testing.T
	clk   *clock.Fake
	d     *memory.Driver
	c     backend.Conn
	other backend.Conn
}

const ttl = 10 * time.Second

func newWorld(t *testing.T) *world {
	w := &world{t: t, clk: clock.NewFake(time.Unix(1e9, 0))}
	w.d = memory.New(memory.WithClock(w.clk))
	t.Cleanup(func() { _ = w.d.Close() })
	w.c = w.open()
	w.other = w.open()
	return w
}

func (w *world) open() backend.Conn {
	w.t.Helper()
	c, err := w.d.Open(ctx, ttl)
	if err != nil {
		w.t.Fatal(err)
	}
	w.state(c, backend.StateConnected)
	return c
}

// state reads c's next state event and checks it.
func (w *world) state(c backend.Conn, want backend.ConnState) backend.ConnEvent {
	w.t.Helper()
	select {
	case ev, ok := <-c.Events():
		if !ok || ev.State != want {
			w.t.Fatalf("session %s: got %v (open %v), want %v", c.SessionID(), ev.State, ok, want)
		}
		return ev
	case <-time.After(wait):
		w.t.Fatalf("session %s: no event, want %v", c.SessionID(), want)
	}
	return backend.ConnEvent{}
}

// ended checks that c's Events are closed.
func (w *world) ended(c backend.Conn) {
	w.t.Helper()
	select {
	case ev, ok := <-c.Events():
		if ok {
			w.t.Fatalf("session %s: got %v after the terminal event", c.SessionID(), ev.State)
		}
	case <-time.After(wait):
		w.t.Fatalf("session %s: Events not closed", c.SessionID())
	}
}

// noState checks that c has no state event queued. The driver queues events
// synchronously, so this is exact.
func (w *world) noState(c backend.Conn) {
	w.t.Helper()
	select {
	case ev := <-c.Events():
		w.t.Fatalf("session %s: unexpected %v", c.SessionID(), ev.State)
	default:
	}
}

func (w *world) create(c backend.Conn, path string, opts backend.CreateOptions) backend.Node {
	w.t.Helper()
	n, err := c.Create(ctx, path, []byte("data"), opts)
	if err != nil {
		w.t.Fatalf("Create(%s): %v", path, err)
	}
	return n
}

func (w *world) watch(c backend.Conn, path string) *backend.Watch {
	w.t.Helper()
	_, _, wt, err := c.Watch(ctx, path)
	if err != nil {
		w.t.Fatalf("Watch(%s): %v", path, err)
	}
	return wt
}

// event waits for wt's event and checks its type.
func (w *world) event(wt *backend.Watch, want backend.EventType) backend.WatchEvent {
	w.t.Helper()
	select {
	case ev := <-wt.C():
		if ev.Type != want {
			w.t.Fatalf("watch: got %v (%v), want %v", ev.Type, ev.Err, want)
		}
		return ev
	case <-time.After(wait):
		w.t.Fatalf("watch: no event, want %v", want)
	}
	return backend.WatchEvent{}
}

// quiet checks that wt holds no event. Delivery is synchronous, so this is
// exact.
func (w *world) quiet(wt *backend.Watch) {
	w.t.Helper()
	select {
	case ev := <-wt.C():
		w.t.Fatalf("watch: unexpected %v", ev.Type)
	default:
	}
}

func (w *world) exists(path string) bool {
	w.t.Helper()
	_, err := w.other.Get(ctx, path)
	if err != nil && !errors.Is(err, backend.ErrNoNode) {
		w.t.Fatal(err)
	}
	return err == nil
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got %v, want %v", what, err, target)
	}
}

func TestOpenRefusesBadArguments(t *testing.T) {
	d := memory.New()
	defer d.Close()
	_, err := d.Open(ctx, 0)
	wantErr(t, err, coordkit.ErrInvalidArgument, "Open with ttl 0")
	var nilCtx context.Context
	_, err = d.Open(nilCtx, time.Second)
	wantErr(t, err, coordkit.ErrInvalidArgument, "Open with a nil ctx")
	d.Close()
	_, err = d.Open(ctx, time.Second)
	wantErr(t, err, coordkit.ErrClosed, "Open after Close")
	wantErr(t, d.SetNextSequence("/x", 1), coordkit.ErrClosed, "SetNextSequence after Close")
}
