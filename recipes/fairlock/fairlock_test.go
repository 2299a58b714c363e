package fairlock_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/fairlock"
	"github.com/coordkit/coordkit/recipes/fence"
	"github.com/coordkit/coordkit/recipes/internal/locktest"
	"github.com/coordkit/coordkit/session"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// bound is how long something that must happen promptly may take. Tests
// never sleep to order events; they wait on channels or conditions with
// this bound.
const bound = 5 * time.Second

const dir = "/locks/fair"

type env struct{ *locktest.World }

func newEnv(t *testing.T) *env { return &env{locktest.NewWorld(t)} }

func (e *env) lock(s *session.Session) *fairlock.Lock {
	e.T.Helper()
	l, err := fairlock.New(s, dir)
	if err != nil {
		e.T.Fatal(err)
	}
	return l
}

// acquire locks dir from a session of its own.
func (e *env) acquire() *fairlock.Guard {
	e.T.Helper()
	return locktest.MustLock(e.T, bound, e.lock(e.Session()))
}

// contest is a holder and a waiter queued behind it, each on a session of
// its own.
type contest struct {
	hs, ws *session.Session // the holder's and the waiter's
	holder *fairlock.Guard
	waiter <-chan result // the waiter's Lock
}

// contest locks dir and queues a second Lock behind the holder, each on a
// session of its own (the waiter's opened with waiterOpts).
func (e *env) contest(waiterOpts ...session.Option) contest {
	e.T.Helper()
	c := contest{hs: e.Session()}
	c.holder = locktest.MustLock(e.T, bound, e.lock(c.hs))
	c.ws = e.Session(waiterOpts...)
	c.waiter = lockAsync(context.Background(), e.lock(c.ws))
	e.awaitChildren(2)
	return c
}

// awaitChildren waits, with a children watch, until dir has n children.
func (e *env) awaitChildren(n int) []backend.Node {
	e.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	for {
		kids, w, err := e.Obs.WatchChildren(ctx, dir)
		if err != nil {
			e.T.Fatalf("waiting for %d children of %s: %v", n, dir, err)
		}
		if len(kids) == n {
			w.Stop()
			return kids
		}
		select {
		case <-w.C():
		case <-ctx.Done():
			w.Stop()
			e.T.Fatalf("%s has %d children, want %d: %v", dir, len(kids), n, locktest.Names(kids))
		}
	}
}

// suspend disconnects s and waits until s says it is suspended.
func (e *env) suspend(s *session.Session) {
	e.T.Helper()
	e.Disconnect(s)
	locktest.Eventually(e.T, bound, "session suspended", func() bool { return s.State() == session.StateSuspended })
}

type result struct {
	g   *fairlock.Guard
	err error
}

// lockAsync runs Lock on a goroutine that ends when Lock returns; the
// channel has room for its result.
func lockAsync(ctx context.Context, l *fairlock.Lock) <-chan result {
	ch := make(chan result, 1)
	go func() {
		g, err := l.Lock(ctx)
		ch <- result{g, err}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan result, what string) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(bound):
		t.Fatalf("%s: Lock did not return within %v", what, bound)
	}
	return result{}
}

// ended waits for g to end and checks that its Context ended with it.
func ended(t *testing.T, g *fairlock.Guard, what string) error {
	t.Helper()
	err := locktest.Ended(t, bound, g, what)
	if g.Context().Err() == nil || !errors.Is(context.Cause(g.Context()), err) {
		t.Fatalf("%s: Done closed but Context %v (cause %v), Err %v", what, g.Context().Err(), context.Cause(g.Context()), err)
	}
	return err
}

func live(t *testing.T, g *fairlock.Guard, what string) {
	t.Helper()
	select {
	case <-g.Done():
		t.Fatalf("%s: guard ended: %v", what, g.Err())
	default:
	}
}

// waiting fails the test if the Lock on one of chans has returned: they
// must all still wait.
func waiting(t *testing.T, when string, chans ...<-chan result) {
	t.Helper()
	for _, ch := range chans {
		select {
		case r := <-ch:
			t.Fatalf("a waiter returned %s (err %v)", when, r.err)
		default:
		}
	}
}

// locks returns n Locks, each on a session of its own.
func (e *env) locks(n int) []*fairlock.Lock {
	e.T.Helper()
	ls := make([]*fairlock.Lock, n)
	for i := range ls {
		ls[i] = e.lock(e.Session())
	}
	return ls
}

// enqueue starts a Lock on each of locks in turn behind a holder, each
// queued before the next one starts.
func (e *env) enqueue(locks ...*fairlock.Lock) []<-chan result {
	e.T.Helper()
	chans := make([]<-chan result, len(locks))
	for i, l := range locks {
		chans[i] = lockAsync(context.Background(), l)
		e.awaitChildren(i + 2)
	}
	return chans
}

// grantsInOrder releases holder and checks that the waiters on chans are
// granted one at a time, in order, with growing tokens.
func grantsInOrder(t *testing.T, holder *fairlock.Guard, chans []<-chan result) {
	t.Helper()
	prev := holder.Token()
	locktest.MustUnlock(t, holder)
	for i, ch := range chans {
		r := recv(t, ch, fmt.Sprintf("waiter %d", i))
		if r.err != nil {
			t.Fatalf("waiter %d: %v", i, r.err)
		}
		waiting(t, fmt.Sprintf("while waiter %d holds", i), chans[i+1:]...)
		if r.g.Token() <= prev {
			t.Fatalf("waiter %d token %d, previous %d", i, r.g.Token(), prev)
		}
		prev = r.g.Token()
		locktest.MustUnlock(t, r.g)
	}
}

