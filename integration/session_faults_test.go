package integration_test

// Session-level fault tests on real servers, on both backends: the session
// must report Suspended, Reconnected and Lost truthfully, within the bounds
// documented in package session, and the server must agree (ephemerals kept
// or dropped). Each test logs "BOUND" lines with what it measured.

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/backendtest"
	"github.com/coordkit/coordkit/integration"
	"github.com/coordkit/coordkit/session"
)

// slack absorbs scheduling delays on a loaded 2-core machine under -race; it
// is added to documented bounds, never used to order events.
const slack = 3 * time.Second

// observed is a session plus the ordered record of its state changes.
type observed struct {
	t  *testing.T
	s  *session.Session
	ch <-chan session.Change
}

func openObserved(t *testing.T, drv backend.Driver, opts ...session.Option) *observed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := session.New(ctx, drv, opts...)
	if err != nil {
		t.Fatalf("session.New: %v", err)
	}
	ch, stop := s.Changes()
	t.Cleanup(func() {
		stop()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return &observed{t: t, s: s, ch: ch}
}

// await returns the next change, which must be want, within d.
func (o *observed) await(want session.State, d time.Duration) session.Change {
	o.t.Helper()
	select {
	case c, ok := <-o.ch:
		if !ok {
			o.t.Fatalf("session changes ended, want %v", want)
		}
		if c.State != want {
			o.t.Fatalf("session change %v (%v), want %v", c.State, c.Err, want)
		}
		return c
	case <-time.After(d):
		o.t.Fatalf("no session change within %v, want %v (state %v)", d, want, o.s.State())
	}
	return session.Change{}
}

// quiet asserts that no change arrives for d (used to show that a session
// does NOT become Lost; it observes absence, it does not order events).
func (o *observed) quiet(d time.Duration) {
	o.t.Helper()
	select {
	case c := <-o.ch:
		o.t.Fatalf("unexpected session change %v (%v)", c.State, c.Err)
	case <-time.After(d):
	}
}

// settle consumes Suspended/Reconnected pairs (a member
// kill may or may not be noticed as a disconnect) and fails on Lost.
func (o *observed) settle(d time.Duration) (suspended int) {
	o.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case c, ok := <-o.ch:
			if !ok || c.State.Terminal() {
				o.t.Fatalf("session ended: %v (%v)", c.State, c.Err)
			}
			if c.State == session.StateSuspended {
				suspended++
			}
		case <-deadline:
			if o.s.State() == session.StateSuspended {
				o.t.Fatalf("session still suspended after %v", d)
			}
			return suspended
		}
	}
}

// backendCase is one backend under test: how to reach a server directly,
// through a proxy, and the documented detection bound for Suspended.
type backendCase struct {
	name string
	// driver returns a driver on the given addresses.
	driver func(t *testing.T, addrs []string) backend.Driver
	// suspendBound is the documented bound from the start of a partition to
	// Suspended for session timeout T.
	suspendBound func(T time.Duration) time.Duration
	// lostBound is the documented bound from the start of a partition to
	// Lost.
	lostBound func(T time.Duration) time.Duration
}

var backendCases = []backendCase{
	{
		name:   "zookeeper",
		driver: func(t *testing.T, addrs []string) backend.Driver { return openZooKeeperDriver(t, addrs) },
		// go-zookeeper's read timeout is 2/3·T; the local timer adds T.
		suspendBound: func(T time.Duration) time.Duration { return 2 * T / 3 },
		lostBound:    func(T time.Duration) time.Duration { return 2*T/3 + T },
	},
	{
		name:   "etcd",
		driver: func(t *testing.T, addrs []string) backend.Driver { return openEtcdDriver(t, addrs) },
		// SuspendAfter defaults to T/2 (at least T/3+800ms) after the last
		// keepalive reply; the driver declares the lease gone T after it.
		suspendBound: func(T time.Duration) time.Duration { return max(T/2, T/3+800*time.Millisecond) },
		lostBound:    func(T time.Duration) time.Duration { return T },
	},
}

