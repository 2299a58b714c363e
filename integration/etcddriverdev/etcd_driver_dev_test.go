package etcddriverdev

// Development tests of backend/etcd against an embedded etcd. They may be
// folded into the kit's cross-backend tests later.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	etcddrv "github.com/coordkit/coordkit/backend/etcd"
)

func devFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// devEtcd starts an embedded single-member etcd and returns its client URL.
func devEtcd(t *testing.T) string {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", devFreePort(t)))
	pu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", devFreePort(t)))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		t.Fatal("etcd not ready")
	}
	t.Cleanup(e.Close)
	return cu.Host
}

func devClient(t *testing.T, ep string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func devDriver(t *testing.T, ep string, opts ...etcddrv.Option) *etcddrv.Driver {
	t.Helper()
	d, err := etcddrv.Dial(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func devOpen(t *testing.T, d backend.Driver, ttl time.Duration) backend.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.Open(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func nextEvent(t *testing.T, c backend.Conn, within time.Duration) backend.ConnEvent {
	t.Helper()
	select {
	case ev, ok := <-c.Events():
		if !ok {
			t.Fatal("events closed")
		}
		return ev
	case <-time.After(within):
		t.Fatalf("no event within %v", within)
	}
	panic("unreachable")
}

func mustErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
}

func TestEtcdDriverDev(t *testing.T) {
	ep := devEtcd(t)
	raw := devClient(t, ep)
	d := devDriver(t, ep)
	ctx := context.Background()

	t.Run("ops", func(t *testing.T) {
		c := devOpen(t, d, 5*time.Second)
		if ev := nextEvent(t, c, time.Second); ev.State != backend.StateConnected {
			t.Fatalf("first event %v", ev)
		}
		if c.Timeout() != 5*time.Second {
			t.Fatalf("timeout %v", c.Timeout())
		}
		_, err := c.Create(ctx, "bad/", nil, backend.CreateOptions{})
		mustErr(t, err, coordkit.ErrInvalidPath)

		a, err := c.Create(ctx, "/ops/a", []byte("x"), backend.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if a.Token == 0 || a.Token != a.Seq || a.Owner != "" || string(a.Data) != "x" {
			t.Fatalf("node %+v", a)
		}
		_, err = c.Create(ctx, "/ops/a", nil, backend.CreateOptions{})
		mustErr(t, err, backend.ErrNodeExists)
		if _, err := c.Create(ctx, "/ops/ab", nil, backend.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Create(ctx, "/ops/a/deep/er", nil, backend.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e, err := c.Create(ctx, "/ops/a/e", nil, backend.CreateOptions{Ephemeral: true})
		if err != nil || e.Owner != c.SessionID() {
			t.Fatalf("ephemeral %+v %v", e, err)
		}
		s1, err := c.Create(ctx, "/ops/a/s-", nil, backend.CreateOptions{Sequential: true, Protected: true, Ephemeral: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("sequential protected name: %s", s1.Name)
		s2, list, err := c.CreateAndList(ctx, "/ops/a/s-", nil, backend.CreateOptions{Sequential: true})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, n := range list {
			names = append(names, n.Name)
		}
		if len(list) != 3 || list[0].Name != "e" || list[1].Path != s1.Path || list[2].Path != s2.Path {
			t.Fatalf("list %v", names)
		}
		kids, err := c.Children(ctx, "/ops/a")
		if err != nil || len(kids) != 3 {
			t.Fatalf("children %v %v", kids, err)
		}
		kids, err = c.Children(ctx, "/ops")
		if err != nil || len(kids) != 2 || kids[0].Name != "a" || kids[1].Name != "ab" {
			t.Fatalf("children of /ops %+v %v", kids, err)
		}
		kids, err = c.Children(ctx, "/nope")
		if err != nil || len(kids) != 0 {
			t.Fatalf("children of missing %v %v", kids, err)
		}
		_, err = c.Get(ctx, "/ops/zz")
		mustErr(t, err, backend.ErrNoNode)

		// Set / Delete with versions.
		_, err = c.Set(ctx, "/ops/a", []byte("y"), a.Version+1000)
		mustErr(t, err, backend.ErrBadVersion)
		_, err = c.Set(ctx, "/ops/missing", []byte("y"), backend.AnyVersion)
		mustErr(t, err, backend.ErrNoNode)
		_, err = c.Set(ctx, "/ops/missing", []byte("y"), 0)
		mustErr(t, err, backend.ErrNoNode)
		a2, err := c.Set(ctx, "/ops/a", []byte("y"), a.Version)
		if err != nil || a2.Version == a.Version || a2.Token != a.Token || string(a2.Data) != "y" {
			t.Fatalf("set %+v %v", a2, err)
		}
		e2, err := c.Set(ctx, "/ops/a/e", []byte("z"), backend.AnyVersion)
		if err != nil || e2.Owner != c.SessionID() {
			t.Fatalf("set keeps the lease: %+v %v", e2, err)
		}
		// Guards.
		_, err = c.GuardedSet(ctx, []backend.Guard{backend.GuardOf(a)}, "/ops/ab", []byte("g"), backend.AnyVersion)
		mustErr(t, err, backend.ErrGuardFailed)
		mustErr(t, err, backend.ErrBadVersion)
		_, err = c.GuardedSet(ctx, []backend.Guard{{Path: "/ops/none", Version: backend.AnyVersion}}, "/ops/ab", nil, backend.AnyVersion)
		mustErr(t, err, backend.ErrGuardFailed)
		mustErr(t, err, backend.ErrNoNode)
		_, err = c.GuardedSet(ctx, []backend.Guard{{Path: "/ops/a", Token: a.Token + 1, Version: backend.AnyVersion}}, "/ops/ab", nil, backend.AnyVersion)
		mustErr(t, err, backend.ErrGuardFailed)
		_, err = c.GuardedSet(ctx, []backend.Guard{backend.GuardOf(a2)}, "/ops/ab", nil, 12345678)
		if errors.Is(err, backend.ErrGuardFailed) || !errors.Is(err, backend.ErrBadVersion) {
			t.Fatalf("target bad version: %v", err)
		}
		if _, err = c.GuardedSet(ctx, []backend.Guard{backend.GuardOf(a2)}, "/ops/ab", []byte("g"), backend.AnyVersion); err != nil {
			t.Fatal(err)
		}
		mustErr(t, c.Delete(ctx, "/ops/a", a.Version), backend.ErrBadVersion)
		if err := c.Delete(ctx, "/ops/a", a2.Version); err != nil {
			t.Fatal(err)
		}
		mustErr(t, c.Delete(ctx, "/ops/a", backend.AnyVersion), backend.ErrNoNode)

		// Watches.
		_, exists, w, err := c.Watch(ctx, "/ops/w")
		if err != nil || exists {
			t.Fatal(exists, err)
		}
		wc, wcw, err := c.WatchChildren(ctx, "/ops/a")
		if err != nil || len(wc) != 3 {
			t.Fatal(wc, err)
		}
		if _, err := c.Set(ctx, "/ops/a/e", []byte("data change"), backend.AnyVersion); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Create(ctx, "/ops/a/deep/x", nil, backend.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Create(ctx, "/ops/ab/x", nil, backend.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-wcw.C():
			t.Fatalf("children watch fired on a data change or deeper key: %+v", ev)
		case <-time.After(300 * time.Millisecond):
		}
		if _, err := c.Create(ctx, "/ops/w", nil, backend.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if ev := <-w.C(); ev.Type != backend.EventCreated || ev.Path != "/ops/w" {
			t.Fatalf("watch %+v", ev)
		}
		w.Stop()
		w.Stop()
		if err := c.Delete(ctx, "/ops/a/e", backend.AnyVersion); err != nil {
			t.Fatal(err)
		}
		if ev := <-wcw.C(); ev.Type != backend.EventChildren || ev.Path != "/ops/a" {
			t.Fatalf("children watch %+v", ev)
		}
		wcw.Stop()
		n, _, w, err := c.Watch(ctx, "/ops/w")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Set(ctx, "/ops/w", []byte("1"), n.Version); err != nil {
			t.Fatal(err)
		}
		if ev := <-w.C(); ev.Type != backend.EventChanged {
			t.Fatalf("watch %+v", ev)
		}
		_, _, w, _ = c.Watch(ctx, "/ops/w")
		c.Delete(ctx, "/ops/w", backend.AnyVersion)
		if ev := <-w.C(); ev.Type != backend.EventDeleted {
			t.Fatalf("watch %+v", ev)
		}
		// A stopped watch delivers EventLost.
		_, _, w, _ = c.Watch(ctx, "/ops/w")
		w.Stop()
		if ev := <-w.C(); ev.Type != backend.EventLost {
			t.Fatalf("stopped watch %+v", ev)
		}

		// Close: no keys of the lease, no lease, events, ErrClosed.
		_, _, pending, err := c.Watch(ctx, "/ops/pending")
		if err != nil {
			t.Fatal(err)
		}
		lease := c.SessionID()
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(ctx); err != nil {
			t.Fatal("second close:", err)
		}
		if ev := <-pending.C(); ev.Type != backend.EventLost || !errors.Is(ev.Err, coordkit.ErrClosed) {
			t.Fatalf("pending watch %+v", ev)
		}
		var last backend.ConnEvent
		for ev := range c.Events() {
			last = ev
		}
		if last.State != backend.StateClosed {
			t.Fatalf("last event %v", last)
		}
		_, err = c.Get(ctx, "/ops/ab")
		mustErr(t, err, coordkit.ErrClosed)
		all, err := raw.Get(ctx, "/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range all.Kvs {
			if kv.Lease != 0 {
				t.Errorf("key %s still has lease %x", kv.Key, kv.Lease)
			}
			if string(kv.Key) == etcddrv.DefaultSessionPrefix+"/"+lease {
				t.Errorf("marker left")
			}
		}
		ls, err := raw.Leases(ctx)
		if err != nil || len(ls.Leases) != 0 {
			t.Fatalf("leases left: %v %v", ls, err)
		}
	})

	t.Run("external revoke", func(t *testing.T) {
		c := devOpen(t, d, 10*time.Second)
		nextEvent(t, c, time.Second)
		if _, err := c.Create(ctx, "/rv/e", nil, backend.CreateOptions{Ephemeral: true}); err != nil {
			t.Fatal(err)
		}
		_, _, w, err := c.Watch(ctx, "/rv/never")
		if err != nil {
			t.Fatal(err)
		}
		var id int64
		fmt.Sscanf(c.SessionID(), "%x", &id)
		start := time.Now()
		if _, err := raw.Revoke(ctx, clientv3.LeaseID(id)); err != nil {
			t.Fatal(err)
		}
		ev := nextEvent(t, c, 5*time.Second)
		t.Logf("revoke -> %v in %v (%v)", ev.State, time.Since(start), ev.Err)
		if ev.State != backend.StateExpired || !errors.Is(ev.Err, coordkit.ErrSessionLost) {
			t.Fatalf("event %+v", ev)
		}
		if _, ok := <-c.Events(); ok {
			t.Fatal("events not closed after expiry")
		}
		if wev := <-w.C(); wev.Type != backend.EventLost || !errors.Is(wev.Err, coordkit.ErrSessionLost) {
			t.Fatalf("watch %+v", wev)
		}
		_, err = c.Create(ctx, "/rv/x", nil, backend.CreateOptions{})
		mustErr(t, err, coordkit.ErrSessionLost)
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
		_, err = c.Get(ctx, "/rv/x")
		mustErr(t, err, coordkit.ErrClosed)
	})

	t.Run("revoke seen by a write", func(t *testing.T) {
		// The lease is revoked by another client and an ephemeral create
		// races the marker watch: either way ErrSessionLost.
		c := devOpen(t, d, 10*time.Second)
		var id int64
		fmt.Sscanf(c.SessionID(), "%x", &id)
		raw.Revoke(ctx, clientv3.LeaseID(id))
		_, err := c.Create(ctx, "/rv2/e", nil, backend.CreateOptions{Ephemeral: true})
		mustErr(t, err, coordkit.ErrSessionLost)
	})
}

// pauseProxy forwards TCP connections and can stall them without closing.
type pauseProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	paused bool
	drop   bool // discard server-to-client bytes
	cond   *sync.Cond
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newPauseProxy(t *testing.T, target string) *pauseProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pauseProxy{l: l, target: target}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(out, in, false)
			go p.pipe(in, out, true)
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *pauseProxy) pipe(dst, src net.Conn, reply bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		for p.paused {
			p.cond.Wait()
		}
		drop := reply && p.drop
		p.mu.Unlock()
		if n > 0 && !drop {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				dst.Close()
			}
			dst.Close()
			return
		}
	}
}

func (p *pauseProxy) setPaused(v bool) {
	p.mu.Lock()
	p.paused = v
	p.cond.Broadcast()
	p.mu.Unlock()
}

// loseReplies discards replies for d, then resets every connection.
func (p *pauseProxy) loseReplies(d time.Duration) {
	p.mu.Lock()
	p.drop = true
	p.mu.Unlock()
	time.Sleep(d)
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.drop = false
	p.mu.Unlock()
}

func (p *pauseProxy) close() {
	p.setPaused(false)
	p.l.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func TestEtcdDriverDevPartition(t *testing.T) {
	ep := devEtcd(t)
	px := newPauseProxy(t, ep)
	lg := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	d := devDriver(t, px.l.Addr().String(), etcddrv.WithLogger(lg))
	ctx := context.Background()

	t.Run("short", func(t *testing.T) {
		c := devOpen(t, d, 5*time.Second)
		nextEvent(t, c, time.Second)
		time.Sleep(2 * time.Second)
		start := time.Now()
		px.setPaused(true)
		ev := nextEvent(t, c, 4*time.Second)
		t.Logf("pause -> %v after %v", ev.State, time.Since(start))
		if ev.State != backend.StateDisconnected {
			t.Fatalf("event %+v", ev)
		}
		time.Sleep(500 * time.Millisecond)
		px.setPaused(false)
		start = time.Now()
		ev = nextEvent(t, c, 4*time.Second)
		t.Logf("resume -> %v after %v", ev.State, time.Since(start))
		if ev.State != backend.StateReconnected {
			t.Fatalf("event %+v", ev)
		}
		if _, err := c.Create(ctx, "/p/x", nil, backend.CreateOptions{Ephemeral: true}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("lost reply", func(t *testing.T) {
		c := devOpen(t, d, 10*time.Second)
		for _, list := range []bool{false, true} {
			done := make(chan struct{})
			go func() { defer close(done); px.loseReplies(300 * time.Millisecond) }()
			time.Sleep(50 * time.Millisecond)
			opts := backend.CreateOptions{Protected: true, Sequential: true, Ephemeral: true}
			var n backend.Node
			var err error
			if list {
				n, _, err = c.CreateAndList(ctx, "/lost/b/x-", []byte("d"), opts)
			} else {
				n, err = c.Create(ctx, "/lost/a/x-", []byte("d"), opts)
			}
			<-done
			if err != nil {
				t.Fatal(err)
			}
			parent, _ := backend.Split(n.Path)
			kids, err := c.Children(ctx, parent)
			if err != nil || len(kids) != 1 || kids[0].Path != n.Path {
				t.Fatalf("children %+v %v", kids, err)
			}
		}
		// A plain create whose reply is lost is not retried.
		done := make(chan struct{})
		go func() { defer close(done); px.loseReplies(300 * time.Millisecond) }()
		time.Sleep(50 * time.Millisecond)
		_, err := c.Create(ctx, "/lost/plain", []byte("d"), backend.CreateOptions{Ephemeral: true})
		<-done
		t.Logf("plain create with a lost reply: %v", err)
		if err != nil && !errors.Is(err, backend.ErrConnectionLoss) {
			t.Fatal(err)
		}
	})
	t.Run("close while partitioned", func(t *testing.T) {
		c := devOpen(t, d, 5*time.Second)
		px.setPaused(true)
		defer px.setPaused(false)
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := c.Close(cctx)
		t.Logf("close while partitioned: %v after %v", err, time.Since(start))
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
			t.Fatal(err)
		}
		var last backend.ConnEvent
		for ev := range c.Events() {
			last = ev
		}
		if last.State != backend.StateClosed {
			t.Fatalf("last %v", last)
		}
	})
	t.Run("long", func(t *testing.T) {
		c := devOpen(t, d, 2*time.Second)
		t.Logf("granted ttl %v", c.Timeout())
		nextEvent(t, c, time.Second)
		start := time.Now()
		px.setPaused(true)
		defer px.setPaused(false)
		ev := nextEvent(t, c, 4*time.Second)
		t.Logf("pause -> %v after %v", ev.State, time.Since(start))
		ev = nextEvent(t, c, 6*time.Second)
		t.Logf("pause -> %v after %v (%v)", ev.State, time.Since(start), ev.Err)
		if ev.State != backend.StateExpired {
			t.Fatalf("event %+v", ev)
		}
		px.setPaused(false)
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := c.Close(cctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEtcdDriverDevSteady(t *testing.T) {
	// With the smallest TTL the server grants (2s by default), the default
	// suspend-after must not report spurious disconnections.
	ep := devEtcd(t)
	d := devDriver(t, ep)
	c := devOpen(t, d, time.Second)
	t.Logf("ttl %v", c.Timeout())
	nextEvent(t, c, time.Second)
	select {
	case ev := <-c.Events():
		t.Fatalf("event %+v", ev)
	case <-time.After(10 * time.Second):
	}
}

func TestEtcdDriverDevLeaks(t *testing.T) {
	// Registered first, so it runs last: after the server has stopped.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	ep := devEtcd(t)
	d, err := etcddrv.Dial(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c1, err := d.Open(ctx, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := d.Open(ctx, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := c1.Watch(ctx, "/leak/a"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c2.WatchChildren(ctx, "/leak"); err != nil {
		t.Fatal(err)
	}
	if err := c1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// c2 is closed by the driver; nobody reads its events.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Open(ctx, time.Second); !errors.Is(err, coordkit.ErrClosed) {
		t.Fatalf("open after close: %v", err)
	}
}