// contend runs perLock goroutines on each of locks, each locking and
// unlocking rounds times and calling inside while it holds, and returns
// when all are done. It fails the test if a call fails or two goroutines
// hold at once.
func contend(t *testing.T, locks []*fairlock.Lock, perLock, rounds int, inside func(*fairlock.Guard)) {
	t.Helper()
	var (
		holders atomic.Int32
		wg      sync.WaitGroup
		errs    = make(chan error, len(locks)*perLock)
	)
	for _, l := range locks {
		for range perLock {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					g, err := l.Lock(context.Background())
					if err != nil {
						errs <- err
						return
					}
					if h := holders.Add(1); h != 1 {
						errs <- fmt.Errorf("%d holders at once", h)
					}
					inside(g)
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
}

// TestFIFOAcrossSessions: waiters queued one after another, each on its own
// session (and two on one session), are granted exactly in queue order, one
// at a time.
func TestFIFOAcrossSessions(t *testing.T) {
	e := newEnv(t)
	holder := e.acquire()
	shared := e.Session()
	locks := make([]*fairlock.Lock, 8)
	for i := range locks {
		s := shared
		if i%3 != 0 {
			s = e.Session()
		}
		locks[i] = e.lock(s)
	}
	grantsInOrder(t, holder, e.enqueue(locks...))
	e.awaitChildren(0)
}

// TestExclusionAndTokenOrder: many goroutines on many sessions (several per
// session, several per Lock) lock and unlock at once. At most one holds at a
// time, and tokens grow strictly in grant order, so grants follow creation
// order: nobody jumped the queue.
func TestExclusionAndTokenOrder(t *testing.T) {
	e := newEnv(t)
	const sessions, perSession, rounds = 6, 5, 20
	var (
		mu     sync.Mutex
		tokens []int64
	)
	// One Lock per session, shared by perSession goroutines.
	contend(t, e.locks(sessions), perSession, rounds, func(g *fairlock.Guard) {
		mu.Lock()
		tokens = append(tokens, g.Token())
		mu.Unlock()
		runtime.Gosched()
	})
	if len(tokens) != sessions*perSession*rounds {
		t.Fatalf("%d grants, want %d", len(tokens), sessions*perSession*rounds)
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("grant %d has token %d after %d: not in creation order", i, tokens[i], tokens[i-1])
		}
	}
	e.awaitChildren(0)
}

func TestTryLock(t *testing.T) {
	e := newEnv(t)
	a, b := e.lock(e.Session()), e.lock(e.Session())
	ctx := context.Background()
	g, err := a.TryLock(ctx)
	if err != nil {
		t.Fatalf("uncontended TryLock: %v", err)
	}
	if _, err := b.TryLock(ctx); !errors.Is(err, recipes.ErrLocked) {
		t.Fatalf("contended TryLock: %v, want ErrLocked", err)
	}
	if _, err := a.TryLock(ctx); !errors.Is(err, recipes.ErrLocked) {
		t.Fatalf("TryLock from the holder's own Lock: %v, want ErrLocked (not reentrant)", err)
	}
	if kids := e.Children(dir); len(kids) != 1 || kids[0].Path != g.Fence().Path {
		t.Fatalf("children after refused TryLocks: %v, want only the holder's", locktest.Names(kids))
	}
	// A waiter in the queue also makes TryLock fail.
	w := lockAsync(ctx, b)
	e.awaitChildren(2)
	locktest.MustUnlock(t, g)
	r := recv(t, w, "waiter")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if _, err := a.TryLock(ctx); !errors.Is(err, recipes.ErrLocked) {
		t.Fatalf("TryLock while the waiter holds: %v", err)
	}
	locktest.MustUnlock(t, r.g)
	g, err = a.TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock after release: %v", err)
	}
	locktest.MustUnlock(t, g)
	e.awaitChildren(0)
}

func TestDoubleUnlock(t *testing.T) {
	e := newEnv(t)
	g := e.acquire()
	live(t, g, "fresh guard")
	if g.Err() != nil || g.Token() == 0 || g.Fence().Token != g.Token() {
		t.Fatalf("fresh guard: err %v token %d fence %+v", g.Err(), g.Token(), g.Fence())
	}
	locktest.MustUnlock(t, g)
	if err := ended(t, g, "after Unlock"); !errors.Is(err, recipes.ErrReleased) {
		t.Fatalf("Err after Unlock: %v", err)
	}
	if err := g.Unlock(context.Background()); !errors.Is(err, recipes.ErrReleased) {
		t.Fatalf("second Unlock: %v, want ErrReleased", err)
	}
	if len(e.Children(dir)) != 0 {
		t.Fatal("node left after Unlock")
	}
}

// TestUnlockWithDoneContext: the guard's own Context is cancelled by Unlock
// itself; Unlock must still delete the node with a fresh context.
func TestUnlockWithDoneContext(t *testing.T) {
	e := newEnv(t)
	g := e.acquire()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Unlock(ctx); err != nil {
		t.Fatalf("Unlock with a done ctx: %v", err)
	}
	if len(e.Children(dir)) != 0 {
		t.Fatal("node left after Unlock with a done ctx")
	}
}

