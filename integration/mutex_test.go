package integration_test

// recipes/mutex on real servers: the shared standalone ZooKeeper and the
// shared single etcd member. Tests wait on channels bounded by lockBound;
// they never sleep to order events.

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/backendtest"
	"github.com/coordkit/coordkit/integration"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/fence"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// mxPath returns a lock path of the test's own.
func mxPath(t testing.TB) string { return testPath(t, "/coordkit-mutex") }

func mxMutex(t testing.TB, s *session.Session, path string, opts ...mutex.Option) *mutex.Mutex {
	t.Helper()
	m, err := mutex.New(s, path, opts...)
	if err != nil {
		t.Fatalf("mutex.New(%s): %v", path, err)
	}
	return m
}

// mxNoLeftovers checks that nothing of the lock at path is left.
func mxNoLeftovers(t *testing.T, conn backend.Conn, path string) {
	t.Helper()
	left, err := backendtest.Leftovers(context.Background(), conn, path, path+"/"+mutex.QueueName)
	if err != nil {
		t.Fatalf("leftovers: %v", err)
	}
	if len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// mxChecker detects overlapping critical sections and records the grants
// in the order they happened.
type mxChecker struct {
	inside  atomic.Int32
	overlap atomic.Int32
	mu      sync.Mutex
	grants  []mxGrant
}

type mxGrant struct {
	session string
	token   int64
}

func (c *mxChecker) enter(sess string, token int64) {
	if !c.inside.CompareAndSwap(0, 1) {
		c.overlap.Add(1)
		return
	}
	c.mu.Lock()
	c.grants = append(c.grants, mxGrant{sess, token})
	c.mu.Unlock()
}

func (c *mxChecker) leave() { c.inside.Store(0) }

// verify checks exclusion, the number of grants, and that tokens never go
// backwards and strictly grow when the lock passes to another session.
func (c *mxChecker) verify(t *testing.T, want int) (switches int) {
	t.Helper()
	if n := c.overlap.Load(); n > 0 {
		t.Fatalf("%d overlapping critical sections", n)
	}
	if len(c.grants) != want {
		t.Fatalf("%d grants, want %d", len(c.grants), want)
	}
	for i := 1; i < len(c.grants); i++ {
		a, b := c.grants[i-1], c.grants[i]
		if b.token < a.token || (b.session != a.session && b.token <= a.token) {
			t.Fatalf("grant %d: token %d (session %s) after %d (session %s)", i, b.token, b.session, a.token, a.session)
		}
		if b.session != a.session {
			switches++
		}
	}
	return switches
}

// mxUser is a Mutex and the id of its session.
type mxUser struct {
	m   *mutex.Mutex
	sid string
}

// mxHammer runs rounds critical sections on each of goroutines goroutines
// per user, checking exclusion.
func mxHammer(t *testing.T, c *mxChecker, users []mxUser, goroutines, rounds int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, u := range users {
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					ctx, cancel := context.WithTimeout(context.Background(), 2*lockBound)
					g, err := u.m.Lock(ctx)
					cancel()
					if err != nil {
						t.Errorf("Lock: %v", err)
						return
					}
					c.enter(u.sid, g.Token())
					if err := g.Err(); err != nil {
						t.Errorf("a fresh guard has ended: %v", err)
					}
					c.leave()
					if err := g.Unlock(context.Background()); err != nil {
						t.Errorf("Unlock: %v", err)
					}
				}
			}()
		}
	}
	wg.Wait()
}

// TestMutexExclusionAcrossSessions: 4 sessions with 4 goroutines each take
// the lock in turn; no two critical sections overlap, tokens never go back
// and grow whenever the lock changes sessions, and nothing is left behind.
func TestMutexExclusionAcrossSessions(t *testing.T) {
	for _, be := range lockBackends {
		t.Run(be.name, func(t *testing.T) {
			drv := be.driver(t)
			path := mxPath(t)
			var c mxChecker
			const sessions, goroutines, rounds = 4, 4, 10
			users := mxSessions(t, drv, path, sessions)
			mxHammer(t, &c, users, goroutines, rounds)
			switches := c.verify(t, len(users)*goroutines*rounds)
			t.Logf("%d grants, the lock changed sessions %d times", len(c.grants), switches)
			if switches < len(users)-1 {
				t.Errorf("the lock changed sessions only %d times: a session was starved", switches)
			}
			mxNoLeftovers(t, observerConn(t, drv), path)
		})
	}
}

