package session_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/clock"
	"github.com/coordkit/coordkit/internal/detach"
	"github.com/coordkit/coordkit/internal/sessionlocal"
	"github.com/coordkit/coordkit/session"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait is the bound for things that must happen promptly; tests never sleep
// to order events, they wait on channels with this bound.
const wait = 5 * time.Second

type fixture struct {
	t     *testing.T
	drv   *memory.Driver
	clock *clock.Fake // the session's local timer
	srv   *clock.Fake // the memory server's session expiry
	s     *session.Session
	ch    <-chan session.Change
}

func newFixture(t *testing.T, opts ...session.Option) *fixture {
	t.Helper()
	// The session's local timer runs on its own fake clock; the server-side
	// expiry of the memory driver on another, never advanced here, so the
	// two cannot be confused.
	fc := clock.NewFake(time.Unix(1_000_000, 0))
	srv := clock.NewFake(time.Unix(1_000_000, 0))
	drv := memory.New(memory.WithClock(srv))
	t.Cleanup(func() { drv.Close() })
	opts = append([]session.Option{session.WithTTL(10 * time.Second), session.WithClock(fc)}, opts...)
	s, err := session.New(context.Background(), drv, opts...)
	if err != nil {
		t.Fatalf("session.New: %v", err)
	}
	ch, stop := s.Changes()
	t.Cleanup(func() {
		stop()
		s.Close(context.Background())
	})
	return &fixture{t: t, drv: drv, clock: fc, srv: srv, s: s, ch: ch}
}

// next returns the next change, failing the test if none comes promptly.
func (f *fixture) next(want session.State) session.Change {
	f.t.Helper()
	select {
	case c, ok := <-f.ch:
		if !ok {
			f.t.Fatalf("changes closed, want %v", want)
		}
		if c.State != want {
			f.t.Fatalf("change = %v (%v), want %v", c.State, c.Err, want)
		}
		return c
	case <-time.After(wait):
		f.t.Fatalf("no change within %v, want %v", wait, want)
	}
	return session.Change{}
}

func (f *fixture) ephemeral(path string) {
	f.t.Helper()
	if _, err := f.s.Conn().Create(context.Background(), path, []byte("x"), backend.CreateOptions{Ephemeral: true}); err != nil {
		f.t.Fatalf("create %s: %v", path, err)
	}
}

func exists(t *testing.T, drv backend.Driver, path string) bool {
	t.Helper()
	other, err := drv.Open(context.Background(), 10*time.Second)
	if err != nil {
		t.Fatalf("open observer: %v", err)
	}
	defer other.Close(context.Background())
	_, err = other.Get(context.Background(), path)
	if err != nil && !errors.Is(err, backend.ErrNoNode) {
		t.Fatalf("observer get %s: %v", path, err)
	}
	return err == nil
}

