package integration_test

// What the tests of the two locks, recipes/mutex and recipes/fairlock,
// share: the bounds, sessions and backends of their fixtures, and one shape
// over both locks (lockHandle, lockGuard, lockRecipes) for the tests that
// run the same scenario on each (lock_edges_test.go,
// lock_reliability_test.go).

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/integration"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// lockBound is how long something that must happen promptly may take on a
// loaded machine under -race. Tests wait on channels with it; they never
// sleep to order events.
const lockBound = 20 * time.Second

// lockTTL is the session timeout of the tests' sessions.
const lockTTL = 8 * time.Second

// lockBackend is a shared single server of one backend.
type lockBackend struct {
	name   string
	driver func(t testing.TB) backend.Driver
}

var lockBackends = []lockBackend{
	{"zookeeper", func(t testing.TB) backend.Driver { return openZooKeeperDriver(t, sharedZK.Get(t).Addrs()) }},
	{"etcd", func(t testing.TB) backend.Driver { return openEtcdDriver(t, sharedEtcd.Get(t).Endpoints()) }},
}

// testPath returns a path of the test's own under root.
func testPath(t testing.TB, root string) string {
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return root + "/" + name + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// lockSession opens a session with timeout lockTTL (unless opts say
// otherwise), closed when the test ends.
func lockSession(t testing.TB, drv backend.Driver, opts ...session.Option) *session.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), lockBound)
	defer cancel()
	s, err := session.New(ctx, drv, append([]session.Option{session.WithTTL(lockTTL)}, opts...)...)
	if err != nil {
		t.Fatalf("session.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), lockBound)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

// ---- the two locks behind one shape -----------------------------------

// lockGuard is what the Guards of both locks are.
type lockGuard interface {
	recipes.Held
	Unlock(ctx context.Context) error
}

// lockHandle is one lock handle, of either recipe, on one session.
type lockHandle struct {
	lock, tryLock func(ctx context.Context) (lockGuard, error)
	// waiting is the number of goroutines of the handle's process waiting
	// locally (mutex), or nil.
	waiting func() int
}

// lockHandleOf adapts a recipe's Lock and TryLock (a failed call's nil
// *Guard must not become a non-nil lockGuard).
func lockHandleOf[G lockGuard](lock, tryLock func(context.Context) (G, error)) lockHandle {
	adapt := func(f func(context.Context) (G, error)) func(context.Context) (lockGuard, error) {
		return func(ctx context.Context) (lockGuard, error) {
			g, err := f(ctx)
			if err != nil {
				return nil, err
			}
			return g, nil
		}
	}
	return lockHandle{lock: adapt(lock), tryLock: adapt(tryLock)}
}

// mutexHandle opens a recipes/mutex lock at path on s.
func mutexHandle(t testing.TB, s *session.Session, path string) lockHandle {
	m := mxMutex(t, s, path)
	h := lockHandleOf(m.Lock, m.TryLock)
	h.waiting = func() int { return m.Inspect().Waiting }
	return h
}

// fairlockHandle opens a recipes/fairlock lock at path on s.
func fairlockHandle(t testing.TB, s *session.Session, path string) lockHandle {
	l := flLock(t, s, path)
	return lockHandleOf(l.Lock, l.TryLock)
}

// lockRecipe is one of the locks under test and the layout of its nodes.
type lockRecipe struct {
	name string
	// path returns a lock path of the test's own.
	path func(t testing.TB) string
	open func(t testing.TB, s *session.Session, path string) lockHandle
	// queue is the directory of the waiters' nodes.
	queue func(path string) string
	// holderQueued: the holder's node is in the queue, ahead of the
	// waiters' (fairlock); the mutex's holder has the owner node.
	holderQueued bool
	// residue lists what of the lock exists on the server (cheaper than
	// backendtest.Leftovers: for loops).
	residue func(ctx context.Context, obs backend.Conn, path string) ([]string, error)
	// freshTokens: every grant carries a token of its own (fairlock). A
	// mutex process keeps its token across local handoffs.
	freshTokens bool
}

var lockRecipes = []lockRecipe{
	{
		name:  "mutex",
		path:  mxPath,
		open:  mutexHandle,
		queue: func(path string) string { return backend.Join(path, mutex.QueueName) },
		residue: func(ctx context.Context, obs backend.Conn, path string) ([]string, error) {
			var left []string
			owner := backend.Join(path, mutex.OwnerName)
			switch _, err := obs.Get(ctx, owner); {
			case err == nil:
				left = append(left, owner)
			case !errors.Is(err, backend.ErrNoNode):
				return nil, err
			}
			queued, err := childPaths(ctx, obs, backend.Join(path, mutex.QueueName))
			return append(left, queued...), err
		},
	},
	{
		name:         "fairlock",
		path:         flPath,
		open:         fairlockHandle,
		queue:        func(path string) string { return path },
		holderQueued: true,
		residue:      childPaths,
		freshTokens:  true,
	},
}

// dirs returns the directories of every node of the lock at path.
func (r lockRecipe) dirs(path string) []string {
	if q := r.queue(path); q != path {
		return []string{path, q}
	}
	return []string{path}
}

// queued waits, with a children watch, until exactly waiters processes or
// Lock calls wait behind the holder (their nodes are in the queue).
func (r lockRecipe) queued(t *testing.T, obs backend.Conn, path string, waiters int) {
	t.Helper()
	if r.holderQueued {
		waiters++
	}
	flAwaitChildren(t, obs, r.queue(path), waiters)
}

// waiters counts the processes or Lock calls queued behind the holder.
func (r lockRecipe) waiters(ctx context.Context, conn backend.Conn, path string) (int, error) {
	kids, err := conn.Children(ctx, r.queue(path))
	if r.holderQueued {
		return len(kids) - 1, err
	}
	return len(kids), err
}

// childPaths lists the paths of dir's children.
func childPaths(ctx context.Context, obs backend.Conn, dir string) ([]string, error) {
	kids, err := obs.Children(ctx, dir)
	return nodePaths(kids), err
}

func nodePaths(ns []backend.Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Path
	}
	return out
}

// ---- locking ------------------------------------------------------------

// lockResult is the outcome of a Lock and when it returned.
type lockResult struct {
	g   lockGuard
	err error
	at  time.Time
}

// lockAsync runs Lock with ctx on a goroutine that ends when Lock returns.
func lockAsync(ctx context.Context, l lockHandle) <-chan lockResult {
	ch := make(chan lockResult, 1)
	go func() {
		g, err := l.lock(ctx)
		ch <- lockResult{g, err, time.Now()}
	}()
	return ch
}

// awaitGrant waits within lockBound for the Lock on ch, which must succeed.
func awaitGrant(t *testing.T, ch <-chan lockResult, who string) lockResult {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: Lock: %v", who, r.err)
		}
		return r
	case <-time.After(lockBound):
		t.Fatalf("%s: not granted within %v", who, lockBound)
	}
	return lockResult{}
}

