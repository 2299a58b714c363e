package integration_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/coordkit/coordkit/integration"
)

// ---- helpers ---------------------------------------------------------

// requireControl skips the test when the kit does not run the servers of c
// itself (they come from COORDKIT_ZOOKEEPER_ADDRS, COORDKIT_ETCD_ENDPOINTS
// or a container), since it must stop, kill or restart members, or fails it
// when CI is set: the kit's skipOrFatal, for this package's tests.
func requireControl(t testing.TB, c interface {
	Controllable() bool
	Source() string
}, what string) {
	t.Helper()
	if c.Controllable() {
		return
	}
	msg := fmt.Sprintf("%s not controlled by the kit (source %q): this test stops, kills or restarts members; unset %s, %s and %s to let the kit run its own (ZooKeeper from the local installation, etcd embedded)",
		what, c.Source(), integration.EnvZooKeeperAddrs, integration.EnvEtcdEndpoints, integration.EnvUseDocker)
	if integration.InCI() {
		t.Fatalf("%s (%s is set, so this is a failure)", msg, integration.EnvCI)
	}
	t.Skip(msg)
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

// zkEvents records a go-zk client's session events (go-zk drops events
// when its own channel is full, so the tests use a callback).
type zkEvents struct {
	mu     sync.Mutex
	events []zk.Event
	notify chan struct{}
}

func (r *zkEvents) record(e zk.Event) {
	if e.Type != zk.EventSession {
		return
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// mark returns the number of events recorded so far.
func (r *zkEvents) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// wait waits for a session event with state st recorded after mark from,
// and returns the mark after it.
func (r *zkEvents) wait(t *testing.T, st zk.State, from int, timeout time.Duration) int {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for i := from; i < len(r.events); i++ {
			if r.events[i].State == st {
				r.mu.Unlock()
				return i + 1
			}
		}
		seen := fmt.Sprint(r.events[from:])
		r.mu.Unlock()
		select {
		case <-r.notify:
		case <-deadline.C:
			t.Fatalf("no %v session event within %v (events since mark: %s)", st, timeout, seen)
		}
	}
}

// connectZK connects go-zk to servers, waits for a session, and closes the
// client (waiting for its goroutines) at the end of the test.
func connectZK(t *testing.T, servers []string, sessionTimeout time.Duration) (*zk.Conn, *zkEvents) {
	t.Helper()
	rec := &zkEvents{notify: make(chan struct{}, 1)}
	conn, ec, err := zk.Connect(servers, sessionTimeout, zk.WithLogger(quietLogger{}), zk.WithEventCallback(rec.record))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		deadline := time.NewTimer(10 * time.Second)
		defer deadline.Stop()
		for {
			select {
			case _, ok := <-ec:
				if !ok {
					return
				}
			case <-deadline.C:
				t.Errorf("go-zk client did not stop")
				return
			}
		}
	})
	rec.wait(t, zk.StateHasSession, 0, 20*time.Second)
	return conn, rec
}