func isDone(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

func TestStandardPolicySuspendEndsHoldsReconnectStartsNewEpoch(t *testing.T) {
	f := newFixture(t)
	if got := f.s.State(); got != session.StateConnected {
		t.Fatalf("State() = %v, want Connected", got)
	}
	f.ephemeral("/holder")
	hold := f.s.HoldContext()

	f.drv.Disconnect(f.s.ID())
	c := f.next(session.StateSuspended)
	if !errors.Is(c.Err, session.ErrSuspended) || !errors.Is(c.Err, coordkit.ErrSessionLost) {
		t.Fatalf("suspended change err = %v, want ErrSuspended (ErrSessionLost)", c.Err)
	}
	if !isDone(hold) || !errors.Is(context.Cause(hold), session.ErrSuspended) {
		t.Fatalf("hold not ended on Suspended under StandardPolicy: cause %v", context.Cause(hold))
	}
	if !isDone(f.s.HoldContext()) {
		t.Fatal("a hold taken while suspended must start ended")
	}
	if isDone(f.s.Context()) || f.s.Err() != nil {
		t.Fatalf("session must live on while suspended: err %v", f.s.Err())
	}

	f.drv.Reconnect(f.s.ID())
	f.next(session.StateReconnected)
	if !isDone(hold) {
		t.Fatal("a hold ended by Suspended came back after Reconnected")
	}
	fresh := f.s.HoldContext()
	if isDone(fresh) {
		t.Fatalf("hold taken after reconnect is already ended: %v", context.Cause(fresh))
	}
	if !exists(t, f.drv, "/holder") {
		t.Fatal("ephemeral node lost across a reconnect of a live session")
	}
}

func TestSessionPolicyKeepsHoldsAcrossSuspend(t *testing.T) {
	f := newFixture(t, session.WithErrorPolicy(session.SessionPolicy))
	hold := f.s.HoldContext()
	f.drv.Disconnect(f.s.ID())
	f.next(session.StateSuspended)
	if isDone(hold) {
		t.Fatalf("SessionPolicy ended a hold on Suspended: %v", context.Cause(hold))
	}
	f.drv.Reconnect(f.s.ID())
	f.next(session.StateReconnected)
	if isDone(hold) || f.s.HoldContext() != hold {
		t.Fatal("SessionPolicy: hold must survive a short suspension unchanged")
	}
	f.drv.Expire(f.s.ID())
	f.next(session.StateLost)
	if !isDone(hold) || !errors.Is(context.Cause(hold), session.ErrExpired) {
		t.Fatalf("hold not ended on Lost: %v", context.Cause(hold))
	}
}

func TestLocalTimerDeclaresLostAfterTimeout(t *testing.T) {
	f := newFixture(t, session.WithErrorPolicy(session.SessionPolicy))
	f.ephemeral("/holder")
	hold := f.s.HoldContext()
	f.drv.Disconnect(f.s.ID())
	f.next(session.StateSuspended)

	// Wait until the session armed its timer (the only timer on its clock),
	// then move the clock to just before the timeout: the timer must not
	// fire yet. The fake clock fires due timers inside Advance and drops
	// them from Timers, so this is decided when Advance returns, not by
	// when the session's goroutine gets to publish Lost.
	waitFor(t, func() bool { return f.clock.Timers() > 0 })
	if n := f.clock.Timers(); n != 1 {
		t.Fatalf("%d timers armed on Suspended, want 1 (the local loss timer)", n)
	}
	f.clock.Advance(f.s.Timeout() - time.Millisecond)
	if n := f.clock.Timers(); n != 1 {
		t.Fatalf("the local loss timer fired before the timeout: %d timers armed %v before it, want 1", n, time.Millisecond)
	}
	select {
	case c := <-f.ch:
		t.Fatalf("change %v before the timeout passed", c.State)
	default:
	}
	if isDone(hold) {
		t.Fatal("hold ended before the timeout under SessionPolicy")
	}
	f.clock.Advance(time.Millisecond)
	if n := f.clock.Timers(); n != 0 {
		t.Fatalf("%d timers still armed at the timeout, want 0 (the loss timer fired)", n)
	}
	c := f.next(session.StateLost)
	if !errors.Is(c.Err, session.ErrLostByTimer) || !errors.Is(f.s.Err(), coordkit.ErrSessionLost) {
		t.Fatalf("lost err = %v / %v, want ErrLostByTimer", c.Err, f.s.Err())
	}
	select {
	case <-f.s.Done():
	case <-time.After(wait):
		t.Fatal("Done not closed after Lost")
	}
	if !isDone(hold) {
		t.Fatal("hold survived Lost")
	}
	// The session closes its connection after declaring it lost, without
	// a Close from its owner: a client that reconnected would otherwise go
	// on with a session declared lost, and its nodes. So the connection
	// refuses calls, and a reconnect can no longer reach it.
	waitFor(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := f.s.Conn().Get(ctx, "/holder")
		return errors.Is(err, coordkit.ErrClosed)
	})
	if err := f.drv.Reconnect(f.s.ID()); err == nil {
		t.Fatal("a reconnect after the local timer declared the session lost reached its connection")
	}
	if st := f.s.State(); st != session.StateLost {
		t.Fatalf("state after late reconnect = %v, want Lost", st)
	}
	// Close is not an error on a lost session.
	if err := f.s.Close(context.Background()); err != nil {
		t.Fatalf("Close after Lost: %v", err)
	}
	if _, ok := <-f.ch; ok {
		t.Fatal("changes channel must close after Lost")
	}
	// The partitioned client could not say goodbye, so the server keeps the
	// ephemeral until its own timeout runs out — and then drops it.
	if !exists(t, f.drv, "/holder") {
		t.Fatal("the server dropped the ephemeral before its own timeout")
	}
	waitFor(t, func() bool { return f.srv.Timers() > 0 })
	f.srv.Advance(f.s.Timeout())
	waitFor(t, func() bool { return !exists(t, f.drv, "/holder") })
}