// mxSessions opens n sessions on drv, each with a Mutex on path that hands
// off locally at most twice in a row.
func mxSessions(t *testing.T, drv backend.Driver, path string, n int) []mxUser {
	t.Helper()
	users := make([]mxUser, 0, n)
	for range n {
		s := lockSession(t, drv)
		users = append(users, mxUser{mxMutex(t, s, path, mutex.WithMaxLocalHandoffs(2)), s.ID()})
	}
	return users
}

// TestMutexUnwritableDirectoryZooKeeper: a lock directory the sessions may
// not write (an ACL without WRITE) cannot be stamped; the mutex falls back
// to a watch armed with its create, and still excludes, releases and
// leaves nothing behind.
func TestMutexUnwritableDirectoryZooKeeper(t *testing.T) {
	addrs := sharedZK.Get(t).Addrs()
	raw := curatorWatcher(t, addrs)
	path := mxPath(t)
	parent, _ := backend.Split(path)
	if _, err := raw.Create(parent, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
		t.Fatal(err)
	}
	if _, err := raw.Create(path, nil, 0, zk.WorldACL(zk.PermCreate|zk.PermRead|zk.PermDelete)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Delete(path, -1) })
	cd := &countingDriver{Driver: openZooKeeperDriver(t, addrs)}
	var c mxChecker
	const goroutines, rounds = 2, 5
	users := mxSessions(t, cd, path, 2)
	mxHammer(t, &c, users, goroutines, rounds)
	c.verify(t, len(users)*goroutines*rounds)
	mxNoLeftovers(t, observerConn(t, cd.Driver), path)
	counts := cd.total.snapshot().byOp
	if counts["CreateAndWatch"] == 0 || counts["DeleteStamped"] != 0 {
		t.Fatalf("calls %v: want the owner node created with a watch and never deleted by stamp", counts)
	}
	t.Logf("calls without stamps: %v", counts)
}

// TestMutexGoroutines32: 32 goroutines of one process share one
// acquisition at a time; the lock passes between them locally.
func TestMutexGoroutines32(t *testing.T) {
	for _, be := range lockBackends {
		t.Run(be.name, func(t *testing.T) {
			drv := be.driver(t)
			path := mxPath(t)
			s := lockSession(t, drv)
			var c mxChecker
			mxHammer(t, &c, []mxUser{{mxMutex(t, s, path), s.ID()}}, 32, 20)
			c.verify(t, 32*20)
			tokens := map[int64]int{}
			for _, g := range c.grants {
				tokens[g.token]++
			}
			t.Logf("%d grants over %d acquisitions on the server", len(c.grants), len(tokens))
			if len(tokens) == len(c.grants) {
				t.Errorf("every grant was a server acquisition: no local handoff")
			}
			mxNoLeftovers(t, observerConn(t, drv), path)
		})
	}
}