// lockPending fails if the Lock on ch has returned.
func lockPending(t *testing.T, ch <-chan lockResult, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s returned too early: guard %v, err %v", what, r.g != nil, r.err)
	default:
	}
}

// mustLock locks l within lockBound.
func mustLock(t *testing.T, l lockHandle) lockGuard {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), lockBound)
	defer cancel()
	g, err := l.lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	return g
}

// mustUnlock unlocks g within lockBound.
func mustUnlock(t *testing.T, g lockGuard) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), lockBound)
	defer cancel()
	if err := g.Unlock(ctx); err != nil {
		t.Fatalf("Unlock (token %d): %v", g.Token(), err)
	}
}

// TestTryLockCutOffZooKeeper: a TryLock on a ZooKeeper session whose
// connection is cut (under session.SessionPolicy, so the Suspended session
// can still hold) returns ErrConnectionLoss before the session times out,
// instead of waiting for the reconnect (go-zookeeper would queue its create
// until then). Once the connection is back, TryLock takes the lock, and
// nothing of the lock is left after its Unlock.
func TestTryLockCutOffZooKeeper(t *testing.T) {
	addrs := sharedZK.Get(t).Addrs()
	obs := observerConn(t, openZooKeeperDriver(t, addrs))
	for _, r := range lockRecipes {
		t.Run(r.name, func(t *testing.T) {
			proxy := integration.NewZooKeeperProxy(t, addrs[0])
			o := openObserved(t, openZooKeeperDriver(t, []string{proxy.Addr()}), session.WithTTL(lockTTL), session.WithErrorPolicy(session.SessionPolicy))
			path := r.path(t)
			l := r.open(t, o.s, path)
			// The lock's directory exists, and the client is warm.
			g, err := l.tryLock(context.Background())
			if err != nil {
				t.Fatalf("TryLock while connected: %v", err)
			}
			mustUnlock(t, g)

			// A blackhole alone is noticed only when a read times out
			// (2/3 of the session timeout); reset too, and the client
			// notices at once and redials into the blackhole.
			proxy.Blackhole()
			proxy.DropConnections()
			o.await(session.StateSuspended, lockTTL)
			t0 := time.Now()
			g, err = l.tryLock(context.Background())
			took := time.Since(t0)
			if g != nil {
				g.Unlock(context.Background())
			}
			if !errors.Is(err, backend.ErrConnectionLoss) {
				t.Fatalf("TryLock on a cut-off session after %v: %v, want ErrConnectionLoss", took.Round(time.Millisecond), err)
			}
			if took >= o.s.Timeout() {
				t.Fatalf("TryLock on a cut-off session took %v, not before the session timeout %v", took.Round(time.Millisecond), o.s.Timeout())
			}
			t.Logf("TryLock on a cut-off session: %v after %v", err, took.Round(time.Millisecond))

			proxy.Unblackhole()
			o.await(session.StateReconnected, lockBound)
			g, err = l.tryLock(context.Background())
			if err != nil {
				t.Fatalf("TryLock after the reconnect: %v", err)
			}
			mustUnlock(t, g)
			ctx, cancel := context.WithTimeout(context.Background(), lockBound)
			defer cancel()
			if left, err := r.residue(ctx, obs, path); err != nil || len(left) > 0 {
				t.Fatalf("left after Unlock: %v (%v)", left, err)
			}
		})
	}
}