// TestCancelAtRandomPoints: 1,000 Locks cancelled at random points (before
// the call, during the join, while waiting, around the grant). Each either
// returns a guard or an error wrapping ctx's; never a nil error without a
// guard. Afterwards nothing is left and another client acquires at once.
func TestCancelAtRandomPoints(t *testing.T) {
	e := newEnv(t)
	holderLock := e.lock(e.Session())
	l := e.lock(e.Session())
	rng := rand.New(rand.NewPCG(1, 2))
	var granted, cancelled int
	for i := range 1000 {
		var holder *fairlock.Guard
		if rng.IntN(2) == 0 {
			holder = locktest.MustLock(t, bound, holderLock)
		}
		ctx, cancel := context.WithCancel(context.Background())
		spins := rng.IntN(200)
		if spins == 0 {
			cancel()
		}
		ch := lockAsync(ctx, l)
		for range spins {
			runtime.Gosched()
		}
		cancel()
		r := recv(t, ch, fmt.Sprintf("iteration %d", i))
		switch {
		case r.err == nil && r.g != nil:
			granted++
			if holder != nil {
				t.Fatalf("iteration %d: granted while the holder holds", i)
			}
			locktest.MustUnlock(t, r.g)
		case r.err != nil && r.g == nil:
			if !errors.Is(r.err, context.Canceled) {
				t.Fatalf("iteration %d: %v, want context.Canceled", i, r.err)
			}
			cancelled++
		default:
			t.Fatalf("iteration %d: guard %v with error %v", i, r.g, r.err)
		}
		if holder != nil {
			locktest.MustUnlock(t, holder)
		}
	}
	t.Logf("granted %d, cancelled %d", granted, cancelled)
	// Both outcomes occur by the hundreds (in 1000 iterations, with and
	// without -race, on 1 to many CPUs): a run without one means the
	// cancel points no longer reach both, or a Lock no longer wins
	// under a ctx that ends later.
	if granted == 0 || cancelled == 0 {
		t.Errorf("the random cancel points never granted or never cancelled: %d granted, %d cancelled", granted, cancelled)
	}
	e.awaitChildren(0)
	other := e.lock(e.Session())
	g, err := other.TryLock(context.Background())
	if err != nil {
		t.Fatalf("another client after the cancel loop: %v", err)
	}
	locktest.MustUnlock(t, g)
}

// TestCloseSessionDuringWait: closing the waiter's session ends its Lock
// with ErrClosed and leaves only the holder's node.
func TestCloseSessionDuringWait(t *testing.T) {
	e := newEnv(t)
	c := e.contest()
	if err := c.ws.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := recv(t, c.waiter, "waiter on a closed session")
	if r.err == nil || !errors.Is(r.err, coordkit.ErrClosed) {
		t.Fatalf("waiter: %v, want ErrClosed", r.err)
	}
	if kids := e.awaitChildren(1); kids[0].Path != c.holder.Fence().Path {
		t.Fatalf("left: %v", locktest.Names(kids))
	}
	// A Lock on the closed session fails at once, creating nothing.
	if _, err := e.lock(c.ws).Lock(context.Background()); !errors.Is(err, coordkit.ErrClosed) {
		t.Fatalf("Lock on a closed session: %v", err)
	}
	locktest.MustUnlock(t, c.holder)
	e.awaitChildren(0)
}

// TestHolderSessionClosed: the holder's guard ends with ErrClosed and the
// next waiter acquires with a larger token.
func TestHolderSessionClosed(t *testing.T) {
	e := newEnv(t)
	c := e.contest()
	c.hs.Close(context.Background())
	if err := ended(t, c.holder, "holder"); !errors.Is(err, recipes.ErrLost) || !errors.Is(err, coordkit.ErrClosed) {
		t.Fatalf("holder: %v, want ErrLost + ErrClosed", err)
	}
	r := recv(t, c.waiter, "waiter")
	if r.err != nil || r.g.Token() <= c.holder.Token() {
		t.Fatalf("waiter: %v (token %d, holder %d)", r.err, r.g.Token(), c.holder.Token())
	}
	if err := c.holder.Unlock(context.Background()); err != nil {
		t.Fatalf("Unlock of a lost guard: %v, want nil", err)
	}
	locktest.MustUnlock(t, r.g)
}

// TestWaiterSessionExpires: a waiter whose session the server expires gets
// an error matching ErrSessionLost, never the lock.
func TestWaiterSessionExpires(t *testing.T) {
	e := newEnv(t)
	c := e.contest()
	e.Expire(c.ws)
	r := recv(t, c.waiter, "expired waiter")
	if r.err == nil || !errors.Is(r.err, coordkit.ErrSessionLost) {
		t.Fatalf("expired waiter: guard %v err %v, want ErrSessionLost", r.g, r.err)
	}
	e.awaitChildren(1)
	locktest.MustUnlock(t, c.holder)
	e.awaitChildren(0)
}

// TestWaiterSuspended: under the standard policy a waiter whose connection
// is suspended fails with ErrSuspended; its node, which it cannot delete
// while disconnected, is deleted once the session reconnects.
func TestWaiterSuspended(t *testing.T) {
	e := newEnv(t)
	c := e.contest()
	e.Disconnect(c.ws)
	r := recv(t, c.waiter, "suspended waiter")
	if !errors.Is(r.err, session.ErrSuspended) || !errors.Is(r.err, coordkit.ErrSessionLost) || errors.Is(r.err, recipes.ErrLost) {
		t.Fatalf("suspended waiter: %v, want ErrSuspended, not ErrLost (it held nothing)", r.err)
	}
	if len(e.Children(dir)) != 2 {
		t.Fatalf("children while the waiter is disconnected: %v", locktest.Names(e.Children(dir)))
	}
	// Lock while suspended fails at once.
	if _, err := e.lock(c.ws).Lock(context.Background()); !errors.Is(err, session.ErrSuspended) || errors.Is(err, recipes.ErrLost) {
		t.Fatalf("Lock while suspended: %v, want ErrSuspended, not ErrLost", err)
	}
	e.Reconnect(c.ws)
	if kids := e.awaitChildren(1); kids[0].Path != c.holder.Fence().Path {
		t.Fatalf("left: %v", locktest.Names(kids))
	}
	locktest.MustUnlock(t, c.holder)
	// The reconnected session can lock again, once it has processed the
	// reconnect (under the standard policy a Lock fails at once while the
	// session still says Suspended).
	awaitNotSuspended(t, c.ws)
	g := locktest.MustLock(t, bound, e.lock(c.ws))
	locktest.MustUnlock(t, g)
}