// sharedAddrs returns the shared single server of a backend.
func sharedAddrs(t *testing.T, name string) []string {
	if name == "zookeeper" {
		return sharedZK.Get(t).Addrs()
	}
	return sharedEtcd.Get(t).Endpoints()
}

// faultRoot returns a root path of the test's own.
func faultRoot(t *testing.T) string { return testPath(t, "/coordkit-faults") }

// nodeGone waits, with a watch, until the node at path is gone as seen by
// conn, and returns how long that took.
func nodeGone(t *testing.T, conn backend.Conn, path string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		_, exists, w, err := conn.Watch(ctx, path)
		if err != nil {
			t.Fatalf("observer watch %s: %v", path, err)
		}
		if !exists {
			w.Stop()
			return time.Since(start)
		}
		select {
		case <-w.C():
		case <-ctx.Done():
			w.Stop()
			t.Fatalf("%s still exists %v later", path, within)
		}
		w.Stop()
	}
}

func mustExist(t *testing.T, conn backend.Conn, path, owner string) {
	t.Helper()
	n, err := conn.Get(context.Background(), path)
	if err != nil {
		t.Fatalf("%s: %v (want it kept)", path, err)
	}
	if n.Owner != owner {
		t.Fatalf("%s owned by %s, want %s", path, n.Owner, owner)
	}
}

