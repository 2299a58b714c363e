package integration_test

// Behaviour tests of recipes/fairlock on real servers, on both backends:
// exclusion and FIFO across sessions, fencing tokens, a holder whose
// session the server ends, cancelled Locks leaving nothing, coexistence with
// etcd's concurrency.Mutex, and Curator's znode names on ZooKeeper. The
// interop tests with Curator itself are in curator_test.go.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/integration"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/fairlock"
	"github.com/coordkit/coordkit/session"
)

// flPath returns a lock path of its own for the test.
func flPath(t testing.TB) string { return testPath(t, "/coordkit-fairlock") }

func flLock(t testing.TB, s *session.Session, path string) *fairlock.Lock {
	t.Helper()
	l, err := fairlock.New(s, path)
	if err != nil {
		t.Fatalf("fairlock.New(%s): %v", path, err)
	}
	return l
}

// flAwaitChildren waits, with a children watch, until path has n children
// as conn sees them.
func flAwaitChildren(t *testing.T, conn backend.Conn, path string, n int) []backend.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), lockBound)
	defer cancel()
	for {
		kids, w, err := conn.WatchChildren(ctx, path)
		if err != nil {
			t.Fatalf("watch children of %s: %v", path, err)
		}
		if len(kids) == n {
			w.Stop()
			return kids
		}
		select {
		case <-w.C():
			w.Stop()
		case <-ctx.Done():
			w.Stop()
			names := make([]string, len(kids))
			for i, k := range kids {
				names[i] = k.Name
			}
			t.Fatalf("%s has %d children %v, want %d", path, len(kids), names, n)
		}
	}
}