// TestWaiterSurvivesDisconnectUnderSessionPolicy: with the session policy a
// short disconnect does not end the wait; a release that happened meanwhile
// is seen after the reconnect.
func TestWaiterSurvivesDisconnectUnderSessionPolicy(t *testing.T) {
	e := newEnv(t)
	c := e.contest(session.WithErrorPolicy(session.SessionPolicy))
	// The waiter watches its own node and the holder's.
	locktest.Eventually(t, bound, "the waiter's watches armed", func() bool { return e.Drv.SessionStats(c.ws.ID()).Watches == 2 })
	e.suspend(c.ws)
	fired := e.Drv.SessionStats(c.ws.ID()).WatchEvents
	locktest.MustUnlock(t, c.holder)
	// The server has notified the release (held back until the reconnect)
	// and the waiter still waits: its node is queued, and it has stopped
	// neither watch (a wait that ends stops both).
	locktest.Eventually(t, bound, "the release notified to the waiter", func() bool {
		st := e.Drv.SessionStats(c.ws.ID())
		if st.Watches != 2 {
			t.Fatalf("the waiter holds %d watches while disconnected, want 2: it stopped waiting", st.Watches)
		}
		return st.WatchEvents > fired
	})
	if kids := e.Children(dir); len(kids) != 1 {
		t.Fatalf("children after the release: %v, want the waiter's node", locktest.Names(kids))
	}
	waiting(t, "while disconnected", c.waiter)
	e.Reconnect(c.ws)
	r := recv(t, c.waiter, "reconnected waiter")
	if r.err != nil || r.g.Token() <= c.holder.Token() {
		t.Fatalf("reconnected waiter: %v", r.err)
	}
	awaitNotSuspended(t, c.ws)
	locktest.MustUnlock(t, r.g)
	e.awaitChildren(0)
}

// TestHolderSuspended: the holder's guard ends on suspension (standard
// policy); Unlock then returns nil at once and the node is deleted once the
// session reconnects, which lets the waiter in.
func TestHolderSuspended(t *testing.T) {
	e := newEnv(t)
	c := e.contest()
	e.Disconnect(c.hs)
	if err := ended(t, c.holder, "suspended holder"); !errors.Is(err, session.ErrSuspended) || !errors.Is(err, recipes.ErrLost) {
		t.Fatalf("suspended holder: %v", err)
	}
	if err := c.holder.Unlock(context.Background()); err != nil {
		t.Fatalf("Unlock of a lost guard while disconnected: %v", err)
	}
	e.Reconnect(c.hs)
	r := recv(t, c.waiter, "waiter")
	if r.err != nil {
		t.Fatal(r.err)
	}
	locktest.MustUnlock(t, r.g)
	e.awaitChildren(0)
}

