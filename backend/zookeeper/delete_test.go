package zookeeper

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/coordkit/coordkit/backend"
)

var queueJoin = backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true}

// zkEnv is a session through a gate, and an observer session that does not
// go through it.
type zkEnv struct {
	g       *gate
	d, obsD *Driver
	c       *conn
	obs     backend.Conn
	logs    *observer.ObservedLogs // what d logged, from Debug up
}

func newZKEnv(t *testing.T) *zkEnv {
	t.Helper()
	// Registered first, so it runs last: after the server's own cleanup.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	addr := startZooKeeper(t)
	e := &zkEnv{g: &gate{}}
	observed, logs := observer.New(zapcore.DebugLevel)
	e.logs = logs
	lg := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), observed))
	var err error
	if e.d, err = New([]string{addr}, WithDialer(e.g.dial), WithLogger(lg)); err != nil {
		t.Fatal(err)
	}
	if e.obsD, err = New([]string{addr}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.d.Close(); err != nil {
			t.Errorf("close driver: %v", err)
		}
		if err := e.obsD.Close(); err != nil {
			t.Errorf("close observer driver: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bc, err := e.d.Open(ctx, 8*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	e.c = bc.(*conn)
	if e.obs, err = e.obsD.Open(ctx, 8*time.Second); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *zkEnv) exists(t *testing.T, path string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.obs.Get(ctx, path)
	switch {
	case err == nil:
		return true
	case errors.Is(err, backend.ErrNoNode):
		return false
	}
	t.Fatalf("observer get %s: %v", path, err)
	return false
}

// logged reports how many times d logged msg.
func (e *zkEnv) logged(msg string) int { return e.logs.FilterMessage(msg).Len() }

// Messages of deleteUntilGone the tests wait for.
const (
	deleteLost    = "background delete lost to the connection; will retry"
	deleteRetried = "deleted after connection loss"
	deleteNotOurs = "background delete: the node is gone or not this session's"
)

func (c *conn) isDisconnected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.disconnected
}

// TestDiscardThroughConnectionLoss: the background delete of a node the
// Conn made but could not return (discard, as CreateAndList does) is lost
// with the connection: the request is swallowed, then the connection cut
// and refused for a while. The node must not stay for the rest of the
// session: once the session is connected again the delete is sent again.
func TestDiscardThroughConnectionLoss(t *testing.T) {
	e := newZKEnv(t)
	ctx := context.Background()
	n, _, err := e.c.CreateAndList(ctx, "/q/lock-", nil, queueJoin)
	if err != nil {
		t.Fatal(err)
	}

	e.g.blackhole()
	e.c.discard(n)
	if !waitUntil(5*time.Second, func() bool { return e.g.swallowed() > 0 }) {
		t.Fatal("the delete was not sent")
	}
	e.g.cut()
	if !waitUntil(5*time.Second, e.c.isDisconnected) {
		t.Fatal("the session did not report the disconnection")
	}
	// go-zookeeper fails the swallowed request once its connection is cut.
	if !waitUntil(15*time.Second, func() bool { return e.logged(deleteLost) > 0 }) {
		t.Fatal("the delete was not reported lost to the connection")
	}
	if !e.exists(t, n.Path) {
		t.Fatal("node deleted while the connection was down")
	}

	e.g.heal()
	if !waitUntil(15*time.Second, func() bool { return !e.exists(t, n.Path) }) {
		t.Fatalf("%s still there after the session reconnected: the lost delete was not retried", n.Path)
	}
	if e.c.usable() != nil {
		t.Fatal("the session did not survive the outage")
	}
	// The retry logs right after its delete returns.
	if !waitUntil(5*time.Second, func() bool { return e.logged(deleteRetried) > 0 }) || e.logged(deleteRetried) != 1 {
		t.Fatalf("%q logged %d times, want once: the node went some other way", deleteRetried, e.logged(deleteRetried))
	}
}

// TestDiscardEndsWithTheSession: a background delete waiting for the
// connection ends when the Conn is closed (Close waits for it; the
// cleanup checks that no goroutine is left).
func TestDiscardEndsWithTheSession(t *testing.T) {
	e := newZKEnv(t)
	ctx := context.Background()
	n, _, err := e.c.CreateAndList(ctx, "/q/lock-", nil, queueJoin)
	if err != nil {
		t.Fatal(err)
	}
	e.g.cut()
	if !waitUntil(5*time.Second, e.c.isDisconnected) {
		t.Fatal("the session did not report the disconnection")
	}
	e.c.discard(n)
	e.c.unpinLater(n.Path + "-pin")
	time.Sleep(100 * time.Millisecond)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	_ = e.c.Close(cctx) // closeSession cannot be delivered: the dialer refuses
	if el := time.Since(start); el > 4*time.Second {
		t.Errorf("Close took %v", el)
	}
}

// TestRetriedDeleteSparesAnotherSessionsNode: the background delete of a
// fixed-path ephemeral node of this Conn is lost with the connection;
// meanwhile the node goes (an operator) and another session creates the
// same path, at the same version. The retry must see that the node is no
// longer this session's and leave it.
func TestRetriedDeleteSparesAnotherSessionsNode(t *testing.T) {
	e := newZKEnv(t)
	ctx := context.Background()
	const path = "/fixed/owner"
	n, err := e.c.Create(ctx, path, nil, backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}

	e.g.blackhole()
	// deleteLater's work, on a goroutine the test waits for.
	deleted := make(chan struct{})
	go func() {
		defer close(deleted)
		e.c.deleteUntilGone(n.Path, zkVersion(n.Version), false)
	}()
	if !waitUntil(5*time.Second, func() bool { return e.g.swallowed() > 0 }) {
		t.Fatal("the delete was not sent")
	}
	e.g.cut()
	if !waitUntil(5*time.Second, e.c.isDisconnected) {
		t.Fatal("the session did not report the disconnection")
	}
	// The operator deletes the node and another session takes the path.
	if err := e.obs.Delete(ctx, path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	theirs, err := e.obs.Create(ctx, path, nil, backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	if theirs.Version != n.Version {
		t.Fatalf("versions %d and %d: the test needs them equal", theirs.Version, n.Version)
	}
	if !waitUntil(15*time.Second, func() bool { return e.logged(deleteLost) > 0 }) {
		t.Fatal("the delete was not reported lost to the connection")
	}
	e.g.heal()
	select {
	case <-deleted: // the retry has run, and returned
	case <-time.After(15 * time.Second):
		t.Fatal("the background delete did not finish after the session reconnected")
	}
	got, err := e.obs.Get(ctx, path)
	if err != nil || got.Token != theirs.Token {
		t.Fatalf("the other session's node: %+v, %v; want it kept (token %d)", got, err, theirs.Token)
	}
	if e.logged(deleteNotOurs) != 1 {
		t.Fatalf("the retry did not find the node another session's (%q not logged)", deleteNotOurs)
	}
}

// TestLaterCreateWaitsForTheCleanup: a create of a fixed path is swallowed
// and its caller gives up (ctx ends); the Conn must then find out in the
// background whether it was applied, and delete its node if so, telling the
// node by its path and owner. The caller creates the same path again while
// that is unresolved: the second create must wait for the cleanup, which
// would otherwise find the second create's node, take it for the first
// one's and delete it under its holder.
func TestLaterCreateWaitsForTheCleanup(t *testing.T) {
	e := newZKEnv(t)
	const path = "/fixed2/owner"
	eph := backend.CreateOptions{Ephemeral: true}
	if _, err := e.c.Create(context.Background(), "/fixed2", nil, backend.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.g.blackhole()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := e.c.Create(ctx, path, nil, eph); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("swallowed create: %v, want its ctx's deadline", err)
	}
	type outcome struct {
		n   backend.Node
		err error
	}
	second := make(chan outcome, 1)
	go func() {
		n, err := e.c.Create(context.Background(), path, nil, eph)
		second <- outcome{n, err}
	}()
	e.g.cut()
	if !waitUntil(5*time.Second, e.c.isDisconnected) {
		t.Fatal("the session did not report the disconnection")
	}
	e.g.heal()
	var o outcome
	select {
	case o = <-second:
	case <-time.After(20 * time.Second):
		t.Fatal("the second create did not return after the session reconnected")
	}
	if o.err != nil {
		t.Fatalf("second create: %v", o.err)
	}
	if !waitUntil(15*time.Second, func() bool { return e.logged(createResolved) > 0 }) {
		t.Fatal("the first create was never resolved")
	}
	got, err := e.obs.Get(context.Background(), path)
	if err != nil || got.Token != o.n.Token {
		t.Fatalf("the second create's node (token %d): %+v, %v; the cleanup of the first one deleted it", o.n.Token, got, err)
	}
}

// TestLookupSkipsThePin: after a lost reply, the lookup of a protected
// stamped create finds the node, never its pin (a sibling that starts with
// the same protected prefix), whatever order the server lists them in.
func TestLookupSkipsThePin(t *testing.T) {
	e := newZKEnv(t)
	ctx := context.Background()
	for i := range 10 {
		n, st, err := e.c.CreateStamped(ctx, "/stampdir/x", nil, backend.CreateOptions{Ephemeral: true, Protected: true})
		if err != nil {
			t.Fatal(err)
		}
		parent, name := backend.Split(n.Path)
		prefix := name[:len(name)-len("x")]
		r := &createReq{parent: parent, name: name, full: n.Path, prefix: prefix,
			opts: backend.CreateOptions{Ephemeral: true, Protected: true}}
		got, found, err := e.c.lookup(ctx, r)
		if err != nil || !found || got.Path != n.Path {
			t.Fatalf("round %d: lookup = %s, %v, %v; want the node %s (pin %s)", i, got.Path, found, err, n.Path, st.Pin)
		}
		if err := e.c.DeleteStamped(ctx, n.Path, n.Version, st); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCloseOnSilentConnection: Close on a connection that has gone silent
// (replies stop; go-zookeeper has not noticed yet) cannot have told the
// server, which keeps the session and its ephemeral node: Close must not
// report success.
func TestCloseOnSilentConnection(t *testing.T) {
	e := newZKEnv(t)
	ctx := context.Background()
	n, err := e.c.Create(ctx, "/silent/eph", nil, backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	e.g.blackhole()
	cctx, cancel := context.WithTimeout(ctx, 8*time.Second) // session.Close's bound: the timeout
	defer cancel()
	err = e.c.Close(cctx)
	if !errors.Is(err, backend.ErrConnectionLoss) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close on a silent connection: %v, want ErrConnectionLoss (or the deadline)", err)
	}
	if !e.exists(t, n.Path) {
		t.Fatalf("%s gone: the server was told after all, and Close said %v", n.Path, err)
	}
	e.g.cut()
}