// TestMutexHolderSessionExpired: the server ends the holding session
// (ZooKeeper: the session is expired on the server; etcd: its lease is
// revoked). The holder's Done fires, its process's waiting goroutines get
// an error, and the waiting process acquires with a larger token. A fenced
// register refuses the old holder's write.
func TestMutexHolderSessionExpired(t *testing.T) {
	t.Run("zookeeper", func(t *testing.T) {
		addrs := sharedZK.Get(t).Addrs()
		proxy := integration.NewZooKeeperProxy(t, addrs[0])
		hs := lockSession(t, openZooKeeperDriver(t, []string{proxy.Addr()}))
		direct := openZooKeeperDriver(t, addrs)
		mxExpiry(t, hs, direct, func() {
			sid, err := strconv.ParseUint(hs.ID(), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			if err := proxy.ExpireZooKeeperSession(context.Background(), int64(sid)); err != nil {
				t.Fatalf("expire: %v", err)
			}
		})
	})
	t.Run("etcd", func(t *testing.T) {
		eps := sharedEtcd.Get(t).Endpoints()
		drv := openEtcdDriver(t, eps)
		hs := lockSession(t, drv)
		mxExpiry(t, hs, drv, func() {
			lease, err := strconv.ParseUint(hs.ID(), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := connectEtcd(t, eps...).Revoke(context.Background(), clientv3.LeaseID(lease)); err != nil {
				t.Fatalf("revoke: %v", err)
			}
		})
	})
}

func mxExpiry(t *testing.T, hs *session.Session, other backend.Driver, expire func()) {
	path := mxPath(t)
	mh := mxMutex(t, hs, path)
	ws := lockSession(t, other)
	mw := mxMutex(t, ws, path)
	store := fence.NewRegister(0)

	holder, err := mh.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Store(holder.Token(), 1); err != nil {
		t.Fatal(err)
	}
	localErr := make(chan error, 1)
	go func() {
		_, err := mh.Lock(context.Background())
		localErr <- err
	}()
	type res struct {
		g   *mutex.Guard
		err error
	}
	waiter := make(chan res, 1)
	go func() {
		g, err := mw.Lock(context.Background())
		waiter <- res{g, err}
	}()
	obs := observerConn(t, other)
	mxAwait(t, "the other session to queue and mark the owner node", func() bool {
		n, err := obs.Get(context.Background(), path+"/"+mutex.OwnerName)
		return err == nil && string(n.Data) == mutex.ContendedMark
	})
	t0 := time.Now()
	expire()
	select {
	case <-holder.Done():
	case <-time.After(lockBound):
		t.Fatal("the holder's Done did not fire after its session ended on the server")
	}
	if err := holder.Err(); !errors.Is(err, recipes.ErrLost) {
		t.Fatalf("holder: %v, want ErrLost", err)
	}
	lost := time.Since(t0)
	var r res
	select {
	case r = <-waiter:
	case <-time.After(lockBound):
		t.Fatal("the waiting session did not get the lock")
	}
	if r.err != nil {
		t.Fatalf("waiter: %v", r.err)
	}
	t.Logf("holder lost %v after the server ended its session (%v); the other session acquired %v after", lost.Round(time.Millisecond), holder.Err(), time.Since(t0).Round(time.Millisecond))
	if r.g.Token() <= holder.Token() {
		t.Fatalf("new token %d, old %d", r.g.Token(), holder.Token())
	}
	if err := store.Store(r.g.Token(), 2); err != nil {
		t.Fatal(err)
	}
	if err := store.Store(holder.Token(), 3); !errors.Is(err, fence.ErrStaleToken) {
		t.Fatalf("stale write: %v, want ErrStaleToken", err)
	}
	select {
	case err := <-localErr:
		if !errors.Is(err, coordkit.ErrSessionLost) {
			t.Fatalf("the holder process's waiting goroutine: %v, want ErrSessionLost", err)
		}
	case <-time.After(lockBound):
		t.Fatal("the holder process's waiting goroutine did not return")
	}
	if err := holder.Unlock(context.Background()); err != nil {
		t.Errorf("Unlock of the lost guard: %v", err)
	}
	if err := r.g.Unlock(context.Background()); err != nil {
		t.Fatal(err)
	}
	mxNoLeftovers(t, obs, path)
}

// mxAwait polls cond, which reads server state that changes without a
// signal the test can wait on, until it holds (waitUntil, bounded by
// lockBound).
func mxAwait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitUntil(t, what, lockBound, cond)
}

// TestMutexCancelLeavesNothing: Lock calls cancelled while another session
// holds leave no queue node behind once the process has finished them.
func TestMutexCancelLeavesNothing(t *testing.T) {
	for _, be := range lockBackends {
		t.Run(be.name, func(t *testing.T) {
			drv := be.driver(t)
			path := mxPath(t)
			mh := mxMutex(t, lockSession(t, drv), path)
			mw := mxMutex(t, lockSession(t, drv), path)
			obs := observerConn(t, drv)
			g, err := mh.Lock(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i)*time.Millisecond)
				_, err := mw.Lock(ctx)
				cancel()
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Lock while held: %v, want DeadlineExceeded", err)
				}
				// A request in flight when ctx ended is finished in the
				// background; the path state leaves once that is done.
				mxAwait(t, "the cancelled attempt to finish", func() bool { return mw.Inspect() == (mutex.Snapshot{}) })
				kids, err := obs.Children(context.Background(), path+"/"+mutex.QueueName)
				if err != nil {
					t.Fatal(err)
				}
				if len(kids) > 0 {
					t.Fatalf("cancelled Lock left %v", kids[0].Name)
				}
			}
			if err := g.Unlock(context.Background()); err != nil {
				t.Fatal(err)
			}
			mxNoLeftovers(t, obs, path)
		})
	}
}

// BenchmarkMutex_ZooKeeper_Uncontended: one goroutine, Lock + Unlock: a
// create (multi of create and setData) and a delete.
func BenchmarkMutex_ZooKeeper_Uncontended(b *testing.B) {
	benchMutex(b, openZooKeeperDriver(b, sharedZK.Get(b).Addrs()), 1, 1)
}

// BenchmarkMutex_Etcd_Uncontended: one goroutine, Lock + Unlock: a create
// Txn and a delete Txn.
func BenchmarkMutex_Etcd_Uncontended(b *testing.B) {
	benchMutex(b, openEtcdDriver(b, sharedEtcd.Get(b).Endpoints()), 1, 1)
}

