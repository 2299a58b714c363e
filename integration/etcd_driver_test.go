package integration_test

// Real-server tests of the etcd driver (backend/etcd): the behaviours that
// are specific to it and that neither the conformance suite
// (conformance_test.go) nor the session-level fault tests cover. Shared
// helpers (openConn, expectState, lossyDialer, ...) are in
// zookeeper_driver_test.go.

import (
	"context"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	etcddrv "github.com/coordkit/coordkit/backend/etcd"
	"github.com/coordkit/coordkit/integration"
	"github.com/coordkit/coordkit/session"
)

// etcdScratch returns a key prefix for the test's keys and deletes every
// key under it when the test ends.
func etcdScratch(t *testing.T, raw *clientv3.Client) string {
	t.Helper()
	base := uniquePath(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := raw.Delete(ctx, base+"/", clientv3.WithPrefix()); err != nil {
			t.Errorf("cleanup: delete %s/: %v", base, err)
		}
	})
	return base
}

// etcdKeys returns the keys under prefix with their leases.
func etcdKeys(t *testing.T, raw *clientv3.Client, prefix string) map[string]clientv3.LeaseID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := raw.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("get %s: %v", prefix, err)
	}
	keys := map[string]clientv3.LeaseID{}
	for _, kv := range resp.Kvs {
		keys[string(kv.Key)] = clientv3.LeaseID(kv.Lease)
	}
	return keys
}

// etcdLeaseTTL returns the remaining TTL of c's lease in seconds: -1 once
// the server no longer has the lease, 0 for an expired lease the server has
// yet to revoke.
func etcdLeaseTTL(t *testing.T, raw *clientv3.Client, c backend.Conn) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := raw.TimeToLive(ctx, clientv3.LeaseID(sessionNumber(t, c)))
	if err != nil {
		t.Fatalf("TimeToLive %s: %v", c.SessionID(), err)
	}
	return resp.TTL
}

// expectSessionGone fails the test unless c's lease, its marker key and
// every key attached to it are gone from the server within the bound.
func expectSessionGone(t *testing.T, raw *clientv3.Client, c backend.Conn, within time.Duration) {
	t.Helper()
	waitUntil(t, "lease "+c.SessionID()+" gone", within, func() bool { return etcdLeaseTTL(t, raw, c) == -1 })
	lease := clientv3.LeaseID(sessionNumber(t, c))
	for k, l := range etcdKeys(t, raw, "/") {
		if l == lease {
			t.Errorf("key %s still attached to lease %s", k, c.SessionID())
		}
	}
	if keys := etcdKeys(t, raw, etcddrv.DefaultSessionPrefix+"/"+c.SessionID()); len(keys) != 0 {
		t.Errorf("session marker left: %v", keys)
	}
}

// etcdPutSeen watches prefix with the raw client and returns a channel that
// receives once a key below it is put: proof that the server applied a
// create, whatever the creating client heard.
func etcdPutSeen(t *testing.T, raw *clientv3.Client, prefix string) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	wch := raw.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if resp := receive(t, "watch "+prefix, wch, 5*time.Second); !resp.Created {
		t.Fatalf("watch %s: %v", prefix, resp.Err())
	}
	seen := make(chan struct{})
	go func() {
		defer cancel()
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypePut {
					close(seen)
					return
				}
			}
		}
	}()
	return seen
}

