package integration_test

// Real-server tests of the ZooKeeper driver (backend/zookeeper): the
// behaviours that are specific to it and that neither the conformance suite
// (conformance_test.go) nor the session-level fault tests cover. The helpers
// at the top are shared with etcd_driver_test.go.

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	zkdrv "github.com/coordkit/coordkit/backend/zookeeper"
	"github.com/coordkit/coordkit/integration"
)

// ---- helpers shared by the driver tests ------------------------------

// testCtx returns a context that bounds the calls of one test (30s) and is
// cancelled when the test ends.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openConn opens a session on d (bounded by 20s) and checks that its first
// event is StateConnected. The driver's cleanup closes it.
func openConn(t *testing.T, d backend.Driver, ttl time.Duration) backend.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.Open(ctx, ttl)
	if err != nil {
		t.Fatalf("%s: Open: %v", d.Name(), err)
	}
	expectState(t, c, backend.StateConnected, 5*time.Second)
	return c
}

// expectState reads c's next event and fails the test unless it has state
// want and arrives within the bound.
func expectState(t *testing.T, c backend.Conn, want backend.ConnState, within time.Duration) backend.ConnEvent {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case ev, ok := <-c.Events():
		if !ok {
			t.Fatalf("events closed while waiting for %v", want)
		}
		if ev.State != want {
			t.Fatalf("event %v (%v), want %v", ev.State, ev.Err, want)
		}
		return ev
	case <-timer.C:
		t.Fatalf("no %v event within %v", want, within)
	}
	panic("unreachable")
}

// expectEventsEnd reads c's remaining events until the channel is closed
// (bounded) and fails the test unless they are exactly want.
func expectEventsEnd(t *testing.T, c backend.Conn, within time.Duration, want ...backend.ConnState) {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	var got []backend.ConnState
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				if !slices.Equal(got, want) {
					t.Fatalf("events before the channel closed: %v, want %v", got, want)
				}
				return
			}
			got = append(got, ev.State)
		case <-timer.C:
			t.Fatalf("events not closed within %v (got %v, want %v)", within, got, want)
		}
	}
}

// expectWatch waits (bounded) for w's event and fails the test unless it
// has type typ and, when want is not nil, an error matching want.
func expectWatch(t *testing.T, w *backend.Watch, typ backend.EventType, want error, within time.Duration) {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case ev := <-w.C():
		if ev.Type != typ || (want != nil && !errors.Is(ev.Err, want)) {
			t.Fatalf("watch event %v (%v) on %s, want %v (%v)", ev.Type, ev.Err, ev.Path, typ, want)
		}
	case <-timer.C:
		t.Fatalf("no %v watch event within %v", typ, within)
	}
}

// expectErr fails the test unless err matches want.
func expectErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

// receive waits (bounded) for a value on ch.
func receive[T any](t *testing.T, what string, ch <-chan T, within time.Duration) T {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("%s: nothing within %v", what, within)
	}
	panic("unreachable")
}

// waitUntil polls cond every 20ms until it holds, failing the test after
// within. It is for conditions on server state that offer no notification.
func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sessionNumber parses a Conn's SessionID (lower-case hex, the ZooKeeper
// session id or the etcd lease id).
func sessionNumber(t *testing.T, c backend.Conn) int64 {
	t.Helper()
	u, err := strconv.ParseUint(c.SessionID(), 16, 64)
	if err != nil {
		t.Fatalf("SessionID %q: %v", c.SessionID(), err)
	}
	return int64(u)
}

// lossyDialer opens a client's connections to a kit Proxy and wraps them so
// that a test can make the client lose the server's replies while its
// requests still reach the server: the "applied, reply lost" fault that the
// Proxy cannot inject, since its faults act on both directions. The test
// then cuts the connections with the Proxy's DropConnections. For the
// ZooKeeper protocol it also reports the opcode of every request written
// (not the handshake nor pings), so a test can wait until one is in flight.
type lossyDialer struct {
	addr     string
	zk       bool
	requests chan int32

	mu    sync.Mutex
	conns []*lossyConn
}

// newLossyDialer returns a dialer to the proxy at addr; zk selects the
// ZooKeeper request reporting.
func newLossyDialer(addr string, zk bool) *lossyDialer {
	return &lossyDialer{addr: addr, zk: zk, requests: make(chan int32, 256)}
}