// TestHolderNodeDeleted: an operator deletes the holder's node. The
// holder's guard ends with ErrNodeDeleted and the waiter, after listing the
// queue again, acquires with a larger token.
func TestHolderNodeDeleted(t *testing.T) {
	e := newEnv(t)
	c := e.contest()
	if err := e.Obs.Delete(context.Background(), c.holder.Fence().Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	if err := ended(t, c.holder, "holder"); !errors.Is(err, recipes.ErrNodeDeleted) || !errors.Is(err, recipes.ErrLost) {
		t.Fatalf("holder: %v, want ErrNodeDeleted", err)
	}
	r := recv(t, c.waiter, "waiter")
	if r.err != nil || r.g.Token() <= c.holder.Token() {
		t.Fatalf("waiter: %v", r.err)
	}
	if err := c.holder.Unlock(context.Background()); err != nil {
		t.Fatalf("Unlock of a guard whose node was deleted: %v", err)
	}
	locktest.MustUnlock(t, r.g)
	e.awaitChildren(0)
}

// TestWaiterNodeDeleted: an operator deletes the node of a waiter in the
// middle of the queue. That waiter fails at once with ErrWaiterDeleted (it
// does not wait for the queue to move), and the others keep their order.
func TestWaiterNodeDeleted(t *testing.T) {
	e := newEnv(t)
	holder := e.acquire()
	chans := e.enqueue(e.locks(3)...)
	kids := e.Children(dir)
	if err := e.Obs.Delete(context.Background(), kids[2].Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	r := recv(t, chans[1], "deleted waiter")
	if !errors.Is(r.err, recipes.ErrWaiterDeleted) || errors.Is(r.err, recipes.ErrLost) {
		t.Fatalf("deleted waiter: %v, want ErrWaiterDeleted, not matching ErrLost (it held nothing)", r.err)
	}
	live(t, holder, "holder")
	waiting(t, "while the holder holds", chans[0], chans[2])
	locktest.MustUnlock(t, holder)
	first := recv(t, chans[0], "waiter 0")
	if first.err != nil {
		t.Fatal(first.err)
	}
	waiting(t, "while waiter 0 holds", chans[2])
	locktest.MustUnlock(t, first.g)
	last := recv(t, chans[2], "waiter 2")
	if last.err != nil || last.g.Token() <= first.g.Token() {
		t.Fatalf("waiter 2: %v", last.err)
	}
	locktest.MustUnlock(t, last.g)
	e.awaitChildren(0)
}

// TestForeignChildren: children that are not lock nodes are ignored, not
// fatal: a persistent node, a sequential node of another recipe, a name
// with "lock-" but no sequence.
func TestForeignChildren(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var foreign []backend.Node
	for _, c := range []struct {
		name string
		opts backend.CreateOptions
	}{
		{"config", backend.CreateOptions{}},
		{"lock-config", backend.CreateOptions{}},
		{"job-", backend.CreateOptions{Sequential: true}},
		{"latch-", backend.CreateOptions{Sequential: true, Protected: true}},
		{"lock-x-", backend.CreateOptions{Sequential: true}}, // "lock-" not followed by the sequence
	} {
		n, err := e.Obs.Create(ctx, dir+"/"+c.name, []byte("foreign"), c.opts)
		if err != nil {
			t.Fatal(err)
		}
		foreign = append(foreign, n)
	}
	a := e.lock(e.Session())
	g, err := a.TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock with foreign children: %v", err)
	}
	ch := lockAsync(ctx, e.lock(e.Session()))
	e.awaitChildren(len(foreign) + 2)
	// A foreign sequential child created after the waiter is ignored too.
	late, err := e.Obs.Create(ctx, dir+"/job-", []byte("foreign"), backend.CreateOptions{Sequential: true})
	if err != nil {
		t.Fatal(err)
	}
	foreign = append(foreign, late)
	locktest.MustUnlock(t, g)
	r := recv(t, ch, "waiter")
	if r.err != nil {
		t.Fatal(r.err)
	}
	locktest.MustUnlock(t, r.g)
	for _, n := range foreign {
		if err := e.Obs.Delete(ctx, n.Path, backend.AnyVersion); err != nil {
			t.Fatal(err)
		}
	}
	e.awaitChildren(0)
}

// TestSequenceWrap: the directory's sequence counter crosses 2^31-1 while
// the queue is non-empty; grants still follow creation order.
func TestSequenceWrap(t *testing.T) {
	e := newEnv(t)
	if err := e.Drv.SetNextSequence(dir, math.MaxInt32-2); err != nil {
		t.Fatal(err)
	}
	holder := e.acquire()
	chans := e.enqueue(e.locks(5)...)
	kids := e.Children(dir)
	var suffixes []string
	for _, k := range kids {
		suffixes = append(suffixes, k.Name[strings.LastIndex(k.Name, "lock-")+len("lock-"):])
	}
	if !slices.Contains(suffixes, "2147483647") || !slices.Contains(suffixes, "-2147483648") {
		t.Fatalf("the queue does not cross the wrap: %v", suffixes)
	}
	grantsInOrder(t, holder, chans)
	e.awaitChildren(0)
}

// TestSequenceWrapForeignChild: as TestSequenceWrap, with a foreign
// persistent sequential child made while the directory was new
// (job-0000000000), before the counter is moved near 2^31-1: the lock nodes
// then cross the wrap antipodal to it, where serial-number comparison is not
// transitive (job < holder, the wrapped nodes < job, holder < the wrapped
// nodes). The foreign child must not change the queue's order: nobody is
// granted while the holder holds, and grants follow creation order, one at
// a time.
func TestSequenceWrapForeignChild(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	job, err := e.Obs.Create(ctx, dir+"/job-", []byte("foreign"), backend.CreateOptions{Sequential: true})
	if err != nil {
		t.Fatal(err)
	}
	if job.Seq != 0 {
		t.Fatalf("foreign child %s has seq %d, want 0", job.Name, job.Seq)
	}
	if err := e.Drv.SetNextSequence(dir, math.MaxInt32-2); err != nil {
		t.Fatal(err)
	}
	holder := e.acquire()
	sessions := make([]*session.Session, 5)
	chans := make([]<-chan result, len(sessions))
	for i := range sessions {
		sessions[i] = e.Session()
		chans[i] = lockAsync(ctx, e.lock(sessions[i]))
		e.awaitChildren(i + 3) // job, the holder, i+1 waiters
		// The waiter has decided on its listing: it watches its
		// predecessor and its own node, or it has (wrongly) returned.
		id, ch := sessions[i].ID(), chans[i]
		locktest.Eventually(t, bound, fmt.Sprintf("waiter %d waits", i), func() bool {
			return len(ch) > 0 || e.Drv.SessionStats(id).Watches == 2
		})
	}
	waiting(t, "while the holder holds", chans...)
	if g, err := e.lock(e.Session()).TryLock(ctx); !errors.Is(err, recipes.ErrLocked) {
		if g != nil {
			locktest.MustUnlock(t, g)
		}
		t.Fatalf("TryLock while the lock is held: %v", err)
	}
	var suffixes []string
	for _, k := range e.Children(dir) {
		if i := strings.LastIndex(k.Name, "lock-"); i >= 0 {
			suffixes = append(suffixes, k.Name[i+len("lock-"):])
		}
	}
	if !slices.Contains(suffixes, "2147483647") || !slices.Contains(suffixes, "-2147483648") {
		t.Fatalf("the queue does not cross the wrap: %v", suffixes)
	}
	grantsInOrder(t, holder, chans)
	if kids := e.awaitChildren(1); kids[0].Path != job.Path {
		t.Fatalf("left behind: %v", locktest.Names(kids))
	}
	if err := e.Obs.Delete(ctx, job.Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
}

// TestLostCreateReply: the create's reply is lost; the driver finds the
// node by its protected prefix and the lock works with exactly one node.
func TestLostCreateReply(t *testing.T) {
	e := newEnv(t)
	s := e.Session()
	if err := e.Drv.FailNextReply(s.ID()); err != nil {
		t.Fatal(err)
	}
	g := locktest.MustLock(t, bound, e.lock(s))
	kids := e.Children(dir)
	if len(kids) != 1 || kids[0].Path != g.Fence().Path {
		t.Fatalf("children after a lost create reply: %v", locktest.Names(kids))
	}
	n, err := e.Obs.Get(context.Background(), g.Fence().Path)
	if err != nil || n.Token != g.Token() {
		t.Fatalf("node %+v err %v, token %d", n, err, g.Token())
	}
	// The release's reply is lost too: the node is deleted anyway.
	if err := e.Drv.FailNextReply(s.ID()); err != nil {
		t.Fatal(err)
	}
	if err := g.Unlock(context.Background()); err != nil {
		// The delete was applied; the retry finds the node gone.
		t.Fatalf("Unlock with a lost reply: %v", err)
	}
	e.awaitChildren(0)
}

// TestNoHerd: per handoff, the server requests and watch notifications stay
// the same whether 10 or 1,000 waiters queue: a release wakes one waiter.
func TestNoHerd(t *testing.T) {
	small := handoffCosts(t, 10)
	large := handoffCosts(t, 1000)
	t.Logf("per handoff: %+v (10 waiters), %+v (1000 waiters)", small[0], large[0])
	want := small[0]
	if want.requests > 4 || want.events > 2 {
		t.Fatalf("a handoff costs %+v, want at most 4 requests and 2 watch events", want)
	}
	for i, c := range append(small, large...) {
		if c != want {
			t.Fatalf("handoff %d costs %+v, want %+v (constant)", i, c, want)
		}
	}
}

type cost struct{ requests, events int64 }

// handoffCosts queues n waiters (one session each) behind a holder and
// measures, on the memory server, what each handoff costs.
func handoffCosts(t *testing.T, n int) []cost {
	e := newEnv(t)
	holder := e.acquire()
	holder.Done() // holders that watch their hold: the costlier case
	granted := make(chan *fairlock.Guard, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		l := e.lock(e.Session())
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := l.Lock(context.Background())
			if err != nil {
				errs <- err
				return
			}
			g.Done()
			granted <- g
		}()
	}
	defer wg.Wait()
	// Every waiter watches its predecessor and its own node; the holder's
	// guard watches its node.
	locktest.Eventually(t, bound, fmt.Sprintf("%d waiters queued", n), func() bool { return e.Drv.Stats().Watches == 2*n+1 })
	var costs []cost
	g := holder
	for remaining := n - 1; remaining >= 0; remaining-- {
		before := e.Drv.Stats()
		locktest.MustUnlock(t, g)
		select {
		case g = <-granted:
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(bound):
			t.Fatalf("no grant within %v with %d waiters left", bound, remaining+1)
		}
		locktest.Eventually(t, bound, "handoff settled", func() bool { return e.Drv.Stats().Watches == 2*remaining+1 })
		after := e.Drv.Stats()
		costs = append(costs, cost{after.Requests - before.Requests, after.WatchEvents - before.WatchEvents})
	}
	locktest.MustUnlock(t, g)
	return costs
}

// TestConcurrentGoroutinesOneLock: goroutines of one session sharing one
// *Lock each queue their own node and exclude each other.
func TestConcurrentGoroutinesOneLock(t *testing.T) {
	e := newEnv(t)
	var grants atomic.Int32
	contend(t, e.locks(1), 32, 10, func(*fairlock.Guard) { grants.Add(1) })
	if grants.Load() != 320 {
		t.Fatalf("%d grants", grants.Load())
	}
	e.awaitChildren(0)
}

func TestInvalidInput(t *testing.T) {
	e := newEnv(t)
	s := e.Session()
	for _, p := range []string{"", "locks", "/", "/locks/", "/a//b", "/a/./b", "/a/../b", "/zookeeper", "/zookeeper/lock", "/a\x00b", "/a\nb", "/" + strings.Repeat("x", backend.MaxPathLength),
		// too long for the lock's nodes (1,000 bytes is a valid path)
		"/" + strings.Repeat("x", 999),
		// another lock's own nodes
		"/a/owner", "/a/queue", "/a/owner-pin-1-1", "/a/_c_0-lock-0000000001", "/a/owner/b", "/a/queue/b"} {
		if _, err := fairlock.New(s, p); !errors.Is(err, coordkit.ErrInvalidPath) {
			t.Errorf("New(%q): %v, want ErrInvalidPath", p, err)
		}
	}
	if _, err := fairlock.New(nil, dir); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("New(nil session): %v, want ErrInvalidArgument", err)
	}
	l := e.lock(s)
	//nolint:staticcheck // a nil ctx is the point
	if _, err := l.Lock(nil); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("Lock(nil): %v", err)
	}
	//nolint:staticcheck // a nil ctx is the point
	if _, err := l.TryLock(nil); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("TryLock(nil): %v", err)
	}
	if st := e.Drv.SessionStats(s.ID()); st.Requests != 0 {
		t.Fatalf("bad input reached the server: %d requests", st.Requests)
	}
	g := locktest.MustLock(t, bound, l)
	//nolint:staticcheck // a nil ctx is the point
	if err := g.Unlock(nil); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("Unlock(nil): %v", err)
	}
	locktest.MustUnlock(t, g) // the nil-ctx Unlock released nothing
	e.awaitChildren(0)
}