func TestExpiryWhileDisconnectedIsLearnedAtReconnect(t *testing.T) {
	f := newFixture(t)
	f.ephemeral("/holder")
	f.drv.Disconnect(f.s.ID())
	f.next(session.StateSuspended)
	f.drv.Expire(f.s.ID())
	if exists(t, f.drv, "/holder") {
		t.Fatal("server-side expiry must delete the ephemeral at once")
	}
	if f.s.State() != session.StateSuspended {
		t.Fatalf("state = %v: a disconnected client cannot know of the expiry yet", f.s.State())
	}
	f.drv.Reconnect(f.s.ID())
	c := f.next(session.StateLost)
	if !errors.Is(c.Err, session.ErrExpired) {
		t.Fatalf("lost err = %v, want ErrExpired", c.Err)
	}
}

func TestExpireWhileConnected(t *testing.T) {
	f := newFixture(t)
	f.drv.Expire(f.s.ID())
	c := f.next(session.StateLost)
	if !errors.Is(c.Err, session.ErrExpired) || !errors.Is(f.s.Err(), coordkit.ErrSessionLost) {
		t.Fatalf("err = %v / %v", c.Err, f.s.Err())
	}
	if !errors.Is(context.Cause(f.s.Context()), session.ErrExpired) {
		t.Fatalf("Context cause = %v", context.Cause(f.s.Context()))
	}
	_, err := f.s.Conn().Get(context.Background(), "/x")
	if !errors.Is(err, coordkit.ErrSessionLost) {
		t.Fatalf("call on a lost session = %v, want ErrSessionLost", err)
	}
	if err := f.s.Close(context.Background()); err != nil {
		t.Fatalf("Close of a lost session = %v, want nil", err)
	}
	if !errors.Is(f.s.Err(), session.ErrExpired) {
		t.Fatalf("Err after closing a lost session = %v, want it to stay ErrExpired", f.s.Err())
	}
}

// closeRecorder is a driver whose Conns report, at Close, whether the
// session's hold epoch had already ended.
type closeRecorder struct {
	backend.Driver
	s           **session.Session
	heldAtClose chan bool
}

func (d closeRecorder) Open(ctx context.Context, ttl time.Duration) (backend.Conn, error) {
	c, err := d.Driver.Open(ctx, ttl)
	if err != nil {
		return nil, err
	}
	return recordingConn{Conn: c, d: d}, nil
}

type recordingConn struct {
	backend.Conn
	d closeRecorder
}

func (c recordingConn) Close(ctx context.Context) error {
	c.d.heldAtClose <- (*c.d.s).HoldContext().Err() == nil
	return c.Conn.Close(ctx)
}