// dialZK is a zk.Dialer (for zookeeper.WithDialer).
func (d *lossyDialer) dialZK(network, _ string, timeout time.Duration) (net.Conn, error) {
	nc, err := net.DialTimeout(network, d.addr, timeout)
	if err != nil {
		return nil, err
	}
	return d.wrap(nc), nil
}

// dialContext is a gRPC context dialer (for grpc.WithContextDialer).
func (d *lossyDialer) dialContext(ctx context.Context, _ string) (net.Conn, error) {
	var nd net.Dialer
	nc, err := nd.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	return d.wrap(nc), nil
}

func (d *lossyDialer) wrap(nc net.Conn) net.Conn {
	c := &lossyConn{Conn: nc, d: d}
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	return c
}

// loseReplies makes the connections dialled so far discard everything the
// server sends; later connections are not affected.
func (d *lossyDialer) loseReplies() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.swallow.Store(true)
	}
	d.conns = nil
}

// drainRequests forgets the requests reported so far.
func (d *lossyDialer) drainRequests() {
	for {
		select {
		case <-d.requests:
		default:
			return
		}
	}
}

// waitRequests waits (bounded) until the client has written, or is writing,
// a request with each of the opcodes ops since the last drainRequests.
func (d *lossyDialer) waitRequests(t *testing.T, within time.Duration, ops ...int32) {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for len(ops) > 0 {
		select {
		case op := <-d.requests:
			if i := slices.Index(ops, op); i >= 0 {
				ops = slices.Delete(ops, i, i+1)
			}
		case <-timer.C:
			t.Fatalf("requests with opcodes %v not written within %v", ops, within)
		}
	}
}

// ZooKeeper request opcodes (the jute protocol).
const (
	zkOpCreate = 1
	zkOpPing   = 11
	zkOpMulti  = 14
)

type lossyConn struct {
	net.Conn
	d       *lossyDialer
	greeted atomic.Bool // the ZooKeeper ConnectRequest was written
	swallow atomic.Bool
}

// Write reports the opcode of each ZooKeeper request (go-zookeeper writes
// one request per call: length, xid, opcode, body).
func (c *lossyConn) Write(b []byte) (int, error) {
	// The opcode is recorded before the request is written: once written,
	// the reply can come back, and the call return, before this goroutine
	// runs again, and a test that drains the record then would count the
	// request in its next window.
	if c.d.zk && c.greeted.Swap(true) && len(b) >= 12 {
		if op := int32(binary.BigEndian.Uint32(b[8:12])); op != zkOpPing {
			select {
			case c.d.requests <- op:
			default:
			}
		}
	}
	return c.Conn.Write(b)
}

// Read discards what the server sends once the connection is lossy.
func (c *lossyConn) Read(b []byte) (int, error) {
	for {
		n, err := c.Conn.Read(b)
		if !c.swallow.Load() {
			return n, err
		}
		if err != nil {
			return 0, err
		}
	}
}

// ---- ZooKeeper helpers -------------------------------------------------

// zkScratch creates a persistent node for the test's nodes with the raw
// client and removes it, with everything below it, when the test ends.
func zkScratch(t *testing.T, raw *zk.Conn) string {
	t.Helper()
	base := uniquePath(t)
	if _, err := raw.Create(base, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatalf("create %s: %v", base, err)
	}
	t.Cleanup(func() { zkRemoveTree(t, raw, base) })
	return base
}

// zkRemoveTree deletes path and its descendants, if they exist.
func zkRemoveTree(t *testing.T, raw *zk.Conn, path string) {
	kids, _, err := raw.Children(path)
	if errors.Is(err, zk.ErrNoNode) {
		return
	}
	if err != nil {
		t.Errorf("cleanup: children of %s: %v", path, err)
		return
	}
	for _, k := range kids {
		zkRemoveTree(t, raw, path+"/"+k)
	}
	if err := raw.Delete(path, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
		t.Errorf("cleanup: delete %s: %v", path, err)
	}
}

// zkChildren lists path's children with the raw client.
func zkChildren(t *testing.T, raw *zk.Conn, path string) []string {
	t.Helper()
	kids, _, err := raw.Children(path)
	if err != nil {
		t.Fatalf("children of %s: %v", path, err)
	}
	return kids
}