// TestCuratorLayout: the node is named as Curator's InterProcessMutex names
// its nodes, and carries no data.
func TestCuratorLayout(t *testing.T) {
	e := newEnv(t)
	g := e.acquire()
	kids := e.Children(dir)
	if len(kids) != 1 || !curatorName(kids[0].Name) {
		t.Fatalf("children %v, want one _c_<uuid36>-lock-<10 digits>", locktest.Names(kids))
	}
	n, err := e.Obs.Get(context.Background(), kids[0].Path)
	if err != nil || len(n.Data) != 0 || n.Owner == "" {
		t.Fatalf("lock node %+v (err %v): want empty and ephemeral", n, err)
	}
	locktest.MustUnlock(t, g)
}

func curatorName(name string) bool {
	const uuidLen = 36
	if !strings.HasPrefix(name, "_c_") || len(name) != 3+uuidLen+len("-lock-")+10 {
		return false
	}
	rest := name[3+uuidLen:]
	if !strings.HasPrefix(rest, "-lock-") {
		return false
	}
	for _, c := range rest[len("-lock-"):] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func TestLocker(t *testing.T) {
	e := newEnv(t)
	lk := e.lock(e.Session()).Locker()
	var n, holders int32
	locktest.Concurrently(8, 10, func() {
		lk.Lock()
		if h := atomic.AddInt32(&holders, 1); h != 1 {
			t.Errorf("%d holders", h)
		}
		n++ // guarded by the lock alone: -race checks it
		atomic.AddInt32(&holders, -1)
		lk.Unlock()
	})
	if n != 80 {
		t.Fatalf("n = %d", n)
	}
	locktest.UnlockPanics(t, lk)
	e.awaitChildren(0)
}

// TestLockerIsOne: every call of Locker returns the same Locker, so code
// that calls it at each use locks and unlocks one thing (with a new Locker
// per call, the Unlock panicked: it held nothing).
func TestLockerIsOne(t *testing.T) {
	e := newEnv(t)
	l := e.lock(e.Session())
	if l.Locker() != l.Locker() {
		t.Fatal("two calls of Locker returned two Lockers")
	}
	l.Locker().Lock()
	l.Locker().Unlock()
	e.awaitChildren(0)
}

// TestLockerThroughSuspension: a sync.Locker cannot return an error, so on
// a brief disconnect its Lock waits for the reconnect instead of panicking
// (under session.StandardPolicy a Lock fails while suspended) and then
// queues again, and its Unlock does not panic on a release the disconnect
// leaves unconfirmed (under session.SessionPolicy the Guard still holds
// then).
func TestLockerThroughSuspension(t *testing.T) {
	e := newEnv(t)
	holder := e.acquire()
	s := e.Session()
	lk := e.lock(s).Locker()
	locked := make(chan any, 1)
	go func() {
		defer func() { locked <- recover() }()
		lk.Lock()
	}()
	first := e.awaitChildren(2)[1] // the Locker's node, behind the holder
	locktest.Eventually(t, bound, "the Locker's watches armed", func() bool { return e.Drv.SessionStats(s.ID()).Watches == 2 })
	e.suspend(s)
	// The suspension ends the Lock's wait (it stops both watches) ...
	locktest.Eventually(t, bound, "the Locker's wait ended", func() bool { return e.Drv.SessionStats(s.ID()).Watches == 0 })
	e.Reconnect(s)
	// ... and the Locker queues again once the session is back, behind the
	// holder, where it must still wait.
	locktest.Eventually(t, bound, "the Locker queued again after the reconnect", func() bool {
		select {
		case p := <-locked:
			t.Fatalf("Locker.Lock returned before the holder released (panic %v)", p)
		default:
		}
		kids := e.Children(dir)
		return len(kids) == 2 && kids[1].Path != first.Path
	})
	select {
	case p := <-locked:
		t.Fatalf("Locker.Lock returned while queued behind the holder (panic %v)", p)
	default:
	}
	locktest.MustUnlock(t, holder)
	select {
	case p := <-locked:
		if p != nil {
			t.Fatalf("Locker.Lock panicked: %v", p)
		}
	case <-time.After(bound):
		t.Fatal("Locker.Lock did not return after the release")
	}
	awaitNotSuspended(t, s)
	lk.Unlock()
	e.awaitChildren(0)

	sp := e.Session(session.WithErrorPolicy(session.SessionPolicy))
	lk = e.lock(sp).Locker()
	lk.Lock()
	e.suspend(sp)
	lk.Unlock() // not confirmed: the node goes once the session is back
	e.Reconnect(sp)
	e.awaitChildren(0)
}

// TestLockDuringDisconnectUnderSessionPolicy: with the session policy a Lock
// started while the connection is down waits for the reconnect, then
// queues.
func TestLockDuringDisconnectUnderSessionPolicy(t *testing.T) {
	e := newEnv(t)
	s := e.Session(session.WithErrorPolicy(session.SessionPolicy))
	// A client that queues its requests while disconnected (go-zookeeper
	// does; here the stalled server holds them): the Lock sends its create,
	// which reaches the server only after the reconnect, and waits for it.
	if err := e.Drv.Stall(s.ID()); err != nil {
		t.Fatal(err)
	}
	e.suspend(s)
	ch := lockAsync(context.Background(), e.lock(s))
	locktest.Eventually(t, bound, "the create sent", func() bool { return e.Drv.Stalled(s.ID()) == 1 })
	waiting(t, "while its create waits for the reconnect", ch)
	e.Reconnect(s)
	if err := e.Drv.Unstall(s.ID()); err != nil {
		t.Fatal(err)
	}
	r := recv(t, ch, "Lock after the reconnect")
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The grant can come before the session has processed the reconnect;
	// Unlock while it still says Suspended defers the delete (documented).
	awaitNotSuspended(t, s)
	locktest.MustUnlock(t, r.g)
	// The same, cancelled while it waits for the reconnect.
	e.suspend(s)
	ctx, cancel := context.WithCancel(context.Background())
	ch = lockAsync(ctx, e.lock(s))
	cancel()
	if r := recv(t, ch, "cancelled Lock"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled Lock while disconnected: %v", r.err)
	}
	// A TryLock meanwhile does not wait for the reconnect (it would end
	// only when the local timer declares the session lost).
	if _, err := e.lock(s).TryLock(context.Background()); !errors.Is(err, backend.ErrConnectionLoss) {
		t.Fatalf("TryLock while disconnected: %v, want ErrConnectionLoss", err)
	}
	e.Reconnect(s)
	e.awaitChildren(0)
}

// TestNodeDataChanged: someone writes to the holder's and a waiter's node.
// Neither hold nor wait ends (the node is the same incarnation), and
// Unlock still deletes the holder's node although its version changed.
func TestNodeDataChanged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	holder := e.acquire()
	holder.Done() // arm the guard's watch of its node
	ch := lockAsync(ctx, e.lock(e.Session()))
	kids := e.awaitChildren(2)
	locktest.Eventually(t, bound, "watches armed", func() bool { return e.Drv.Stats().Watches == 3 })
	for _, k := range kids {
		if _, err := e.Obs.Set(ctx, k.Path, []byte("touched"), backend.AnyVersion); err != nil {
			t.Fatal(err)
		}
	}
	// The waiter re-arms its watches; wait until it has (two watches of
	// the waiter, one of the holder's guard, none of the operator).
	locktest.Eventually(t, bound, "watches re-armed", func() bool { return e.Drv.Stats().Watches == 3 })
	live(t, holder, "holder after a write to its node")
	waiting(t, "after a write to its node", ch)
	locktest.MustUnlock(t, holder)
	r := recv(t, ch, "waiter")
	if r.err != nil {
		t.Fatal(r.err)
	}
	locktest.MustUnlock(t, r.g)
	e.awaitChildren(0)
}