// retryZK retries op (a go-zk call) while the client fails over.
func retryZK(t *testing.T, what string, op func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := op()
		if err == nil {
			return
		}
		if !errors.Is(err, zk.ErrConnectionClosed) && !errors.Is(err, zk.ErrNoServer) &&
			!errors.Is(err, zk.ErrSessionMoved) && !strings.Contains(err.Error(), "connection") {
			t.Fatalf("%s: %v", what, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 20s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func connectEtcd(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// concurrencySession opens an etcd concurrency.Session (a lease of lockTTL)
// on a client of its own, closed when the test ends: the session of etcd's
// own recipes, which the lock tests measure and mix with ours.
func concurrencySession(t testing.TB, endpoints ...string) *concurrency.Session {
	t.Helper()
	cs, err := concurrency.NewSession(connectEtcd(t, endpoints...), concurrency.WithTTL(int(lockTTL/time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// retryEtcd retries op until it succeeds or 20s pass.
func retryEtcd(t *testing.T, what string, op func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := op(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 20s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func uniquePath(t *testing.T) string {
	return fmt.Sprintf("/kit-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
}

// ---- ZooKeeper servers ----------------------------------------------

func TestZooKeeperStandalone(t *testing.T) {
	start := time.Now()
	c := sharedZK.Get(t)
	t.Logf("ZooKeeper standalone (%s) available after %v", c.Source(), time.Since(start))

	if got := c.Leader(t); got != 0 {
		t.Fatalf("Leader = %d, want 0", got)
	}
	if c.Source() == "local" {
		if m := c.Mode(0); m != "standalone" {
			t.Fatalf("Mode = %q, want standalone", m)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := integration.FourLetterWord(ctx, c.Addr(0), "ruok"); err != nil || out != "imok" {
		t.Fatalf("ruok = %q, %v", out, err)
	}

	conn, _ := connectZK(t, c.Addrs(), 4*time.Second)
	p := uniquePath(t)
	if _, err := conn.Create(p, []byte("v"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	if data, _, err := conn.Get(p); err != nil || string(data) != "v" {
		t.Fatalf("Get = %q, %v", data, err)
	}
	if err := conn.Delete(p, -1); err != nil {
		t.Fatal(err)
	}
}

func TestZooKeeperEnsemble(t *testing.T) {
	start := time.Now()
	c := integration.StartZooKeeper(t, integration.WithMembers(3))
	t.Logf("ZooKeeper 3-member ensemble (%s) ready in %v", c.Source(), time.Since(start))
	requireControl(t, c, "ZooKeeper ensemble")

	leader := c.Leader(t)
	follower := (leader + 1) % 3
	other := (leader + 2) % 3
	if m := c.Mode(follower); m != "follower" {
		t.Fatalf("member %d mode %q, want follower", follower, m)
	}

	conn, _ := connectZK(t, c.Addrs(), 4*time.Second)
	p := uniquePath(t)
	if _, err := conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}

	// A follower crashes: the ensemble still serves.
	c.Kill(t, follower)
	if c.Running(follower) || c.Mode(follower) != "" {
		t.Fatalf("member %d still answers after Kill", follower)
	}
	retryZK(t, "create with a follower down", func() error {
		_, err := conn.Create(p+"/a", nil, 0, zk.WorldACL(zk.PermAll))
		if errors.Is(err, zk.ErrNodeExists) {
			return nil
		}
		return err
	})
	onOther, _ := connectZK(t, []string{c.Addr(other)}, 4*time.Second)
	if ok, _, err := onOther.Exists(p + "/a"); err != nil || !ok {
		t.Fatalf("member %d: Exists = %v, %v", other, ok, err)
	}

	// It comes back on the same port and data directory, and catches up.
	start = time.Now()
	c.Start(t, follower)
	t.Logf("follower restarted in %v", time.Since(start))
	if m := c.Mode(follower); m != "follower" {
		t.Fatalf("restarted member %d mode %q, want follower", follower, m)
	}
	onFollower, _ := connectZK(t, []string{c.Addr(follower)}, 4*time.Second)
	if _, err := onFollower.Sync(p + "/a"); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := onFollower.Exists(p + "/a"); err != nil || !ok {
		t.Fatalf("restarted member %d: Exists = %v, %v", follower, ok, err)
	}

	// The leader stops: another member takes over.
	c.Stop(t, leader)
	start = time.Now()
	newLeader := c.Leader(t)
	t.Logf("new leader %d elected %v after the old one stopped", newLeader, time.Since(start))
	if newLeader == leader {
		t.Fatalf("leader still %d after Stop", leader)
	}
	retryZK(t, "create after the leader stopped", func() error {
		_, err := conn.Create(p+"/b", nil, 0, zk.WorldACL(zk.PermAll))
		if errors.Is(err, zk.ErrNodeExists) {
			return nil
		}
		return err
	})
	c.Restart(t, leader) // stopped member: Restart starts it
	if m := c.Mode(leader); m != "follower" {
		t.Fatalf("old leader mode %q after restart, want follower", m)
	}

	// A session held through one member can be expired through another.
	proxy := integration.NewZooKeeperProxy(t, c.Addr(follower))
	a, evA := connectZK(t, []string{proxy.Addr()}, 10*time.Second)
	if _, err := a.Create(p+"/eph", nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	sid := a.SessionID()
	passwd, ok := proxy.ZooKeeperSession(sid)
	if !ok {
		t.Fatalf("proxy did not record session 0x%x", sid)
	}
	m := evA.mark()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := integration.ExpireZooKeeperSession(ctx, c.Addr(c.Leader(t)), sid, passwd); err != nil {
		t.Fatal(err)
	}
	evA.wait(t, zk.StateExpired, m, 20*time.Second)
	retryZK(t, "exists after expiry", func() error {
		ok, _, err := conn.Exists(p + "/eph")
		if err == nil && ok {
			t.Fatal("ephemeral node survived its session's expiry")
		}
		return err
	})
}

// ---- etcd servers ---------------------------------------------------

func TestEtcdSingleMemberRestartKeepsLease(t *testing.T) {
	start := time.Now()
	c := integration.StartEtcd(t)
	t.Logf("etcd 1 member (%s) ready in %v", c.Source(), time.Since(start))
	requireControl(t, c, "etcd")
	if got := c.Leader(t); got != 0 {
		t.Fatalf("Leader = %d", got)
	}
	cli := connectEtcd(t, c.Endpoints()...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := cli.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/kit/lease", "v", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	c.Restart(t, 0)
	t.Logf("etcd member restarted in %v", time.Since(start))

	retryEtcd(t, "get after restart", func(ctx context.Context) error {
		resp, err := cli.Get(ctx, "/kit/lease")
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || resp.Kvs[0].Lease != int64(lease.ID) {
			t.Fatalf("after restart: %v", resp.Kvs)
		}
		return nil
	})
	ttl, err := cli.TimeToLive(ctx, lease.ID)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("lease after restart: TTL %v, %v", ttl, err)
	}
	if _, err := cli.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatalf("keep-alive after restart: %v", err)
	}
}

func TestEtcdThreeMembers(t *testing.T) {
	start := time.Now()
	c := integration.StartEtcd(t, integration.WithMembers(3))
	t.Logf("etcd 3 members (%s) ready in %v", c.Source(), time.Since(start))
	requireControl(t, c, "etcd")
	leader := c.Leader(t)
	follower := (leader + 1) % 3
	cli := connectEtcd(t, c.Endpoints()...)

	c.Stop(t, follower)
	if c.Running(follower) {
		t.Fatal("member still running after Stop")
	}
	retryEtcd(t, "put with a follower down", func(ctx context.Context) error {
		_, err := cli.Put(ctx, "/kit/3", "a")
		return err
	})
	c.Start(t, follower)
	onFollower := connectEtcd(t, c.Endpoint(follower))
	retryEtcd(t, "get from the restarted member", func(ctx context.Context) error {
		resp, err := onFollower.Get(ctx, "/kit/3")
		if err == nil && (len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "a") {
			err = fmt.Errorf("got %v", resp.Kvs)
		}
		return err
	})

	c.Stop(t, leader)
	start = time.Now()
	newLeader := c.Leader(t)
	t.Logf("new etcd leader %d after %v", newLeader, time.Since(start))
	if newLeader == leader {
		t.Fatalf("leader still %d after Stop", leader)
	}
	retryEtcd(t, "put after the leader stopped", func(ctx context.Context) error {
		_, err := cli.Put(ctx, "/kit/3", "b")
		return err
	})
	c.Restart(t, leader)
	if got := c.Leader(t); got < 0 || got > 2 {
		t.Fatalf("Leader = %d", got)
	}
}

// ---- proxy -----------------------------------------------------------

func TestProxyEtcdBlackholeAndPause(t *testing.T) {
	e := sharedEtcd.Get(t)
	p := integration.NewProxy(t, e.Endpoint(0))
	cli := connectEtcd(t, p.Addr())
	direct := connectEtcd(t, e.Endpoints()...)
	t.Cleanup(func() {
		if _, err := direct.Delete(context.Background(), "/kit/proxy"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	retryEtcd(t, "put through the proxy", func(ctx context.Context) error {
		_, err := cli.Put(ctx, "/kit/proxy", "1")
		return err
	})

	// Blackhole: requests time out.
	p.Blackhole()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err := cli.Get(ctx, "/kit/proxy")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(fmt.Sprint(err), "DeadlineExceeded") {
		t.Fatalf("Get through a blackhole: %v, want a deadline error", err)
	}
	p.Unblackhole()
	retryEtcd(t, "get after the blackhole", func(ctx context.Context) error {
		_, err := cli.Get(ctx, "/kit/proxy")
		return err
	})

	// Pause: a request waits, then completes on the same connection.
	accepted := p.Accepted()
	p.Pause()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := cli.Put(ctx, "/kit/proxy", "2")
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Put completed through a paused proxy: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	p.Resume()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Put after Resume: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Put not delivered after Resume")
	}
	if got := p.Accepted(); got != accepted {
		t.Fatalf("the client reconnected (%d connections accepted, was %d): Resume did not deliver", got, accepted)
	}
	resp, err := cli.Get(context.Background(), "/kit/proxy")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "2" {
		t.Fatalf("Get = %v, %v", resp, err)
	}
}

func TestProxyZooKeeperBlackhole(t *testing.T) {
	c := sharedZK.Get(t)
	p := integration.NewZooKeeperProxy(t, c.Addr(0))
	conn, ev := connectZK(t, []string{p.Addr()}, 3*time.Second)
	if _, _, err := conn.Exists("/"); err != nil {
		t.Fatal(err)
	}
	m := ev.mark()
	p.Blackhole()
	// The client hears nothing for 2/3 of the session timeout.
	m = ev.wait(t, zk.StateDisconnected, m, 10*time.Second)
	p.Unblackhole()
	ev.wait(t, zk.StateHasSession, m, 30*time.Second)
	retryZK(t, "exists after the blackhole", func() error {
		_, _, err := conn.Exists("/")
		return err
	})
}

func TestProxyDropConnections(t *testing.T) {
	c := sharedZK.Get(t)
	p := integration.NewZooKeeperProxy(t, c.Addr(0))
	conn, ev := connectZK(t, []string{p.Addr()}, 10*time.Second)
	sid := conn.SessionID()
	m := ev.mark()
	p.DropConnections()
	m = ev.wait(t, zk.StateDisconnected, m, 10*time.Second)
	ev.wait(t, zk.StateHasSession, m, 20*time.Second)
	if got := conn.SessionID(); got != sid {
		t.Fatalf("session changed from 0x%x to 0x%x: a dropped connection must not expire it", sid, got)
	}
	if p.Accepted() < 2 {
		t.Fatalf("accepted %d connections, want a reconnection", p.Accepted())
	}
}

// ---- session expiry --------------------------------------------------

func TestExpireZooKeeperSession(t *testing.T) {
	c := sharedZK.Get(t)
	p := integration.NewZooKeeperProxy(t, c.Addr(0))
	a, evA := connectZK(t, []string{p.Addr()}, 10*time.Second)
	b, _ := connectZK(t, c.Addrs(), 10*time.Second)

	path := uniquePath(t)
	if _, err := a.Create(path, nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	ok, _, watch, err := b.ExistsW(path)
	if err != nil || !ok {
		t.Fatalf("second client: ExistsW = %v, %v", ok, err)
	}
	sid := a.SessionID()
	passwd, ok := p.ZooKeeperSession(sid)
	if !ok || len(passwd) == 0 {
		t.Fatalf("proxy did not record session 0x%x", sid)
	}

	m := evA.mark()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := p.ExpireZooKeeperSession(ctx, sid); err != nil {
		t.Fatal(err)
	}
	t.Logf("session 0x%x expired in %v", sid, time.Since(start))

	// The server deleted the ephemeral node: the other client sees it go.
	select {
	case e := <-watch:
		if e.Type != zk.EventNodeDeleted {
			t.Fatalf("watch event %v, want EventNodeDeleted", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ephemeral node not deleted after the session was expired")
	}
	if ok, _, err := b.Exists(path); err != nil || ok {
		t.Fatalf("Exists after expiry = %v, %v", ok, err)
	}
	// The first client learns of it on its next contact.
	evA.wait(t, zk.StateExpired, m, 20*time.Second)

	// The session is gone for good.
	if err := integration.ExpireZooKeeperSession(ctx, c.Addr(0), sid, passwd); !errors.Is(err, integration.ErrZooKeeperSessionInvalid) {
		t.Fatalf("expiring an expired session: %v, want ErrZooKeeperSessionInvalid", err)
	}
}

// ---- environment -----------------------------------------------------

func TestServersFromEnvironmentCannotBeControlled(t *testing.T) {
	zkAddr := sharedZK.Get(t).Addr(0)
	etcdEP := sharedEtcd.Get(t).Endpoint(0)
	notCI(t)
	t.Setenv(integration.EnvZooKeeperAddrs, zkAddr)
	t.Setenv(integration.EnvEtcdEndpoints, etcdEP)

	z := integration.StartZooKeeper(t)
	if z.Source() != "env" || z.Addr(0) != zkAddr || z.Controllable() {
		t.Fatalf("StartZooKeeper with %s: source %q addrs %v", integration.EnvZooKeeperAddrs, z.Source(), z.Addrs())
	}
	if got := z.Leader(t); got != 0 {
		t.Fatalf("Leader = %d", got)
	}
	e := integration.StartEtcd(t)
	if e.Source() != "env" || e.Endpoint(0) != etcdEP || e.Controllable() {
		t.Fatalf("StartEtcd with %s: source %q endpoints %v", integration.EnvEtcdEndpoints, e.Source(), e.Endpoints())
	}

	for name, op := range map[string]func(t *testing.T){
		"zk-kill":      func(t *testing.T) { z.Kill(t, 0) },
		"etcd-restart": func(t *testing.T) { e.Restart(t, 0) },
	} {
		skipped := false
		t.Run(name, func(t *testing.T) {
			defer func() { skipped = t.Skipped() }()
			op(t)
		})
		if !skipped {
			t.Fatalf("%s on servers from the environment did not skip", name)
		}
	}
	// A 3-member request cannot be met by one address.
	skipped := false
	t.Run("ensemble", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		integration.StartZooKeeper(t, integration.WithMembers(3))
	})
	if !skipped {
		t.Fatal("a 3-member request with one address did not skip")
	}
}

func TestUnavailableServers(t *testing.T) {
	notCI(t)
	t.Setenv(integration.EnvZooKeeperAddrs, "")
	t.Setenv(integration.EnvEtcdEndpoints, "")

	t.Run("zookeeper-not-installed", func(t *testing.T) {
		t.Setenv(integration.EnvZooKeeperJarsDir, t.TempDir())
		_, err := integration.LaunchZooKeeper(context.Background())
		if !errors.Is(err, integration.ErrUnavailable) || !strings.Contains(err.Error(), "apt-get install -y zookeeper") {
			t.Fatalf("LaunchZooKeeper without jars: %v", err)
		}
		skipped := false
		t.Run("start", func(t *testing.T) {
			defer func() { skipped = t.Skipped() }()
			integration.StartZooKeeper(t)
		})
		if !skipped {
			t.Fatal("StartZooKeeper without jars did not skip")
		}
	})

	// No Docker engine answers at this address.
	t.Run("docker-not-answering", func(t *testing.T) {
		t.Setenv(integration.EnvUseDocker, "1")
		t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/no-docker.sock")
		_, err := integration.LaunchEtcd(context.Background())
		if !errors.Is(err, integration.ErrUnavailable) || !strings.Contains(err.Error(), "Docker engine does not answer") {
			t.Fatalf("LaunchEtcd with %s=1 and no engine: %v", integration.EnvUseDocker, err)
		}
		_, err = integration.LaunchZooKeeper(context.Background())
		if !errors.Is(err, integration.ErrUnavailable) {
			t.Fatalf("LaunchZooKeeper with %s=1 and no engine: %v", integration.EnvUseDocker, err)
		}
		t.Logf("message: %v", err)
	})
}

// notCI clears every variable that marks a CI run (integration.CIVariables),
// for a test of what the kit does on a user's machine.
func notCI(t *testing.T) {
	t.Helper()
	for _, v := range integration.CIVariables() {
		t.Setenv(v, "")
	}
}