// TestFairlockExclusionFIFO: four sessions, two goroutines each, take the
// lock in turns. An atomic count of holders never exceeds one, and the
// fencing tokens, recorded in grant order, strictly increase: grants follow
// creation order.
func TestFairlockExclusionFIFO(t *testing.T) {
	for _, b := range lockBackends {
		t.Run(b.name, func(t *testing.T) {
			drv := b.driver(t)
			path := flPath(t)
			const sessions, goroutines, rounds = 4, 2, 15
			var (
				holders atomic.Int32
				mu      sync.Mutex
				tokens  []int64
				wg      sync.WaitGroup
				errs    = make(chan error, sessions*goroutines)
			)
			for range sessions {
				l := flLock(t, lockSession(t, drv), path)
				for range goroutines {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range rounds {
							ctx, cancel := context.WithTimeout(context.Background(), lockBound)
							g, err := l.Lock(ctx)
							cancel()
							if err != nil {
								errs <- err
								return
							}
							if h := holders.Add(1); h != 1 {
								errs <- fmt.Errorf("%d holders at once", h)
							}
							mu.Lock()
							tokens = append(tokens, g.Token())
							mu.Unlock()
							holders.Add(-1)
							if err := g.Unlock(context.Background()); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if len(tokens) != sessions*goroutines*rounds {
				t.Fatalf("%d grants, want %d", len(tokens), sessions*goroutines*rounds)
			}
			for i := 1; i < len(tokens); i++ {
				if tokens[i] <= tokens[i-1] {
					t.Fatalf("grant %d: token %d after %d", i, tokens[i], tokens[i-1])
				}
			}
			flAwaitChildren(t, observerConn(t, drv), path, 0)
		})
	}
}

// TestFairlockQueueOrder: waiters that queued one after another on separate
// sessions are granted in that order, with growing tokens.
func TestFairlockQueueOrder(t *testing.T) {
	for _, b := range lockBackends {
		t.Run(b.name, func(t *testing.T) {
			drv := b.driver(t)
			path := flPath(t)
			obs := observerConn(t, drv)
			holder := mustLock(t, fairlockHandle(t, lockSession(t, drv), path))
			const n = 4
			chans := make([]<-chan lockResult, n)
			for i := range n {
				chans[i] = lockAsync(context.Background(), fairlockHandle(t, lockSession(t, drv), path))
				flAwaitChildren(t, obs, path, i+2)
			}
			prev := holder.Token()
			mustUnlock(t, holder)
			for i := range n {
				r := awaitGrant(t, chans[i], fmt.Sprintf("waiter %d", i))
				if r.g.Token() <= prev {
					t.Fatalf("waiter %d: token %d after %d", i, r.g.Token(), prev)
				}
				for j := i + 1; j < n; j++ {
					select {
					case r := <-chans[j]:
						t.Fatalf("waiter %d granted while waiter %d holds (%v)", j, i, r.err)
					default:
					}
				}
				prev = r.g.Token()
				mustUnlock(t, r.g)
			}
			flAwaitChildren(t, obs, path, 0)
		})
	}
}

// TestFairlockHolderSessionExpired: the server ends the holder's session
// (etcd: its lease is revoked; ZooKeeper: the session is expired on the
// server). The holder's Done fires, and the waiter acquires with a larger
// token.
func TestFairlockHolderSessionExpired(t *testing.T) {
	t.Run("zookeeper", func(t *testing.T) {
		addrs := sharedZK.Get(t).Addrs()
		proxy := integration.NewZooKeeperProxy(t, addrs[0])
		hs := lockSession(t, openZooKeeperDriver(t, []string{proxy.Addr()}))
		direct := openZooKeeperDriver(t, addrs)
		path := flPath(t)
		holder := mustLock(t, fairlockHandle(t, hs, path))
		ch := lockAsync(context.Background(), fairlockHandle(t, lockSession(t, direct), path))
		flAwaitChildren(t, observerConn(t, direct), path, 2)
		sid, err := strconv.ParseUint(hs.ID(), 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if err := proxy.ExpireZooKeeperSession(context.Background(), int64(sid)); err != nil {
			t.Fatalf("expire: %v", err)
		}
		flExpectLostThenHandoff(t, holder, ch)
	})
	t.Run("etcd", func(t *testing.T) {
		eps := sharedEtcd.Get(t).Endpoints()
		drv := openEtcdDriver(t, eps)
		hs := lockSession(t, drv)
		path := flPath(t)
		holder := mustLock(t, fairlockHandle(t, hs, path))
		ch := lockAsync(context.Background(), fairlockHandle(t, lockSession(t, drv), path))
		flAwaitChildren(t, observerConn(t, drv), path, 2)
		lease, err := strconv.ParseUint(hs.ID(), 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := connectEtcd(t, eps...).Revoke(context.Background(), clientv3.LeaseID(lease)); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		flExpectLostThenHandoff(t, holder, ch)
	})
}

func flExpectLostThenHandoff(t *testing.T, holder lockGuard, ch <-chan lockResult) {
	t.Helper()
	t0 := time.Now()
	select {
	case <-holder.Done():
	case <-time.After(lockTTL + lockBound):
		t.Fatal("holder's Done did not fire after its session ended on the server")
	}
	lost := time.Since(t0)
	if err := holder.Err(); !errors.Is(err, recipes.ErrLost) {
		t.Fatalf("holder: %v, want ErrLost", err)
	}
	r := awaitGrant(t, ch, "waiter")
	t.Logf("holder lost %v after the server ended its session (%v); waiter granted %v after", lost.Round(time.Millisecond), holder.Err(), time.Since(t0).Round(time.Millisecond))
	if r.g.Token() <= holder.Token() {
		t.Fatalf("waiter token %d, holder's %d", r.g.Token(), holder.Token())
	}
	if err := holder.Unlock(context.Background()); err != nil {
		t.Fatalf("Unlock of the lost guard: %v", err)
	}
	mustUnlock(t, r.g)
}

// TestFairlockCancelLoop: Locks cancelled at random points (some while
// another session holds the lock) either succeed or return ctx's error, and
// leave nothing behind; another client then acquires at once.
func TestFairlockCancelLoop(t *testing.T) {
	for _, b := range lockBackends {
		t.Run(b.name, func(t *testing.T) {
			drv := b.driver(t)
			path := flPath(t)
			holderLock := fairlockHandle(t, lockSession(t, drv), path)
			l := flLock(t, lockSession(t, drv), path)
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
			var granted, cancelled int
			for i := range 100 {
				var holder lockGuard
				if rng.IntN(3) == 0 {
					holder = mustLock(t, holderLock)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(4000))*time.Microsecond)
				g, err := l.Lock(ctx)
				cancel()
				switch {
				case err == nil && g != nil:
					if holder != nil {
						t.Fatalf("iteration %d: granted while another session holds", i)
					}
					granted++
					mustUnlock(t, g)
				case err != nil && g == nil:
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Fatalf("iteration %d: %v, want DeadlineExceeded", i, err)
					}
					cancelled++
				default:
					t.Fatalf("iteration %d: guard %v, err %v", i, g, err)
				}
				if holder != nil {
					mustUnlock(t, holder)
				}
			}
			t.Logf("granted %d, cancelled %d", granted, cancelled)
			flAwaitChildren(t, observerConn(t, drv), path, 0)
			g, err := flLock(t, lockSession(t, drv), path).TryLock(context.Background())
			if err != nil {
				t.Fatalf("another client after the loop: %v", err)
			}
			mustUnlock(t, g)
		})
	}
}

// TestFairlockEtcdMutexCoexistence: fairlock and etcd's concurrency.Mutex on
// the same prefix exclude each other, and a mixed queue is granted in
// create-revision order.
func TestFairlockEtcdMutexCoexistence(t *testing.T) {
	eps := sharedEtcd.Get(t).Endpoints()
	drv := openEtcdDriver(t, eps)
	cs := concurrencySession(t, eps...)
	path := flPath(t)
	obs := observerConn(t, drv)
	em := concurrency.NewMutex(cs, path)
	ours := fairlockHandle(t, lockSession(t, drv), path)
	other := fairlockHandle(t, lockSession(t, drv), path)
	ctx, cancel := context.WithTimeout(context.Background(), lockBound)
	defer cancel()

	// etcd's Mutex holds: fairlock waits.
	if err := em.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ours.tryLock(ctx); !errors.Is(err, recipes.ErrLocked) {
		t.Fatalf("TryLock while concurrency.Mutex holds: %v, want ErrLocked", err)
	}
	ch := lockAsync(ctx, ours)
	flAwaitChildren(t, obs, path, 2)
	select {
	case r := <-ch:
		t.Fatalf("fairlock granted while concurrency.Mutex holds: %v", r.err)
	default:
	}
	if err := em.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r := awaitGrant(t, ch, "fairlock after concurrency.Mutex")

	// fairlock holds: etcd's Mutex waits, and so does a fairlock queued
	// after it; they are granted in that order.
	if err := em.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
		t.Fatalf("concurrency.Mutex TryLock while fairlock holds: %v, want ErrLocked", err)
	}
	emDone := make(chan error, 1)
	go func() { emDone <- em.Lock(ctx) }()
	flAwaitChildren(t, obs, path, 2)
	ch2 := lockAsync(ctx, other)
	flAwaitChildren(t, obs, path, 3)
	select {
	case err := <-emDone:
		t.Fatalf("concurrency.Mutex granted while fairlock holds: %v", err)
	default:
	}
	mustUnlock(t, r.g)
	select {
	case err := <-emDone:
		if err != nil {
			t.Fatalf("concurrency.Mutex after fairlock: %v", err)
		}
	case <-time.After(lockBound):
		t.Fatal("concurrency.Mutex not granted after fairlock released")
	}
	select {
	case r := <-ch2:
		t.Fatalf("the second fairlock was granted while concurrency.Mutex holds: %v", r.err)
	default:
	}
	if got, err := cs.Client().Get(ctx, em.Key()); err != nil || len(got.Kvs) != 1 || got.Kvs[0].CreateRevision <= r.g.Token() {
		t.Fatalf("concurrency.Mutex key %s: %v (err %v), want created after fairlock's token %d", em.Key(), got, err, r.g.Token())
	}
	if err := em.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	r2 := awaitGrant(t, ch2, "second fairlock")
	mustUnlock(t, r2.g)
	flAwaitChildren(t, obs, path, 0)
}

var curatorLockName = regexp.MustCompile(`^_c_[0-9a-f-]{36}-lock-\d{10}$`)

// TestFairlockZooKeeperCuratorLayout: on ZooKeeper the lock node is named
// exactly as Curator's InterProcessMutex names it, ephemeral, with no data,
// and the token is the node's czxid.
func TestFairlockZooKeeperCuratorLayout(t *testing.T) {
	drv := openZooKeeperDriver(t, sharedZK.Get(t).Addrs())
	path := flPath(t)
	s := lockSession(t, drv)
	g := mustLock(t, fairlockHandle(t, s, path))
	obs := observerConn(t, drv)
	kids := flAwaitChildren(t, obs, path, 1)
	if !curatorLockName.MatchString(kids[0].Name) {
		t.Fatalf("lock node %q does not match %v", kids[0].Name, curatorLockName)
	}
	n, err := obs.Get(context.Background(), kids[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if n.Owner != s.ID() || len(n.Data) != 0 || n.Token != g.Token() || g.Fence().Path != n.Path {
		t.Fatalf("lock node %+v; session %s, token %d, fence %+v", n, s.ID(), g.Token(), g.Fence())
	}
	mustUnlock(t, g)
	flAwaitChildren(t, obs, path, 0)
}

// TestFairlockInvalidPath: bad paths are refused before any network call.
func TestFairlockInvalidPath(t *testing.T) {
	for _, b := range lockBackends {
		t.Run(b.name, func(t *testing.T) {
			s := lockSession(t, b.driver(t))
			for _, p := range []string{"", "rel", "/a/", "/a//b", "/zookeeper/x", "/a\x00b"} {
				if _, err := fairlock.New(s, p); !errors.Is(err, coordkit.ErrInvalidPath) {
					t.Errorf("New(%q): %v", p, err)
				}
			}
		})
	}
}

// BenchmarkFairlock_ZooKeeper_Uncontended: one session, Lock + Unlock with
// nobody else queued (create, token read + listing pipelined, delete).
func BenchmarkFairlock_ZooKeeper_Uncontended(b *testing.B) {
	benchFairlockUncontended(b, openZooKeeperDriver(b, sharedZK.Get(b).Addrs()))
}

// BenchmarkFairlock_Etcd_Uncontended: one session, Lock + Unlock with nobody
// else queued (one Txn, one delete Txn).
func BenchmarkFairlock_Etcd_Uncontended(b *testing.B) {
	benchFairlockUncontended(b, openEtcdDriver(b, sharedEtcd.Get(b).Endpoints()))
}

func benchFairlockUncontended(b *testing.B, drv backend.Driver) {
	s := lockSession(b, drv)
	l := flLock(b, s, flPath(b))
	ctx := context.Background()
	for b.Loop() {
		g, err := l.Lock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := g.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acquires/s")
}

// BenchmarkFairlock_Etcd_ConcurrencyMutex_Uncontended is the reference for
// BenchmarkFairlock_Etcd_Uncontended: etcd's own concurrency.Mutex on the
// same server.
func BenchmarkFairlock_Etcd_ConcurrencyMutex_Uncontended(b *testing.B) {
	cs := concurrencySession(b, sharedEtcd.Get(b).Endpoints()...)
	m := concurrency.NewMutex(cs, flPath(b))
	ctx := context.Background()
	for b.Loop() {
		if err := m.Lock(ctx); err != nil {
			b.Fatal(err)
		}
		if err := m.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acquires/s")
}

// BenchmarkFairlock_ZooKeeper_RawCreateDelete is the floor for
// BenchmarkFairlock_ZooKeeper_Uncontended: go-zookeeper's own ephemeral
// sequential create and delete, nothing else.
func BenchmarkFairlock_ZooKeeper_RawCreateDelete(b *testing.B) {
	conn, _, err := zk.Connect(sharedZK.Get(b).Addrs(), lockTTL, zk.WithLogger(quietLogger{}))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	// A persistent parent: a container would be reaped between a delete
	// and the next create.
	dir := flPath(b)
	parent, _ := backend.Split(dir)
	for _, p := range []string{parent, dir} {
		if _, err := conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			b.Fatal(err)
		}
	}
	defer conn.Delete(dir, -1)
	for b.Loop() {
		p, err := conn.Create(dir+"/lock-", nil, zk.FlagEphemeral|zk.FlagSequence, zk.WorldACL(zk.PermAll))
		if err != nil {
			b.Fatal(err)
		}
		if err := conn.Delete(p, -1); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
}