// awaitNotSuspended waits until s has processed its reconnect: a grant seen
// on the connection can come first, and Unlock on a session that still says
// Suspended defers its delete to the background and reports that.
func awaitNotSuspended(t *testing.T, s *session.Session) {
	t.Helper()
	locktest.Eventually(t, bound, "the session to process its reconnect", func() bool { return s.State() != session.StateSuspended })
}

// TestLockSuspendedWhileCreating: under the standard policy a Lock whose
// create is on its way when the session is suspended returns the
// suspension at once, without waiting for the server; the node the create
// makes once the server answers is deleted.
func TestLockSuspendedWhileCreating(t *testing.T) {
	e := newEnv(t)
	s := e.Session()
	if err := e.Drv.Stall(s.ID()); err != nil {
		t.Fatal(err)
	}
	ch := lockAsync(context.Background(), e.lock(s))
	locktest.Eventually(t, bound, "the create sent", func() bool { return e.Drv.Stalled(s.ID()) == 1 })
	e.suspend(s)
	select {
	case r := <-ch:
		if !errors.Is(r.err, session.ErrSuspended) || errors.Is(r.err, recipes.ErrLost) {
			t.Fatalf("Lock suspended while creating: %v, want ErrSuspended, not ErrLost", r.err)
		}
	case <-time.After(bound):
		e.Reconnect(s)
		e.Drv.Unstall(s.ID())
		if r := recv(t, ch, "Lock after the unstall"); r.g != nil {
			r.g.Unlock(context.Background())
		}
		t.Fatalf("Lock did not return within %v of the suspension", bound)
	}
	// The create reaches the server after the reconnect and makes a node,
	// which the goroutine that waited for it deletes.
	e.Reconnect(s)
	before := e.Drv.SessionStats(s.ID()).Requests
	if err := e.Drv.Unstall(s.ID()); err != nil {
		t.Fatal(err)
	}
	locktest.Eventually(t, bound, "the create and the delete of its node", func() bool {
		return e.Drv.SessionStats(s.ID()).Requests >= before+2
	})
	e.awaitChildren(0)
}