// TestCloseEndsHoldsBeforeNodesGo: Close ends the hold epoch before it asks
// the server to end the session (which deletes its ephemeral nodes and lets
// another process take a lock): no Guard may look held once its node can be
// gone.
func TestCloseEndsHoldsBeforeNodesGo(t *testing.T) {
	drv := memory.New()
	t.Cleanup(func() { drv.Close() })
	var s *session.Session
	d := closeRecorder{Driver: drv, s: &s, heldAtClose: make(chan bool, 1)}
	s, err := session.New(context.Background(), d, session.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	hold := s.HoldContext()
	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if <-d.heldAtClose {
		t.Fatal("the hold epoch was still live when the session's nodes were deleted")
	}
	if !errors.Is(context.Cause(hold), coordkit.ErrClosed) {
		t.Fatalf("hold cause %v, want ErrClosed", context.Cause(hold))
	}
}

func TestCloseIsIdempotentAndReleasesEphemerals(t *testing.T) {
	f := newFixture(t)
	f.ephemeral("/holder")
	hold := f.s.HoldContext()
	if err := f.s.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	f.next(session.StateClosed)
	if err := f.s.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if !errors.Is(f.s.Err(), coordkit.ErrClosed) || !errors.Is(context.Cause(hold), coordkit.ErrClosed) {
		t.Fatalf("Err = %v, hold cause = %v; want ErrClosed", f.s.Err(), context.Cause(hold))
	}
	if exists(t, f.drv, "/holder") {
		t.Fatal("Close left an ephemeral behind")
	}
	if _, err := f.s.Conn().Get(context.Background(), "/x"); !errors.Is(err, coordkit.ErrClosed) {
		t.Fatalf("call after Close = %v, want ErrClosed", err)
	}
	// Subscribing after the end yields the terminal change only.
	ch, stop := f.s.Changes()
	defer stop()
	c, ok := <-ch
	if !ok || c.State != session.StateClosed {
		t.Fatalf("late subscriber got %v, %v; want Closed", c.State, ok)
	}
	if _, ok := <-ch; ok {
		t.Fatal("late subscriber channel not closed")
	}
}

// A listener that blocks must delay, never lose, changes — and the terminal
// change must reach it.
func TestSlowListenerLosesNothing(t *testing.T) {
	f := newFixture(t)
	release := make(chan struct{})
	got := make(chan session.State, 64)
	remove := f.s.OnStateChange(func(c session.Change) {
		<-release
		got <- c.State
	})
	defer remove()
	const rounds = 10
	for i := 0; i < rounds; i++ {
		f.drv.Disconnect(f.s.ID())
		f.next(session.StateSuspended)
		f.drv.Reconnect(f.s.ID())
		f.next(session.StateReconnected)
	}
	f.drv.Expire(f.s.ID())
	f.next(session.StateLost)
	close(release)
	var want []session.State
	for i := 0; i < rounds; i++ {
		want = append(want, session.StateSuspended, session.StateReconnected)
	}
	want = append(want, session.StateLost)
	for i, w := range want {
		select {
		case s := <-got:
			if s != w {
				t.Fatalf("listener change %d = %v, want %v", i, s, w)
			}
		case <-time.After(wait):
			t.Fatalf("listener got only %d of %d changes", i, len(want))
		}
	}
}

func TestInvalidArguments(t *testing.T) {
	drv := memory.New()
	defer drv.Close()
	//lint:ignore SA1012 testing the nil check
	if _, err := session.New(nil, drv); !errors.Is(err, coordkit.ErrInvalidArgument) { //nolint:staticcheck
		t.Errorf("nil ctx: %v", err)
	}
	if _, err := session.New(context.Background(), nil); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("nil driver: %v", err)
	}
	if _, err := session.New(context.Background(), drv, session.WithTTL(0)); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("zero TTL: %v", err)
	}
	if _, err := session.New(context.Background(), drv, session.WithLostAfter(-time.Second)); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("negative LostAfter: %v", err)
	}
	// A nil option is skipped, as the recipes' are, and a nil callback
	// registers nothing (it used to crash the process at the next change,
	// on a library goroutine).
	s, err := session.New(context.Background(), drv, nil)
	if err != nil {
		t.Fatalf("nil option: %v", err)
	}
	s.OnStateChange(nil)()
	s.OnStateChange(nil)
	if err := drv.Disconnect(s.ID()); err != nil {
		t.Fatal(err)
	}
	if err := drv.Reconnect(s.ID()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := session.New(ctx, drv); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: %v", err)
	}
}