// A lease revoked by someone else ends the session at once (the marker key's
// deletion is watched): StateExpired well before the TTL, every watch lost
// with ErrSessionLost, every call failing with ErrSessionLost, and the
// session's keys gone.
func TestEtcdDriver_ExternalRevoke(t *testing.T) {
	e := sharedEtcd.Get(t)
	raw := connectEtcd(t, e.Endpoints()...)
	base := etcdScratch(t, raw)
	d := openEtcdDriver(t, e.Endpoints())
	c := openConn(t, d, 10*time.Second)
	ctx := testCtx(t)

	if _, err := c.Create(ctx, base+"/e", nil, backend.CreateOptions{Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
	_, _, w, err := c.Watch(ctx, base+"/never")
	if err != nil {
		t.Fatal(err)
	}
	_, wc, err := c.WatchChildren(ctx, base+"/none") // not base: the revoke deletes base/e
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if _, err := raw.Revoke(ctx, clientv3.LeaseID(sessionNumber(t, c))); err != nil {
		t.Fatal(err)
	}
	ev := expectState(t, c, backend.StateExpired, 3*time.Second)
	t.Logf("StateExpired %v after the revoke", time.Since(begin))
	expectErr(t, "StateExpired.Err", ev.Err, coordkit.ErrSessionLost)
	expectEventsEnd(t, c, time.Second)
	expectWatch(t, w, backend.EventLost, coordkit.ErrSessionLost, 2*time.Second)
	expectWatch(t, wc, backend.EventLost, coordkit.ErrSessionLost, 2*time.Second)
	_, err = c.Create(ctx, base+"/x", nil, backend.CreateOptions{})
	expectErr(t, "Create after the revoke", err, coordkit.ErrSessionLost)
	_, err = c.Get(ctx, base+"/e")
	expectErr(t, "Get after the revoke", err, coordkit.ErrSessionLost)
	if keys := etcdKeys(t, raw, base+"/"); len(keys) != 0 {
		t.Fatalf("keys left after the revoke: %v", keys)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close after the revoke: %v", err)
	}
	_, err = c.Get(ctx, base+"/e")
	expectErr(t, "Get after Close", err, coordkit.ErrClosed)
	expectSessionGone(t, raw, c, 5*time.Second)
}

// An ephemeral create racing an external revoke fails with ErrSessionLost,
// whether the driver has seen the marker's deletion yet or the server
// rejects the lease, and creates nothing.
func TestEtcdDriver_RevokeRacesEphemeralCreate(t *testing.T) {
	e := sharedEtcd.Get(t)
	raw := connectEtcd(t, e.Endpoints()...)
	base := etcdScratch(t, raw)
	d := openEtcdDriver(t, e.Endpoints())
	ctx := testCtx(t)
	for range 5 {
		c := openConn(t, d, 10*time.Second)
		if _, err := raw.Revoke(ctx, clientv3.LeaseID(sessionNumber(t, c))); err != nil {
			t.Fatal(err)
		}
		_, err := c.Create(ctx, base+"/e", nil, backend.CreateOptions{Ephemeral: true})
		expectErr(t, "ephemeral Create racing the revoke", err, coordkit.ErrSessionLost)
		ev := expectState(t, c, backend.StateExpired, 3*time.Second)
		expectErr(t, "StateExpired.Err", ev.Err, coordkit.ErrSessionLost)
		expectEventsEnd(t, c, time.Second)
		if keys := etcdKeys(t, raw, base+"/"); len(keys) != 0 {
			t.Fatalf("keys created on a revoked lease: %v", keys)
		}
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// Close revokes the lease: the session's ephemeral keys and marker go, its
// persistent keys stay, pending watches are lost with ErrClosed and events
// end with StateClosed. Driver.Close does the same for the Conns it still
// has, read or not, and refuses later Opens.
func TestEtcdDriver_CloseLeavesNothing(t *testing.T) {
	e := sharedEtcd.Get(t)
	raw := connectEtcd(t, e.Endpoints()...)
	base := etcdScratch(t, raw)
	d := openEtcdDriver(t, e.Endpoints())
	ctx := testCtx(t)
	c1 := openConn(t, d, 5*time.Second)
	c2 := openConn(t, d, 5*time.Second)

	for _, c := range []backend.Conn{c1, c2} {
		id := c.SessionID()
		if _, err := c.Create(ctx, base+"/"+id+"/e", nil, backend.CreateOptions{Ephemeral: true}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.CreateAndList(ctx, base+"/"+id+"/q-", nil, backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c1.Create(ctx, base+"/persistent", nil, backend.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, _, w1, err := c1.Watch(ctx, base+"/never")
	if err != nil {
		t.Fatal(err)
	}
	_, w2, err := c2.WatchChildren(ctx, base+"/none")
	if err != nil {
		t.Fatal(err)
	}

	if err := c1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c1.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	expectWatch(t, w1, backend.EventLost, coordkit.ErrClosed, 2*time.Second)
	expectEventsEnd(t, c1, time.Second, backend.StateClosed)
	_, err = c1.Get(ctx, base+"/persistent")
	expectErr(t, "Get after Close", err, coordkit.ErrClosed)
	expectSessionGone(t, raw, c1, time.Second) // revoked, not left to expire
	keys := etcdKeys(t, raw, base+"/")
	if _, ok := keys[base+"/persistent"]; !ok || len(keys) != 3 {
		t.Fatalf("keys after closing one session: %v, want the persistent key and the other session's two", keys)
	}

	// c2's events are never read.
	if err := d.Close(); err != nil {
		t.Fatalf("driver Close: %v", err)
	}
	expectWatch(t, w2, backend.EventLost, coordkit.ErrClosed, 2*time.Second)
	expectEventsEnd(t, c2, time.Second, backend.StateClosed)
	expectSessionGone(t, raw, c2, time.Second)
	if keys := etcdKeys(t, raw, base+"/"); len(keys) != 1 {
		t.Fatalf("keys after driver Close: %v, want only the persistent key", keys)
	}
	_, err = d.Open(ctx, 5*time.Second)
	expectErr(t, "Open after driver Close", err, coordkit.ErrClosed)
}

// openEtcdDriverVia returns a driver whose client reaches etcd through the
// proxy p only (through dialer when not nil, directly otherwise).
func openEtcdDriverVia(t *testing.T, p *integration.Proxy, dialer *lossyDialer, opts ...etcddrv.Option) backend.Driver {
	t.Helper()
	cfg := clientv3.Config{Endpoints: []string{p.Addr()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if dialer != nil {
		cfg.DialOptions = []grpc.DialOption{grpc.WithContextDialer(dialer.dialContext)}
	}
	return dialEtcdDriver(t, cfg, opts...)
}

// dialEtcdDriver returns a driver on a client made from cfg, closed when the
// test ends.
func dialEtcdDriver(t *testing.T, cfg clientv3.Config, opts ...etcddrv.Option) backend.Driver {
	t.Helper()
	d, err := etcddrv.Dial(cfg, opts...)
	if err != nil {
		t.Fatalf("etcd.Dial: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// A stall shorter than the TTL (the proxy holds every byte) is reported as
// StateDisconnected once keepalive replies stop, then StateReconnected on
// the same lease when they resume; the session stays usable.
func TestEtcdDriver_StallReconnectsSameSession(t *testing.T) {
	e := sharedEtcd.Get(t)
	raw := connectEtcd(t, e.Endpoints()...)
	base := etcdScratch(t, raw)
	p := integration.NewProxy(t, e.Endpoint(0))
	d := openEtcdDriverVia(t, p, nil)
	c := openConn(t, d, 5*time.Second)
	id := c.SessionID()

	p.Pause()
	begin := time.Now()
	ev := expectState(t, c, backend.StateDisconnected, c.Timeout())
	t.Logf("StateDisconnected %v after the stall began", time.Since(begin))
	if ev.Err == nil {
		t.Fatal("StateDisconnected without a reason")
	}
	p.Resume()
	expectState(t, c, backend.StateReconnected, c.Timeout()/2)
	n, err := c.Create(testCtx(t), base+"/e", nil, backend.CreateOptions{Ephemeral: true})
	if err != nil || n.Owner != id || c.SessionID() != id {
		t.Fatalf("Create after the stall: %+v, %v (session %s, was %s)", n, err, c.SessionID(), id)
	}
	if ttl := etcdLeaseTTL(t, raw, c); ttl < 0 {
		t.Fatalf("lease TTL %d after a stall shorter than the TTL", ttl)
	}
}

// A stall longer than the TTL ends the session: StateDisconnected, then
// StateExpired once a whole TTL has passed without a keepalive reply; calls
// fail with ErrSessionLost, and once the stall ends the lease and its keys
// are gone.
func TestEtcdDriver_StallPastTTLExpires(t *testing.T) {
	e := sharedEtcd.Get(t)
	raw := connectEtcd(t, e.Endpoints()...)
	base := etcdScratch(t, raw)
	p := integration.NewProxy(t, e.Endpoint(0))
	d := openEtcdDriverVia(t, p, nil)
	c := openConn(t, d, 2*time.Second)
	ctx := testCtx(t)
	if _, err := c.Create(ctx, base+"/e", nil, backend.CreateOptions{Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
	_, _, w, err := c.Watch(ctx, base+"/never")
	if err != nil {
		t.Fatal(err)
	}

	p.Pause()
	begin := time.Now()
	expectState(t, c, backend.StateDisconnected, c.Timeout())
	ev := expectState(t, c, backend.StateExpired, c.Timeout()+time.Second)
	t.Logf("StateExpired %v after the stall began (TTL %v)", time.Since(begin), c.Timeout())
	expectErr(t, "StateExpired.Err", ev.Err, coordkit.ErrSessionLost)
	expectEventsEnd(t, c, time.Second)
	expectWatch(t, w, backend.EventLost, coordkit.ErrSessionLost, 2*time.Second)
	_, err = c.Create(ctx, base+"/x", nil, backend.CreateOptions{})
	expectErr(t, "Create after expiry", err, coordkit.ErrSessionLost)

	p.Resume()
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := c.Close(cctx); err != nil {
		t.Fatalf("Close after expiry: %v", err)
	}
	expectSessionGone(t, raw, c, 2*c.Timeout())
	if keys := etcdKeys(t, raw, base+"/"); len(keys) != 0 {
		t.Fatalf("keys left: %v", keys)
	}
}

// Close while the server cannot be reached returns when its ctx ends, with
// the ctx's error, and still loses the watches and ends the events; the
// lease ends on the server within its TTL.
func TestEtcdDriver_CloseWhileStalled(t *testing.T) {
	e := sharedEtcd.Get(t)
	raw := connectEtcd(t, e.Endpoints()...)
	base := etcdScratch(t, raw)
	p := integration.NewProxy(t, e.Endpoint(0))
	d := openEtcdDriverVia(t, p, nil)
	c := openConn(t, d, 3*time.Second)
	if _, err := c.Create(testCtx(t), base+"/e", nil, backend.CreateOptions{Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
	_, _, w, err := c.Watch(testCtx(t), base+"/never")
	if err != nil {
		t.Fatal(err)
	}

	p.Pause()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	begin := time.Now()
	err = c.Close(ctx)
	if el := time.Since(begin); el > 1500*time.Millisecond {
		t.Fatalf("Close took %v (err %v)", el, err)
	}
	expectErr(t, "Close while stalled", err, context.DeadlineExceeded)
	expectWatch(t, w, backend.EventLost, coordkit.ErrClosed, 2*time.Second)
	expectEventsEnd(t, c, time.Second, backend.StateClosed)
	_, err = c.Get(testCtx(t), base+"/e")
	expectErr(t, "Get after Close", err, coordkit.ErrClosed)

	p.Resume()
	expectSessionGone(t, raw, c, 2*c.Timeout())
	if keys := etcdKeys(t, raw, base+"/"); len(keys) != 0 {
		t.Fatalf("keys left: %v", keys)
	}
}

// A protected or sequential create whose reply is lost (the server applied
// it, then the connection broke) is retried with the same key and returns
// the node the lost attempt made: exactly one key exists. A plain create
// is not retried and reports ErrConnectionLoss.
// lossyEtcdConn opens a session (10s TTL) on the shared etcd through a
// proxy and a lossy dialer the test controls, and returns them with a raw
// client that bypasses both and a scratch prefix.
func lossyEtcdConn(t *testing.T) (raw *clientv3.Client, base string, p *integration.Proxy, wire *lossyDialer, c backend.Conn) {
	t.Helper()
	e := sharedEtcd.Get(t)
	raw = connectEtcd(t, e.Endpoints()...)
	base = etcdScratch(t, raw)
	p = integration.NewProxy(t, e.Endpoint(0))
	wire = newLossyDialer(p.Addr(), false)
	c = openConn(t, openEtcdDriverVia(t, p, wire), 10*time.Second)
	return raw, base, p, wire, c
}

// TestEtcdDriver_LostCreateOrphanDeleted: a queue node's create is applied
// but no reply comes back before the caller's ctx ends, so the caller never
// gets the node. The driver deletes it in the background once the server
// answers again: left there it would sit at the head of the queue, ahead of
// every waiter, for as long as the session lives.
func TestEtcdDriver_LostCreateOrphanDeleted(t *testing.T) {
	raw, base, p, _, c := lossyEtcdConn(t)
	parent := base + "/queue"
	applied := etcdPutSeen(t, raw, parent+"/")
	p.BlackholeReplies()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, _, err := c.CreateAndList(ctx, parent+"/lock-", nil, backend.CreateOptions{Protected: true, Ephemeral: true, Sequential: true})
		done <- err
	}()
	receive(t, "server applies the create", applied, 10*time.Second)
	expectErr(t, "CreateAndList whose reply never came", receive(t, "CreateAndList", done, 20*time.Second), context.DeadlineExceeded)
	// The server applied the create (the watch saw it). The driver's
	// delete of the orphan goes out at once and only its reply is lost, so
	// the key may already be gone; it must never be more than that one.
	if keys := etcdKeys(t, raw, parent+"/"); len(keys) > 1 {
		t.Fatalf("keys after the lost reply: %v, want at most the one the server applied", keys)
	}
	p.Unblackhole()
	waitUntil(t, "the orphan deleted", 20*time.Second, func() bool { return len(etcdKeys(t, raw, parent+"/")) == 0 })
	// The session is whole: the next create works.
	n, _, err := c.CreateAndList(testCtx(t), parent+"/lock-", nil, backend.CreateOptions{Protected: true, Ephemeral: true, Sequential: true})
	if err != nil {
		t.Fatalf("CreateAndList afterwards: %v", err)
	}
	if keys := etcdKeys(t, raw, parent+"/"); len(keys) != 1 || keys[n.Path] == 0 {
		t.Fatalf("keys afterwards: %v, want only %s", keys, n.Path)
	}
}

func TestEtcdDriver_LostCreateReply(t *testing.T) {
	raw, base, p, wire, c := lossyEtcdConn(t)

	for _, tc := range []struct {
		name string
		opts backend.CreateOptions
		list bool // CreateAndList
		lost bool // not retried
	}{
		{"protected-ephemeral-sequential", backend.CreateOptions{Protected: true, Ephemeral: true, Sequential: true}, false, false},
		{"protected-ephemeral-sequential-list", backend.CreateOptions{Protected: true, Ephemeral: true, Sequential: true}, true, false},
		{"protected", backend.CreateOptions{Protected: true}, false, false},
		{"sequential", backend.CreateOptions{Sequential: true}, false, false},
		{"ephemeral", backend.CreateOptions{Ephemeral: true}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			parent := base + "/" + tc.name
			applied := etcdPutSeen(t, raw, parent+"/")
			wire.loseReplies()
			type result struct {
				n    backend.Node
				list []backend.Node
				err  error
			}
			done := make(chan result, 1)
			go func() {
				var r result
				if tc.list {
					r.n, r.list, r.err = c.CreateAndList(ctx, parent+"/n-", []byte("d"), tc.opts)
				} else {
					r.n, r.err = c.Create(ctx, parent+"/n-", []byte("d"), tc.opts)
				}
				done <- r
			}()
			receive(t, "server applies the create", applied, 10*time.Second)
			p.DropConnections()
			r := receive(t, "Create", done, 20*time.Second)

			keys := etcdKeys(t, raw, parent+"/")
			if len(keys) != 1 {
				t.Fatalf("keys after the lost reply: %v, want exactly one", keys)
			}
			if tc.lost {
				expectErr(t, "Create", r.err, backend.ErrConnectionLoss)
				return
			}
			if r.err != nil {
				t.Fatalf("Create: %v", r.err)
			}
			lease, ok := keys[r.n.Path]
			wantOwner := ""
			if tc.opts.Ephemeral {
				wantOwner = c.SessionID()
			}
			if !ok || r.n.Owner != wantOwner || (tc.opts.Ephemeral && lease != clientv3.LeaseID(sessionNumber(t, c))) ||
				string(r.n.Data) != "d" || r.n.Token == 0 {
				t.Fatalf("Create returned %+v; the server has %v", r.n, keys)
			}
			if tc.list && !slices.ContainsFunc(r.list, func(k backend.Node) bool { return k.Path == r.n.Path }) {
				t.Fatalf("CreateAndList's listing %+v lacks the new node", r.list)
			}
		})
	}
	for len(c.Events()) > 0 {
		if ev := <-c.Events(); ev.State.Terminal() {
			t.Fatalf("session ended: %v (%v)", ev.State, ev.Err)
		}
	}
	if err := c.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	expectSessionGone(t, raw, c, time.Second)
}

// With the shortest TTL the server grants and the default suspend-after,
// a healthy session reports nothing for three TTLs: no spurious
// StateDisconnected between keepalives.
func TestEtcdDriver_NoFalseDisconnects(t *testing.T) {
	e := sharedEtcd.Get(t)
	raw := connectEtcd(t, e.Endpoints()...)
	d := openEtcdDriver(t, e.Endpoints())
	c := openConn(t, d, time.Second) // granted: the server's minimum, 2s by default
	t.Logf("granted TTL %v", c.Timeout())
	timer := time.NewTimer(3 * c.Timeout())
	defer timer.Stop()
	select {
	case ev := <-c.Events():
		t.Fatalf("event %v (%v) on a healthy session", ev.State, ev.Err)
	case <-timer.C:
	}
	// TimeToLive reports whole seconds, rounded down: a healthy 2s lease
	// just before its next renewal reads 0. A lease that is gone reads -1.
	if ttl := etcdLeaseTTL(t, raw, c); ttl < 0 {
		t.Fatalf("lease TTL %d (gone) on a healthy session", ttl)
	}
}

// etcd's client ends a new keepalive subscription whose first reply takes
// longer than its DialTimeout+1s (here 2s), whatever the lease TTL. A
// partition that begins right after a session opens outlasts that, and the
// suspend-after period, but not the TTL: the driver asks the server
// (TimeToLive) before declaring the lease gone, and restarts the keepalive
// once it answers, so the session is Suspended and then Reconnected, never
// Lost, and its ephemeral key survives.
func TestEtcdDriver_PartitionBeforeFirstKeepAlive(t *testing.T) {
	e := sharedEtcd.Get(t)
	raw := connectEtcd(t, e.Endpoints()...)
	base := etcdScratch(t, raw)
	// The session's first keepalive is sent on the client's next 500ms
	// tick after Open; rarely it gets through before the partition begins,
	// which leaves nothing to test: then the scenario runs again.
	for attempt := 1; !partitionBeforeFirstKeepAlive(t, raw, e.Endpoint(0), base); attempt++ {
		if attempt == 3 {
			t.Fatal("the first keepalive got through before the partition in every attempt")
		}
		t.Log("the first keepalive got through before the partition began; again")
	}
}

// partitionBeforeFirstKeepAlive runs the scenario of
// TestEtcdDriver_PartitionBeforeFirstKeepAlive once; it reports false if
// the session's first keepalive reply arrived before the partition.
func partitionBeforeFirstKeepAlive(t *testing.T, raw *clientv3.Client, endpoint, base string) bool {
	const T = 10 * time.Second
	p := integration.NewProxy(t, endpoint)
	core, logs := observer.New(zap.DebugLevel)
	lg := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Core()))
	d := dialEtcdDriver(t, clientv3.Config{Endpoints: []string{p.Addr()}, DialTimeout: time.Second, Logger: zap.NewNop()},
		etcddrv.WithLogger(lg))
	// A first session brings the client's keepalive stream up, so that the
	// second one's first keepalive waits for the stream's next tick.
	openConn(t, d, T)
	time.Sleep(time.Second)
	o := openObserved(t, d, session.WithTTL(T))
	n, err := o.s.Conn().Create(testCtx(t), base+"/"+o.s.ID(), []byte("x"), backend.CreateOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	t0 := time.Now()
	mine := func() *observer.ObservedLogs {
		return logs.Filter(func(e observer.LoggedEntry) bool {
			return e.ContextMap()["lease"] == o.s.ID()
		})
	}
	o.await(session.StateSuspended, T/2+slack)
	suspended := time.Since(t0)
	o.quiet(time.Second) // the partition goes on; the driver keeps asking
	p.Unblackhole()
	healed := time.Since(t0)
	o.await(session.StateReconnected, T-healed)
	reconnected := time.Since(t0)
	for _, e := range mine().All() {
		t.Logf("%v after the partition began: %s %v", e.Time.Sub(t0).Round(time.Millisecond), e.Message, e.ContextMap())
	}
	if mine().FilterMessageSnippet("keepalive ended").Len() == 0 {
		return false
	}
	if mine().FilterMessageSnippet("keepalive restarted").Len() == 0 {
		t.Fatal("the keepalive ended but was not restarted")
	}
	t.Logf("BOUND etcd partition before the first keepalive (TTL %v, client DialTimeout 1s): Suspended %v, healed %v, Reconnected %v after the partition began",
		T, suspended.Round(time.Millisecond), healed.Round(time.Millisecond), reconnected.Round(time.Millisecond))
	keys := etcdKeys(t, raw, n.Path)
	if keys[n.Path] != clientv3.LeaseID(sessionNumber(t, o.s.Conn())) {
		t.Fatalf("ephemeral %s after the partition: %v, want it on lease %s", n.Path, keys, o.s.ID())
	}
	if ttl := etcdLeaseTTL(t, raw, o.s.Conn()); ttl <= 0 {
		t.Fatalf("lease TTL %d after the partition healed", ttl)
	}
	o.quiet(time.Second) // and it stays up
	if err := o.s.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	expectSessionGone(t, raw, o.s.Conn(), 5*time.Second)
	return true
}