// TestTryLockSuspendedSendsNothing: under the session policy a TryLock on a
// suspended session returns ErrConnectionLoss at once, without sending its
// create, even to a client that would queue the request until the
// reconnect (go-zookeeper; here the stalled server).
func TestTryLockSuspendedSendsNothing(t *testing.T) {
	e := newEnv(t)
	s := e.Session(session.WithErrorPolicy(session.SessionPolicy))
	if err := e.Drv.Stall(s.ID()); err != nil {
		t.Fatal(err)
	}
	e.suspend(s)
	done := make(chan error, 1)
	go func() {
		g, err := e.lock(s).TryLock(context.Background())
		if g != nil {
			g.Unlock(context.Background())
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, backend.ErrConnectionLoss) {
			t.Fatalf("TryLock on a suspended session: %v, want ErrConnectionLoss", err)
		}
	case <-time.After(bound):
		e.Reconnect(s)
		e.Drv.Unstall(s.ID())
		<-done
		t.Fatalf("TryLock on a suspended session did not return within %v", bound)
	}
	if n := e.Drv.Stalled(s.ID()); n != 0 {
		t.Fatalf("TryLock on a suspended session sent %d calls", n)
	}
	e.Reconnect(s)
	if err := e.Drv.Unstall(s.ID()); err != nil {
		t.Fatal(err)
	}
	awaitNotSuspended(t, s)
	g, err := e.lock(s).TryLock(context.Background())
	if err != nil {
		t.Fatalf("TryLock after the reconnect: %v", err)
	}
	locktest.MustUnlock(t, g)
	e.awaitChildren(0)
}

// TestUnlockAfterServerExpiry: Unlock right after the server expired the
// session, typically before the session has processed the expiry (the
// driver already answers the delete with ErrSessionLost): the node went with
// the session, so Guard.Unlock returns nil, as for a lost hold, and the
// Locker's Unlock does not panic.
func TestUnlockAfterServerExpiry(t *testing.T) {
	e := newEnv(t)
	for i := range 20 {
		s := e.Session()
		g := locktest.MustLock(t, bound, e.lock(s))
		e.Expire(s)
		if err := g.Unlock(context.Background()); err != nil {
			t.Fatalf("round %d: Unlock after the server expired the session: %v", i, err)
		}
		if !errors.Is(g.Err(), recipes.ErrReleased) && !errors.Is(g.Err(), recipes.ErrLost) {
			t.Fatalf("round %d: guard after Unlock: %v", i, g.Err())
		}

		s2 := e.Session()
		lk := e.lock(s2).Locker()
		lk.Lock()
		e.Expire(s2)
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("round %d: Locker.Unlock after the server expired the session panicked: %v", i, p)
				}
			}()
			lk.Unlock()
		}()
	}
	e.awaitChildren(0)
}

// TestFenceIgnoresDataWrites: someone writes to the holder's lock node
// (Curator never does; an operator or a foreign client might). The hold is
// not lost (its monitor compares the token), so a fenced write still goes
// through; once the node is deleted, it is refused.
func TestFenceIgnoresDataWrites(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g := e.acquire()
	if _, err := e.Obs.Create(ctx, "/data/x", []byte("v0"), backend.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer e.Obs.Delete(ctx, "/data/x", backend.AnyVersion)
	if _, err := e.Obs.Set(ctx, g.Fence().Path, []byte("someone's"), backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	if _, err := fence.Set(ctx, e.Obs, g, "/data/x", []byte("v1"), backend.AnyVersion); err != nil || g.Err() != nil {
		t.Fatalf("fenced write after a write to the lock node: %v (hold %v), want it written", err, g.Err())
	}
	if err := e.Obs.Delete(ctx, g.Fence().Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	if _, err := fence.Set(ctx, e.Obs, g, "/data/x", []byte("v2"), backend.AnyVersion); !errors.Is(err, fence.ErrStale) {
		t.Fatalf("fenced write after the lock node was deleted: %v, want ErrStale", err)
	}
}