// zkChildAdded arms a child watch on path with the raw client and returns a
// channel that receives once the watch fires: proof that the server applied
// a create below path, whatever the creating client heard.
func zkChildAdded(t *testing.T, raw *zk.Conn, path string) <-chan zk.Event {
	t.Helper()
	_, _, ch, err := raw.ChildrenW(path)
	if err != nil {
		t.Fatalf("watch children of %s: %v", path, err)
	}
	return ch
}

// zkGone waits (bounded) until path does not exist.
func zkGone(t *testing.T, raw *zk.Conn, path string, within time.Duration) {
	t.Helper()
	waitUntil(t, path+" deleted", within, func() bool {
		ok, _, err := raw.Exists(path)
		return err == nil && !ok
	})
}

// ---- tests -------------------------------------------------------------

// After the server has expired the session, the driver never lets
// go-zookeeper open a new session: creates in flight at the time fail with
// ErrSessionLost and are never applied, watches are lost, every later call
// fails, and the proxy sees no connection after the one that learnt of the
// expiry.
func TestZooKeeperDriver_ExpiredSessionIsNeverReplaced(t *testing.T) {
	zkc := sharedZK.Get(t)
	raw, _ := connectZK(t, zkc.Addrs(), 10*time.Second)
	base := zkScratch(t, raw)
	p := integration.NewZooKeeperProxy(t, zkc.Addr(0))
	wire := newLossyDialer(p.Addr(), true)
	// Three addresses, as for an ensemble, all reaching the proxy:
	// go-zookeeper then redials at once instead of pausing after each
	// round of its server list, so nothing would hold back a new session.
	servers := []string{p.Addr(), p.Addr(), p.Addr()}
	d := openZooKeeperDriver(t, servers, zkdrv.WithDialer(wire.dialZK))
	c := openConn(t, d, 4*time.Second)
	ctx := testCtx(t)

	if _, err := c.Create(ctx, base+"/e", nil, backend.CreateOptions{Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
	_, _, w, err := c.Watch(ctx, base+"/never")
	if err != nil {
		t.Fatal(err)
	}
	sid := sessionNumber(t, c)
	passwd, ok := p.ZooKeeperSession(sid)
	if !ok {
		t.Fatalf("proxy did not see session %s", c.SessionID())
	}

	// Two recoverable creates in flight on a connection that drops
	// everything: their outcome stays unknown until the session is over.
	p.Blackhole()
	wire.drainRequests()
	results := make(chan error, 2)
	for _, op := range []struct {
		path string
		opts backend.CreateOptions
	}{
		{base + "/queued", backend.CreateOptions{Ephemeral: true}},
		{base + "/queued-", backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true}},
	} {
		go func() {
			_, err := c.Create(ctx, op.path, nil, op.opts)
			results <- err
		}()
	}
	wire.waitRequests(t, 10*time.Second, zkOpMulti, zkOpCreate)

	if err := integration.ExpireZooKeeperSession(ctx, zkc.Addr(0), sid, passwd); err != nil {
		t.Fatal(err)
	}
	expectState(t, c, backend.StateDisconnected, 10*time.Second)
	// One connection accepted from now on learns of the expiry (none if
	// one accepted just before gets its handshake through); a second
	// would carry a new session.
	accepted := p.Accepted()
	p.Unblackhole()
	ev := expectState(t, c, backend.StateExpired, 20*time.Second)
	expiredAt := time.Now()
	expectErr(t, "StateExpired.Err", ev.Err, coordkit.ErrSessionLost)

	for range 2 {
		expectErr(t, "create in flight at expiry", receive(t, "create in flight", results, 10*time.Second), coordkit.ErrSessionLost)
	}
	expectWatch(t, w, backend.EventLost, coordkit.ErrSessionLost, 5*time.Second)
	_, err = c.Get(ctx, base)
	expectErr(t, "Get after expiry", err, coordkit.ErrSessionLost)
	_, err = c.Create(ctx, base+"/late", nil, backend.CreateOptions{})
	expectErr(t, "Create after expiry", err, coordkit.ErrSessionLost)

	// Proving that no new session is made takes an observation window:
	// left to itself, go-zookeeper redials within about a second (its
	// pause after each round of the server list). Then Close stops its
	// loop for good.
	time.Sleep(time.Until(expiredAt.Add(2 * time.Second)))
	if got := p.Accepted() - accepted; got > 1 {
		t.Fatalf("proxy accepted %d connections after the partition, want at most the one that learnt of the expiry", got)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close after expiry: %v", err)
	}
	expectEventsEnd(t, c, 5*time.Second)
	waitUntil(t, "proxy connections closed", 5*time.Second, func() bool { return p.Connections() == 0 })
	if kids := zkChildren(t, raw, base); len(kids) != 0 {
		t.Fatalf("nodes left after expiry: %v (the ephemeral node must be gone, the creates never applied)", kids)
	}
}

// A create whose reply is lost (the server applied it, then the connection
// broke) is resolved after the reconnection: a protected node is found by
// its prefix and a fixed-path ephemeral node by its owner, so exactly one
// node exists and Create returns it. An unprotected sequential create
// cannot be resolved and reports ErrConnectionLoss, without a second node.
func TestZooKeeperDriver_LostCreateReply(t *testing.T) {
	zkc := sharedZK.Get(t)
	raw, _ := connectZK(t, zkc.Addrs(), 10*time.Second)
	base := zkScratch(t, raw)
	p := integration.NewZooKeeperProxy(t, zkc.Addr(0))
	wire := newLossyDialer(p.Addr(), true)
	d := openZooKeeperDriver(t, zkc.Addrs(), zkdrv.WithDialer(wire.dialZK))
	c := openConn(t, d, 6*time.Second)

	for _, tc := range []struct {
		name string
		opts backend.CreateOptions
		lost bool // the outcome cannot be resolved
	}{
		{"protected", backend.CreateOptions{Protected: true}, false},
		{"protected-ephemeral", backend.CreateOptions{Protected: true, Ephemeral: true}, false},
		{"protected-sequential", backend.CreateOptions{Protected: true, Sequential: true}, false},
		{"protected-ephemeral-sequential", backend.CreateOptions{Protected: true, Ephemeral: true, Sequential: true}, false},
		{"ephemeral", backend.CreateOptions{Ephemeral: true}, false},
		{"sequential", backend.CreateOptions{Sequential: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			parent := base + "/" + tc.name
			if _, err := raw.Create(parent, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
				t.Fatal(err)
			}
			applied := zkChildAdded(t, raw, parent)
			wire.loseReplies()
			type result struct {
				n   backend.Node
				err error
			}
			done := make(chan result, 1)
			go func() {
				n, err := c.Create(ctx, parent+"/n-", []byte("d"), tc.opts)
				done <- result{n, err}
			}()
			receive(t, "server applies the create", applied, 10*time.Second)
			p.DropConnections()
			r := receive(t, "Create", done, 20*time.Second)
			expectState(t, c, backend.StateDisconnected, 10*time.Second)
			expectState(t, c, backend.StateReconnected, 20*time.Second)

			kids := zkChildren(t, raw, parent)
			if len(kids) != 1 {
				t.Fatalf("children after the lost reply: %v, want exactly one", kids)
			}
			if tc.lost {
				expectErr(t, "Create", r.err, backend.ErrConnectionLoss)
				return
			}
			if r.err != nil {
				t.Fatalf("Create: %v", r.err)
			}
			data, st, err := raw.Get(parent + "/" + kids[0])
			if err != nil {
				t.Fatal(err)
			}
			wantOwner := ""
			if tc.opts.Ephemeral {
				wantOwner = c.SessionID()
			}
			if r.n.Path != parent+"/"+kids[0] || r.n.Token != st.Czxid || r.n.Owner != wantOwner ||
				string(data) != "d" || r.n.Sequential != tc.opts.Sequential {
				t.Fatalf("Create returned %+v; the server has %s (czxid %d, data %q)", r.n, kids[0], st.Czxid, data)
			}
		})
	}
}

// A create whose caller's ctx ends before the outcome is known leaves no
// node: the driver deletes it when the late reply arrives, or finds and
// deletes it after the reconnection when the reply was lost.
func TestZooKeeperDriver_AbandonedCreateLeavesNothing(t *testing.T) {
	zkc := sharedZK.Get(t)
	raw, _ := connectZK(t, zkc.Addrs(), 10*time.Second)
	base := zkScratch(t, raw)
	p := integration.NewZooKeeperProxy(t, zkc.Addr(0))
	wire := newLossyDialer(p.Addr(), true)
	d := openZooKeeperDriver(t, zkc.Addrs(), zkdrv.WithDialer(wire.dialZK))
	c := openConn(t, d, 6*time.Second)

	// prepare creates the parent of the test's node and arms a child watch
	// on it.
	prepare := func(t *testing.T, name string) (parent string, applied <-chan zk.Event) {
		parent = base + "/" + name
		if _, err := raw.Create(parent, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
		return parent, zkChildAdded(t, raw, parent)
	}
	// start creates parent/n- in the background with a ctx the test
	// cancels, and returns the cancel and the channel of Create's error.
	start := func(t *testing.T, parent string, opts backend.CreateOptions) (context.CancelFunc, <-chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		done := make(chan error, 1)
		go func() {
			_, err := c.Create(ctx, parent+"/n-", []byte("d"), opts)
			done <- err
		}()
		return cancel, done
	}
	empty := func(t *testing.T, parent string) {
		t.Helper()
		waitUntil(t, "abandoned node deleted", 10*time.Second, func() bool { return len(zkChildren(t, raw, parent)) == 0 })
		if _, err := c.Get(testCtx(t), parent); err != nil {
			t.Fatalf("session unusable afterwards: %v", err)
		}
	}

	for _, tc := range []struct {
		name string
		opts backend.CreateOptions
		op   int32
	}{
		{"late-reply-protected-sequential", backend.CreateOptions{Protected: true, Sequential: true}, zkOpCreate},
		{"late-reply-ephemeral", backend.CreateOptions{Ephemeral: true}, zkOpMulti},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The request waits in the paused proxy while the ctx ends;
			// the server applies it once the proxy resumes.
			parent, applied := prepare(t, tc.name)
			wire.drainRequests()
			p.Pause()
			cancel, done := start(t, parent, tc.opts)
			wire.waitRequests(t, 10*time.Second, tc.op)
			cancel()
			expectErr(t, "Create with a cancelled ctx", receive(t, "Create", done, 5*time.Second), context.Canceled)
			p.Resume()
			receive(t, "server applies the create", applied, 10*time.Second)
			empty(t, parent)
		})
	}

	t.Run("lost-reply-protected-sequential", func(t *testing.T) {
		// The server applies the create and the reply is lost; the ctx
		// ends, then the connection breaks: the driver finds the node
		// after the reconnection and deletes it.
		parent, applied := prepare(t, "lost-reply")
		wire.loseReplies()
		cancel, done := start(t, parent, backend.CreateOptions{Protected: true, Sequential: true})
		receive(t, "server applies the create", applied, 10*time.Second)
		cancel()
		expectErr(t, "Create with a cancelled ctx", receive(t, "Create", done, 5*time.Second), context.Canceled)
		p.DropConnections()
		expectState(t, c, backend.StateDisconnected, 10*time.Second)
		expectState(t, c, backend.StateReconnected, 20*time.Second)
		empty(t, parent)
	})
}