// BenchmarkMutex_ZooKeeper_Goroutines32: 32 goroutines of one session.
func BenchmarkMutex_ZooKeeper_Goroutines32(b *testing.B) {
	benchMutex(b, openZooKeeperDriver(b, sharedZK.Get(b).Addrs()), 1, 32)
}

// BenchmarkMutex_Etcd_Goroutines32: 32 goroutines of one session.
func BenchmarkMutex_Etcd_Goroutines32(b *testing.B) {
	benchMutex(b, openEtcdDriver(b, sharedEtcd.Get(b).Endpoints()), 1, 32)
}

// BenchmarkMutex_ZooKeeper_Sessions4: 4 sessions, one goroutine each.
func BenchmarkMutex_ZooKeeper_Sessions4(b *testing.B) {
	benchMutex(b, openZooKeeperDriver(b, sharedZK.Get(b).Addrs()), 4, 1)
}

// BenchmarkMutex_Etcd_Sessions4: 4 sessions, one goroutine each.
func BenchmarkMutex_Etcd_Sessions4(b *testing.B) {
	benchMutex(b, openEtcdDriver(b, sharedEtcd.Get(b).Endpoints()), 4, 1)
}

// benchMutex runs b.N critical sections (Lock + Unlock) spread over
// goroutines goroutines in each of sessions sessions, and reports
// acquisitions per second.
func benchMutex(b *testing.B, drv backend.Driver, sessions, goroutines int) {
	path := mxPath(b)
	var ms []*mutex.Mutex
	for range sessions {
		ms = append(ms, mxMutex(b, lockSession(b, drv), path))
	}
	ctx := context.Background()
	work := make(chan struct{}, sessions*goroutines)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for _, m := range ms {
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range work {
					g, err := m.Lock(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					if err := g.Unlock(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
	}
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "acquires/s")
}

// unawareHold is a grant as a holder sees it that has not heard that it
// ended: a process paused (GC, SIGSTOP) after it last checked Err, or one
// whose session has not told it yet. Err reports nil; Token, Fence and
// Fences are the grant's own. fence.Set then skips its local check and sends
// the write: only the server can refuse it (backend.ErrGuardFailed). Of
// either lock (the reliability tests use it too).
type unawareHold struct{ recipes.Held }

func (unawareHold) Err() error { return nil }

// serverRefused reports whether err is a fenced write's refusal by the
// server: fence.ErrStale because a guard failed in the server's
// transaction, not because the hold had ended locally.
func serverRefused(err error) bool {
	return errors.Is(err, fence.ErrStale) && errors.Is(err, backend.ErrGuardFailed)
}

// TestMutexFenceRefusesReleasedHolder: A holds and releases, its session
// alive; B takes the lock; A's fenced write, late, must be refused on the
// server. On ZooKeeper P/owner exists again (B's, at the same path and
// version), which a multi's check cannot tell from A's: the fence's stamp
// of the directory and A's pin do.
func TestMutexFenceRefusesReleasedHolder(t *testing.T) {
	for _, be := range lockBackends {
		t.Run(be.name, func(t *testing.T) {
			drv := be.driver(t)
			path := mxPath(t)
			sa, sb := lockSession(t, drv), lockSession(t, drv)
			ma, mb := mxMutex(t, sa, path), mxMutex(t, sb, path)
			ctx := testCtx(t)
			data := path + "-data"
			if _, err := sa.Conn().Create(ctx, data, []byte("3"), backend.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sa.Conn().Delete(context.Background(), data, backend.AnyVersion) })
			ga, err := ma.Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fence.Set(ctx, sa.Conn(), ga, data, []byte("2"), backend.AnyVersion); err != nil {
				t.Fatalf("fenced write while holding: %v", err)
			}
			if err := ga.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			gb, err := mb.Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fence.Set(ctx, sa.Conn(), unawareHold{ga}, data, []byte("stale"), backend.AnyVersion); !serverRefused(err) {
				t.Fatalf("a released holder's write while another process holds: %v, want the server's refusal (fence.ErrStale and backend.ErrGuardFailed)", err)
			}
			if n, err := sb.Conn().Get(ctx, data); err != nil || string(n.Data) != "2" {
				t.Fatalf("data %q (%v), want the holder's write only", n.Data, err)
			}
			if _, err := fence.Set(ctx, sb.Conn(), gb, data, []byte("1"), backend.AnyVersion); err != nil {
				t.Fatalf("the current holder's fenced write: %v", err)
			}
			if err := gb.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