func TestStateStrings(t *testing.T) {
	for s, want := range map[session.State]string{
		session.StateConnected: "Connected", session.StateSuspended: "Suspended",
		session.StateReconnected: "Reconnected", session.StateLost: "Lost", session.StateClosed: "Closed",
		session.State(99): "State(99)",
	} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(s), s.String(), want)
		}
	}
	if !session.StateLost.Terminal() || !session.StateClosed.Terminal() || session.StateSuspended.Terminal() {
		t.Error("Terminal() wrong")
	}
}

// waitFor waits for a condition the code under test reaches on its own
// goroutine (a timer being armed); it is not used to order events.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// The session carries one detach.Runner and one sessionlocal.Table in its
// context for the recipes on it, the same ones each time; the Runner's idle
// goroutine leaves when the session closes (goleak in TestMain fails the
// package if it stays).
func TestSessionCarriesRunnerAndTable(t *testing.T) {
	f := newFixture(t)
	r := detach.From(f.s.Context())
	if r == nil {
		t.Fatal("the session's context carries no Runner")
	}
	if detach.From(f.s.HoldContext()) != r {
		t.Fatal("the hold context carries another Runner than the session's")
	}
	tbl := sessionlocal.From(f.s.Context())
	if tbl == nil || sessionlocal.From(f.s.HoldContext()) != tbl {
		t.Fatal("the session's and the hold context do not carry one sessionlocal.Table")
	}
	ran := make(chan struct{})
	r.Go(func() { close(ran) }) // leaves an idle goroutine behind
	<-ran
	if err := f.s.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// The Runner's value wraps the cancellable context: the cause must
	// still come through it.
	if !errors.Is(context.Cause(f.s.Context()), coordkit.ErrClosed) {
		t.Fatalf("cause of the session's context: %v, want ErrClosed", context.Cause(f.s.Context()))
	}
}

// TestPolicyMayCallTheSession: an ErrorPolicy that reads the session (its
// State, say) runs while the session processes a change: it must not
// deadlock the session's loop (the policy used to run under the session's
// lock), and the change still reaches subscribers.
func TestPolicyMayCallTheSession(t *testing.T) {
	var sess atomic.Pointer[session.Session]
	seen := make(chan session.State, 4)
	policy := func(st session.State) bool {
		if s := sess.Load(); s != nil {
			seen <- s.State() // the state before the change
		}
		return session.StandardPolicy(st)
	}
	f := newFixture(t, session.WithErrorPolicy(policy))
	sess.Store(f.s)
	if err := f.drv.Disconnect(f.s.ID()); err != nil {
		t.Fatal(err)
	}
	f.next(session.StateSuspended)
	if st := <-seen; st != session.StateConnected {
		t.Fatalf("the policy saw %v, want the state before the change (Connected)", st)
	}
	if st := f.s.State(); st != session.StateSuspended {
		t.Fatalf("state %v, want Suspended", st)
	}
}

// TestLateSubscriberGetsTheTerminalChange: a subscriber that comes after
// the session ended gets the terminal change as it happened, with when it
// was observed.
func TestLateSubscriberGetsTheTerminalChange(t *testing.T) {
	f := newFixture(t)
	if err := f.s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	ch, stop := f.s.Changes()
	defer stop()
	c, ok := <-ch
	if !ok || c.State != session.StateClosed || !errors.Is(c.Err, session.ErrClosed) || c.At.IsZero() {
		t.Fatalf("late subscriber's change: %+v (ok %v), want Closed with ErrClosed and its time", c, ok)
	}
	if _, ok := <-ch; ok {
		t.Fatal("a late subscriber's channel stays open after the terminal change")
	}
}