// Open gives up when its ctx ends: at once with a cancelled ctx (nothing
// dialled), and at the deadline while the server does not answer, closing
// the half-open connection.
func TestZooKeeperDriver_OpenCancelled(t *testing.T) {
	zkc := sharedZK.Get(t)
	p := integration.NewZooKeeperProxy(t, zkc.Addr(0))
	d := openZooKeeperDriver(t, zkc.Addrs(), zkdrv.WithDialer(newLossyDialer(p.Addr(), false).dialZK))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := d.Open(ctx, 4*time.Second)
	expectErr(t, "Open with a cancelled ctx", err, context.Canceled)
	if n := p.Accepted(); n != 0 {
		t.Fatalf("Open with a cancelled ctx dialled %d connections", n)
	}

	p.Blackhole()
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err = d.Open(ctx, 4*time.Second)
	expectErr(t, "Open through a blackhole", err, context.DeadlineExceeded)
	if el := time.Since(begin); el > 2*time.Second {
		t.Fatalf("Open returned %v after its deadline", el-500*time.Millisecond)
	}
	if p.Accepted() == 0 {
		t.Fatal("Open through a blackhole did not dial")
	}
	waitUntil(t, "half-open connection closed", 5*time.Second, func() bool { return p.Connections() == 0 })
	begin = time.Now()
	if err := d.Close(); err != nil {
		t.Fatalf("driver Close: %v", err)
	}
	if el := time.Since(begin); el > 2*time.Second {
		t.Fatalf("driver Close took %v", el)
	}
}