func observerConn(t *testing.T, drv backend.Driver) backend.Conn {
	t.Helper()
	c, err := drv.Open(context.Background(), 10*time.Second)
	if err != nil {
		t.Fatalf("observer open: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func noLeftovers(t *testing.T, conn backend.Conn, root string) {
	t.Helper()
	left, err := backendtest.Leftovers(context.Background(), conn, root)
	if err != nil {
		t.Fatalf("leftovers: %v", err)
	}
	if len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestSessionServerRestartWithinTimeout: the server is stopped and started
// again within the session timeout. The session goes Suspended, then
// Reconnected with the same id; its ephemeral node is kept; under the
// standard policy the hold taken before ended, a new one is live.
func TestSessionServerRestartWithinTimeout(t *testing.T) {
	t.Run("zookeeper", func(t *testing.T) {
		zk := integration.StartZooKeeper(t)
		testServerRestart(t, backendCases[0], zk.Addrs(), 6*time.Second, func() { zk.Stop(t, 0) }, func() { zk.Start(t, 0) })
	})
	// etcd's client reconnects with gRPC's default exponential backoff, so
	// after a restart the first keepalive reply can take seconds; a 15s
	// lease leaves room for it (see README: gRPC backoff).
	t.Run("etcd", func(t *testing.T) {
		ec := integration.StartEtcd(t)
		testServerRestart(t, backendCases[1], ec.Endpoints(), 15*time.Second, func() { ec.Stop(t, 0) }, func() { ec.Start(t, 0) })
	})
}

func testServerRestart(t *testing.T, bc backendCase, addrs []string, T time.Duration, stop, start func()) {
	drv := bc.driver(t, addrs)
	o := openObserved(t, drv, session.WithTTL(T))
	root := faultRoot(t)
	node, err := o.s.Conn().Create(context.Background(), root+"/holder", []byte("x"), backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	hold := o.s.HoldContext()
	id := o.s.ID()

	t0 := time.Now()
	stop()
	// Never Lost, on etcd either: a member that shuts down has been seen to
	// answer a keepalive with TTL <= 0, which ends etcd's client keepalive;
	// the driver then asks the server (TimeToLive) until it is back, and
	// restarts the keepalive of the lease that survived the restart.
	c := o.await(session.StateSuspended, bc.suspendBound(T)+slack)
	suspendedAfter := time.Since(t0)
	if !errors.Is(context.Cause(hold), session.ErrSuspended) {
		t.Fatalf("hold cause after Suspended = %v", context.Cause(hold))
	}
	start()
	o.await(session.StateReconnected, T)
	t.Logf("BOUND %s server restart: Suspended %v after stop (%v), Reconnected %v after stop", bc.name, suspendedAfter.Round(time.Millisecond), c.Err, time.Since(t0).Round(time.Millisecond))
	if o.s.ID() != id {
		t.Fatalf("session id changed: %s -> %s", id, o.s.ID())
	}
	if o.s.HoldContext().Err() != nil {
		t.Fatal("hold taken after Reconnected is already ended")
	}
	obs := observerConn(t, drv)
	mustExist(t, obs, node.Path, id)
	// The session works and stays up.
	if _, err := o.s.Conn().Create(context.Background(), root+"/after", []byte("y"), backend.CreateOptions{Ephemeral: true}); err != nil {
		t.Fatalf("create after reconnect: %v", err)
	}
	if err := o.s.Close(context.Background()); err != nil {
		t.Fatalf("close: %v", err)
	}
	o.await(session.StateClosed, slack)
	nodeGone(t, obs, node.Path, slack)
	noLeftovers(t, obs, root)
}

// TestSessionPartitionBeyondTimeout: the client is black-holed longer than
// the session timeout. The session goes Suspended, then Lost within the
// documented bound, before it could reconnect; the server really dropped the
// session's ephemeral; healing the partition does not revive the session.
func TestSessionPartitionBeyondTimeout(t *testing.T) {
	for _, bc := range backendCases {
		t.Run(bc.name, func(t *testing.T) {
			const T = 4 * time.Second
			addrs := sharedAddrs(t, bc.name)
			var proxy *integration.Proxy
			if bc.name == "zookeeper" {
				proxy = integration.NewZooKeeperProxy(t, addrs[0])
			} else {
				proxy = integration.NewProxy(t, addrs[0])
			}
			o := openObserved(t, bc.driver(t, []string{proxy.Addr()}), session.WithTTL(T), session.WithErrorPolicy(session.SessionPolicy))
			root := faultRoot(t)
			node, err := o.s.Conn().Create(context.Background(), root+"/holder", []byte("x"), backend.CreateOptions{Ephemeral: true})
			if err != nil {
				t.Fatal(err)
			}
			hold := o.s.HoldContext()
			obs := observerConn(t, bc.driver(t, addrs))

			t0 := time.Now()
			proxy.Blackhole()
			o.await(session.StateSuspended, bc.suspendBound(T)+slack)
			suspended := time.Since(t0)
			if hold.Err() != nil {
				t.Fatal("SessionPolicy ended the hold on Suspended")
			}
			lost := o.await(session.StateLost, bc.lostBound(T)+slack-suspended)
			lostAfter := time.Since(t0)
			if !errors.Is(lost.Err, coordkit.ErrSessionLost) || !errors.Is(context.Cause(hold), coordkit.ErrSessionLost) {
				t.Fatalf("lost err %v, hold cause %v", lost.Err, context.Cause(hold))
			}
			select {
			case <-o.s.Done():
			default:
				t.Fatal("Done not closed at Lost")
			}
			// The server drops the session on its own clock: T after it last
			// heard from the client (plus its expiry tick).
			gone := nodeGone(t, obs, node.Path, T+slack)
			t.Logf("BOUND %s partition > T (T=%v): Suspended %v, Lost %v (%v) after the partition began (documented: %v, %v); server dropped the ephemeral %v after the partition began",
				bc.name, T, suspended.Round(time.Millisecond), lostAfter.Round(time.Millisecond), lost.Err, bc.suspendBound(T), bc.lostBound(T), (lostAfter + gone).Round(time.Millisecond))

			proxy.Unblackhole()
			if _, err := o.s.Conn().Create(context.Background(), root+"/zombie", nil, backend.CreateOptions{Ephemeral: true}); !errors.Is(err, coordkit.ErrSessionLost) && !errors.Is(err, coordkit.ErrClosed) {
				t.Fatalf("create on a lost session after the partition healed = %v, want ErrSessionLost or ErrClosed", err)
			}
			if st := o.s.State(); st != session.StateLost {
				t.Fatalf("state after heal = %v, want Lost", st)
			}
			noLeftovers(t, obs, root)
		})
	}
}

// TestSessionPartitionShorterThanTimeout: a short partition suspends the
// session; when it heals the same session is Reconnected, its ephemeral
// kept. The standard policy ended the hold; the session policy kept it.
func TestSessionPartitionShorterThanTimeout(t *testing.T) {
	for _, bc := range backendCases {
		for _, policy := range []struct {
			name     string
			p        session.ErrorPolicy
			endsHold bool
		}{{"standard", session.StandardPolicy, true}, {"session", session.SessionPolicy, false}} {
			t.Run(bc.name+"/"+policy.name, func(t *testing.T) {
				const T = 6 * time.Second
				addrs := sharedAddrs(t, bc.name)
				proxy := integration.NewProxy(t, addrs[0])
				o := openObserved(t, bc.driver(t, []string{proxy.Addr()}), session.WithTTL(T), session.WithErrorPolicy(policy.p))
				root := faultRoot(t)
				node, err := o.s.Conn().Create(context.Background(), root+"/holder", []byte("x"), backend.CreateOptions{Ephemeral: true})
				if err != nil {
					t.Fatal(err)
				}
				hold := o.s.HoldContext()
				t0 := time.Now()
				proxy.Blackhole()
				o.await(session.StateSuspended, bc.suspendBound(T)+slack)
				proxy.Unblackhole()
				o.await(session.StateReconnected, T)
				t.Logf("BOUND %s short partition (%s policy): Reconnected %v after the partition began", bc.name, policy.name, time.Since(t0).Round(time.Millisecond))
				if ended := hold.Err() != nil; ended != policy.endsHold {
					t.Fatalf("hold ended = %v, want %v (cause %v)", ended, policy.endsHold, context.Cause(hold))
				}
				obs := observerConn(t, bc.driver(t, addrs))
				mustExist(t, obs, node.Path, o.s.ID())
				o.s.Close(context.Background())
				nodeGone(t, obs, node.Path, slack)
				noLeftovers(t, obs, root)
			})
		}
	}
}

// TestEtcdLeaseRevokedIsLost: revoking the session's lease from another
// client makes the session Lost within about a round trip (the driver
// watches its session marker key), and its keys are gone.
func TestEtcdLeaseRevokedIsLost(t *testing.T) {
	eps := sharedEtcd.Get(t).Endpoints()
	drv := openEtcdDriver(t, eps)
	o := openObserved(t, drv, session.WithTTL(30*time.Second))
	root := faultRoot(t)
	node, err := o.s.Conn().Create(context.Background(), root+"/holder", []byte("x"), backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	hold := o.s.HoldContext()
	id, err := strconv.ParseUint(o.s.ID(), 16, 64)
	if err != nil {
		t.Fatalf("session id %q is not a lease id: %v", o.s.ID(), err)
	}
	cli := connectEtcd(t, eps...)
	t0 := time.Now()
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(id)); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	revoked := time.Since(t0)
	c := o.await(session.StateLost, slack)
	t.Logf("BOUND etcd external revoke: Lost %v after Revoke was sent (the Revoke call itself took %v; lease TTL 30s)", time.Since(t0).Round(time.Microsecond), revoked.Round(time.Microsecond))
	if !errors.Is(c.Err, session.ErrExpired) || !errors.Is(context.Cause(hold), coordkit.ErrSessionLost) {
		t.Fatalf("lost err %v, hold cause %v", c.Err, context.Cause(hold))
	}
	obs := observerConn(t, drv)
	nodeGone(t, obs, node.Path, time.Second)
	ttl, err := cli.TimeToLive(context.Background(), clientv3.LeaseID(id))
	if err != nil || ttl.TTL != -1 {
		t.Fatalf("lease after revoke: ttl %v err %v, want gone", ttl, err)
	}
	noLeftovers(t, obs, root)
}

// TestZooKeeperServerSideExpiry: the server really expires the session
// (closed through a clone connection, as Curator's KillSession did). The
// session learns it at its next contact and is Lost; never a new session.
func TestZooKeeperServerSideExpiry(t *testing.T) {
	addrs := sharedZK.Get(t).Addrs()
	proxy := integration.NewZooKeeperProxy(t, addrs[0])
	o := openObserved(t, openZooKeeperDriver(t, []string{proxy.Addr()}), session.WithTTL(8*time.Second))
	root := faultRoot(t)
	node, err := o.s.Conn().Create(context.Background(), root+"/holder", []byte("x"), backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	sid, err := strconv.ParseUint(o.s.ID(), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := proxy.ExpireZooKeeperSession(context.Background(), int64(sid)); err != nil {
		t.Fatalf("expire: %v", err)
	}
	// The server closes the client's connection: Suspended may come first.
	var c session.Change
	for c.State != session.StateLost {
		select {
		case c = <-o.ch:
			if c.State != session.StateSuspended && c.State != session.StateLost {
				t.Fatalf("change %v (%v) after server-side expiry", c.State, c.Err)
			}
		case <-time.After(8*time.Second + slack):
			t.Fatalf("not Lost after server-side expiry (state %v)", o.s.State())
		}
	}
	t.Logf("BOUND zookeeper server-side expiry: Lost %v after the server closed the session", time.Since(t0).Round(time.Millisecond))
	if !errors.Is(c.Err, session.ErrExpired) {
		t.Fatalf("lost err %v, want ErrExpired", c.Err)
	}
	obs := observerConn(t, openZooKeeperDriver(t, addrs))
	nodeGone(t, obs, node.Path, time.Second)
	if _, err := o.s.Conn().Get(context.Background(), root); !errors.Is(err, coordkit.ErrSessionLost) && !errors.Is(err, coordkit.ErrClosed) {
		t.Fatalf("call after expiry = %v", err)
	}
	noLeftovers(t, obs, root)
}

// TestSessionSurvivesMemberKill: a member of a 3-member ensemble is killed
// (the ZooKeeper leader, which makes every follower drop its clients during
// the election; the etcd leader). The session survives with the same id and
// its ephemeral; at most it is Suspended and Reconnected.
func TestSessionSurvivesMemberKill(t *testing.T) {
	const T = 8 * time.Second
	t.Run("zookeeper", func(t *testing.T) {
		zk := integration.StartZooKeeper(t, integration.WithMembers(3))
		leader := zk.Leader(t)
		testMemberKill(t, backendCases[0], zk.Addrs(), T, func() { zk.Kill(t, leader) }, func() { zk.Start(t, leader) })
	})
	t.Run("etcd", func(t *testing.T) {
		ec := integration.StartEtcd(t, integration.WithMembers(3))
		leader := ec.Leader(t)
		testMemberKill(t, backendCases[1], ec.Endpoints(), T, func() { ec.Stop(t, leader) }, func() { ec.Start(t, leader) })
	})
}

func testMemberKill(t *testing.T, bc backendCase, addrs []string, T time.Duration, kill, restart func()) {
	drv := bc.driver(t, addrs)
	o := openObserved(t, drv, session.WithTTL(T))
	root := faultRoot(t)
	node, err := o.s.Conn().Create(context.Background(), root+"/holder", []byte("x"), backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	id := o.s.ID()
	t0 := time.Now()
	kill()
	// Watch the session for longer than its timeout: it must not be lost.
	suspensions := o.settle(T + T/2)
	t.Logf("BOUND %s leader killed: session survived %v with %d suspension(s)", bc.name, time.Since(t0).Round(time.Millisecond), suspensions)
	if o.s.ID() != id || o.s.Err() != nil {
		t.Fatalf("session changed or ended: id %s -> %s, err %v", id, o.s.ID(), o.s.Err())
	}
	after, err := o.s.Conn().Create(context.Background(), root+"/after", []byte("y"), backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatalf("create after failover: %v", err)
	}
	if after.Token <= node.Token {
		t.Fatalf("token went backwards across failover: %d then %d", node.Token, after.Token)
	}
	restart()
	obs := observerConn(t, drv)
	mustExist(t, obs, node.Path, id)
	o.s.Close(context.Background())
	nodeGone(t, obs, node.Path, slack)
	nodeGone(t, obs, after.Path, slack)
	noLeftovers(t, obs, root)
}