// Close returns promptly when the server cannot be reached or its ctx has
// already ended, releases the connection, loses the watches with ErrClosed
// and ends the events with StateClosed; the session then ends on the
// server, by closeSession or by expiry, and its ephemeral node with it.
func TestZooKeeperDriver_CloseIsBounded(t *testing.T) {
	zkc := sharedZK.Get(t)
	raw, _ := connectZK(t, zkc.Addrs(), 10*time.Second)
	base := zkScratch(t, raw)

	for _, partitioned := range []bool{true, false} {
		name := map[bool]string{true: "partitioned", false: "cancelled-ctx"}[partitioned]
		t.Run(name, func(t *testing.T) {
			p := integration.NewZooKeeperProxy(t, zkc.Addr(0))
			d := openZooKeeperDriver(t, zkc.Addrs(), zkdrv.WithDialer(newLossyDialer(p.Addr(), false).dialZK))
			c := openConn(t, d, 2*time.Second)
			eph := base + "/" + name
			if _, err := c.Create(testCtx(t), eph, nil, backend.CreateOptions{Ephemeral: true}); err != nil {
				t.Fatal(err)
			}
			_, _, w, err := c.Watch(testCtx(t), base+"/never")
			if err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			if partitioned {
				p.Blackhole()
			} else {
				cancel()
			}
			begin := time.Now()
			err = c.Close(ctx)
			if el := time.Since(begin); el > 1500*time.Millisecond {
				t.Fatalf("Close took %v (err %v)", el, err)
			}
			if partitioned {
				expectErr(t, "Close while partitioned", err, context.DeadlineExceeded)
			} else if err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("Close with a cancelled ctx: %v", err)
			}
			expectWatch(t, w, backend.EventLost, coordkit.ErrClosed, 5*time.Second)
			expectEventsEnd(t, c, 5*time.Second, backend.StateClosed)
			_, err = c.Get(testCtx(t), base)
			expectErr(t, "Get after Close", err, coordkit.ErrClosed)
			waitUntil(t, "proxy connections closed", 5*time.Second, func() bool { return p.Connections() == 0 })
			zkGone(t, raw, eph, 4*c.Timeout()+2*time.Second)
		})
	}
}

// A watch armed before a reconnection still fires afterwards (go-zookeeper
// re-registers it on the new connection), both for a change made after the
// reconnection and for changes made while the client was cut off.
func TestZooKeeperDriver_ReconnectRearmsWatches(t *testing.T) {
	zkc := sharedZK.Get(t)
	raw, _ := connectZK(t, zkc.Addrs(), 10*time.Second)
	base := zkScratch(t, raw)
	for _, n := range []string{"/b", "/kids"} {
		if _, err := raw.Create(base+n, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
	}
	p := integration.NewZooKeeperProxy(t, zkc.Addr(0))
	d := openZooKeeperDriver(t, zkc.Addrs(), zkdrv.WithDialer(newLossyDialer(p.Addr(), false).dialZK))
	c := openConn(t, d, 3*time.Second)
	sid := c.SessionID()
	ctx := testCtx(t)

	_, existed, wa, err := c.Watch(ctx, base+"/a")
	if err != nil || existed {
		t.Fatalf("Watch a: exists %v, %v", existed, err)
	}
	_, _, wb, err := c.Watch(ctx, base+"/b")
	if err != nil {
		t.Fatal(err)
	}
	_, wk, err := c.WatchChildren(ctx, base+"/kids")
	if err != nil {
		t.Fatal(err)
	}

	// Connection reset: the change comes after the reconnection.
	p.DropConnections()
	expectState(t, c, backend.StateDisconnected, 10*time.Second)
	expectState(t, c, backend.StateReconnected, 20*time.Second)
	if _, err := raw.Create(base+"/a", nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	expectWatch(t, wa, backend.EventCreated, nil, 10*time.Second)

	// Partition: the changes happen while the client is cut off.
	p.Blackhole()
	expectState(t, c, backend.StateDisconnected, 10*time.Second)
	if _, err := raw.Set(base+"/b", []byte("x"), -1); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Create(base+"/kids/x", nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	p.Unblackhole()
	expectState(t, c, backend.StateReconnected, 20*time.Second)
	expectWatch(t, wb, backend.EventChanged, nil, 10*time.Second)
	expectWatch(t, wk, backend.EventChildren, nil, 10*time.Second)
	if got := c.SessionID(); got != sid {
		t.Fatalf("session changed from %s to %s", sid, got)
	}
}

// Killing the ensemble's leader does not end the session: the Conn
// reconnects to the same session, its ephemeral node keeps its token, and a
// node created afterwards gets a token from the new leader's epoch (the high
// 32 bits of the zxid), larger than every earlier one.
func TestZooKeeperDriver_EnsembleLeaderKill(t *testing.T) {
	zkc := integration.StartZooKeeper(t, integration.WithMembers(3))
	requireControl(t, zkc, "ZooKeeper ensemble")
	d := openZooKeeperDriver(t, zkc.Addrs())
	c := openConn(t, d, 10*time.Second)
	ctx := testCtx(t)
	base := uniquePath(t)
	before, err := c.Create(ctx, base+"/e", []byte("x"), backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}

	leader := zkc.Leader(t)
	zkc.Kill(t, leader)
	expectState(t, c, backend.StateDisconnected, 15*time.Second)
	expectState(t, c, backend.StateReconnected, 20*time.Second)

	got, err := c.Get(ctx, before.Path)
	if err != nil || got.Token != before.Token || got.Owner != c.SessionID() {
		t.Fatalf("ephemeral node after the failover: %+v, %v (was %+v)", got, err, before)
	}
	after, err := c.Create(ctx, base+"/f", nil, backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	if after.Token>>32 <= before.Token>>32 {
		t.Fatalf("token %#x after the leader change, %#x before: want a later epoch", after.Token, before.Token)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	other := openConn(t, d, 10*time.Second)
	if kids, err := other.Children(ctx, base); err != nil || len(kids) != 0 {
		t.Fatalf("children after Close: %v, %v", kids, err)
	}
}

// requestsSince returns the opcodes the client has written since the last
// drainRequests (pings excluded), once it has written want of them, or
// whatever it wrote within a second more.
func (d *lossyDialer) requestsSince(want int) []int32 {
	var ops []int32
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	for {
		select {
		case op := <-d.requests:
			ops = append(ops, op)
		default:
			if len(ops) >= want {
				return ops
			}
			select {
			case op := <-d.requests:
				ops = append(ops, op)
			case <-timer.C:
				return ops
			}
		}
	}
}

// More ZooKeeper request opcodes.
const (
	zkOpDelete          = 2
	zkOpExists          = 3
	zkOpGetData         = 4
	zkOpGetChildren2    = 12
	zkOpCreateContainer = 19
)

// The reads that ride on a create are sent behind it, not after its reply:
// a queue join (CreateAndList of a protected sequential node) is a multi of
// the create and an empty setData of the parent, whose mzxid is the new
// node's czxid, with the listing pipelined: two requests and no token read;
// CreateAndWatch of a fixed node is the create multi and a pipelined
// ExistsW. Both return exactly what the server holds (czxid, listing), and
// a parent the session may not write still works, by a plain create and a
// token read.
func TestZooKeeperDriver_PipelinedCreates(t *testing.T) {
	zkc := sharedZK.Get(t)
	raw, _ := connectZK(t, zkc.Addrs(), 10*time.Second)
	base := zkScratch(t, raw)
	wire := newLossyDialer(zkc.Addr(0), true)
	d := openZooKeeperDriver(t, zkc.Addrs(), zkdrv.WithDialer(wire.dialZK))
	c := openConn(t, d, 6*time.Second)
	ctx := testCtx(t)
	czxid := func(path string) int64 {
		t.Helper()
		ok, st, err := raw.Exists(path)
		if err != nil || !ok {
			t.Fatalf("exists %s: %v %v", path, ok, err)
		}
		return st.Czxid
	}

	t.Run("queue-join", func(t *testing.T) {
		// A persistent directory: a container the driver made would be
		// reaped by the server, on its own schedule, whenever a join has
		// just left it empty, and made again by the next one.
		dir := base + "/q"
		if _, err := raw.Create(dir, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
			t.Fatal(err)
		}
		const joins = 20
		var written []int32
		var prev int64
		for i := range joins + 1 {
			wire.drainRequests()
			n, kids, err := c.CreateAndList(ctx, dir+"/lock-", []byte("d"), backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true})
			if err != nil {
				t.Fatal(err)
			}
			ops := wire.requestsSince(2)
			if i > 0 { // the first join is a warm-up
				written = append(written, ops...)
			}
			if n.Token != czxid(n.Path) || n.Token <= prev || n.Version != 0 || n.Owner != c.SessionID() {
				t.Fatalf("join %d: node %+v, server czxid %d, previous token %d", i, n, czxid(n.Path), prev)
			}
			prev = n.Token
			if len(kids) != 1 || kids[0].Path != n.Path {
				t.Fatalf("join %d: listing %v, want just %s", i, nodePaths(kids), n.Path)
			}
			if err := c.Delete(ctx, n.Path, n.Version); err != nil {
				t.Fatal(err)
			}
		}
		counts := map[int32]int{}
		for _, op := range written {
			counts[op]++
		}
		t.Logf("%d joins wrote %v (opcode: count)", joins, counts)
		// The listing may, rarely, reach the server first; it is then sent
		// again after the create's reply.
		if counts[zkOpMulti] != joins || counts[zkOpExists] != 0 || counts[zkOpCreate] != 0 ||
			counts[zkOpGetChildren2] < joins || counts[zkOpGetChildren2] > joins+joins/10 {
			t.Fatalf("%d joins wrote %v; want one multi and one listing each, no create, no token read", joins, counts)
		}
	})

	t.Run("create-and-watch", func(t *testing.T) {
		p := base + "/owner"
		const creates = 20
		var written []int32
		for i := range creates {
			wire.drainRequests()
			n, w, err := c.CreateAndWatch(ctx, p, nil, backend.CreateOptions{Ephemeral: true})
			if err != nil {
				t.Fatal(err)
			}
			written = append(written, wire.requestsSince(2)...)
			if n.Token != czxid(p) || w.Fired() {
				t.Fatalf("create %d: token %d, server czxid %d, fired %v", i, n.Token, czxid(p), w.Fired())
			}
			if err := raw.Delete(p, -1); err != nil {
				t.Fatal(err)
			}
			if ev := receive(t, "the watch", w.C(), 10*time.Second); ev.Type != backend.EventDeleted {
				t.Fatalf("create %d: the watch delivered %+v, want Deleted", i, ev)
			}
		}
		counts := map[int32]int{}
		for _, op := range written {
			counts[op]++
		}
		t.Logf("%d creates wrote %v (opcode: count)", creates, counts)
		if counts[zkOpMulti] != creates || counts[zkOpExists] < creates || counts[zkOpExists] > creates+creates/10 {
			t.Fatalf("%d CreateAndWatch wrote %v; want one multi and one ExistsW each", creates, counts)
		}
	})

	t.Run("parent-not-writable", func(t *testing.T) {
		dir := base + "/locked"
		acl := zk.WorldACL(zk.PermCreate | zk.PermRead | zk.PermDelete)
		if _, err := raw.Create(dir, nil, 0, acl); err != nil {
			t.Fatal(err)
		}
		// A stamped create finds out, creates nothing, and says so; from
		// then on the Conn does not try to stamp.
		for i := range 2 {
			_, _, err := c.(backend.ParentStamps).CreateStamped(ctx, dir+"/owner", nil, backend.CreateOptions{Ephemeral: true})
			if !errors.Is(err, backend.ErrNoStamp) {
				t.Fatalf("stamped create %d under a parent without WRITE: %v, want ErrNoStamp", i, err)
			}
			if kids, _, err := raw.Children(dir); err != nil || len(kids) != 0 {
				t.Fatalf("a failed stamped create left %v (%v)", kids, err)
			}
		}
		for i := range 2 {
			n, kids, err := c.CreateAndList(ctx, dir+"/lock-", nil, backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true})
			if err != nil {
				t.Fatalf("join %d under a parent without WRITE: %v", i, err)
			}
			if n.Token != czxid(n.Path) || len(kids) != 1 || kids[0].Path != n.Path {
				t.Fatalf("join %d: node %+v (server czxid %d), listing %v", i, n, czxid(n.Path), nodePaths(kids))
			}
			if err := c.Delete(ctx, n.Path, n.Version); err != nil {
				t.Fatal(err)
			}
		}
	})
}
