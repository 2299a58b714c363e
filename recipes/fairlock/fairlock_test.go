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
	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/fairlock"
	"github.com/coordkit/coordkit/session"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// bound is how long something that must happen promptly may take. Tests
// never sleep to order events; they wait on channels or conditions with
// this bound.
const bound = 5 * time.Second

const dir = "/locks/fair"

type env struct {
	t   *testing.T
	drv *memory.Driver
	obs backend.Conn // an operator's connection, for listing and deleting
}

func newEnv(t *testing.T) *env {
	t.Helper()
	drv := memory.New()
	t.Cleanup(func() { drv.Close() })
	obs, err := drv.Open(context.Background(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, drv: drv, obs: obs}
}

func (e *env) session(opts ...session.Option) *session.Session {
	e.t.Helper()
	s, err := session.New(context.Background(), e.drv, append([]session.Option{session.WithTTL(10 * time.Second)}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func (e *env) lock(s *session.Session) *fairlock.Lock {
	e.t.Helper()
	l, err := fairlock.New(s, dir)
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// children lists dir as the operator sees it.
func (e *env) children() []backend.Node {
	e.t.Helper()
	kids, err := e.obs.Children(context.Background(), dir)
	if err != nil {
		e.t.Fatal(err)
	}
	return kids
}

// awaitChildren waits, with a children watch, until dir has n children.
func (e *env) awaitChildren(n int) []backend.Node {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	for {
		kids, w, err := e.obs.WatchChildren(ctx, dir)
		if err != nil {
			e.t.Fatalf("waiting for %d children of %s: %v", n, dir, err)
		}
		if len(kids) == n {
			w.Stop()
			return kids
		}
		select {
		case <-w.C():
		case <-ctx.Done():
			w.Stop()
			e.t.Fatalf("%s has %d children, want %d: %v", dir, len(kids), n, names(kids))
		}
	}
}

func names(kids []backend.Node) []string {
	out := make([]string, len(kids))
	for i, k := range kids {
		out[i] = k.Name
	}
	return out
}

// eventually waits for cond, checking it every millisecond, for at most
// bound. It is for conditions no channel announces (counters of the memory
// driver); it never orders events.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", bound, what)
		}
		<-tick.C
	}
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

func mustLock(t *testing.T, l *fairlock.Lock) *fairlock.Guard {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	g, err := l.Lock(ctx)
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	return g
}

func mustUnlock(t *testing.T, g *fairlock.Guard) {
	t.Helper()
	if err := g.Unlock(context.Background()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

func ended(t *testing.T, g *fairlock.Guard, what string) error {
	t.Helper()
	select {
	case <-g.Done():
		if g.Context().Err() == nil || !errors.Is(context.Cause(g.Context()), g.Err()) {
			t.Fatalf("%s: Done closed but Context %v (cause %v), Err %v", what, g.Context().Err(), context.Cause(g.Context()), g.Err())
		}
		return g.Err()
	case <-time.After(bound):
		t.Fatalf("%s: guard still live after %v", what, bound)
	}
	return nil
}

func live(t *testing.T, g *fairlock.Guard, what string) {
	t.Helper()
	select {
	case <-g.Done():
		t.Fatalf("%s: guard ended: %v", what, g.Err())
	default:
	}
}

// TestFIFOAcrossSessions: waiters queued one after another, each on its own
// session (and two on one session), are granted exactly in queue order, one
// at a time.
func TestFIFOAcrossSessions(t *testing.T) {
	e := newEnv(t)
	holder := mustLock(t, e.lock(e.session()))
	shared := e.session()
	const n = 8
	chans := make([]<-chan result, n)
	for i := range n {
		s := shared
		if i%3 != 0 {
			s = e.session()
		}
		chans[i] = lockAsync(context.Background(), e.lock(s))
		e.awaitChildren(i + 2) // queued before the next one starts
	}
	prev := holder.Token()
	mustUnlock(t, holder)
	for i := range n {
		r := recv(t, chans[i], fmt.Sprintf("waiter %d", i))
		if r.err != nil {
			t.Fatalf("waiter %d: %v", i, r.err)
		}
		for j := i + 1; j < n; j++ {
			select {
			case r := <-chans[j]:
				t.Fatalf("waiter %d granted while waiter %d holds (err %v)", j, i, r.err)
			default:
			}
		}
		if r.g.Token() <= prev {
			t.Fatalf("waiter %d token %d, previous %d", i, r.g.Token(), prev)
		}
		prev = r.g.Token()
		mustUnlock(t, r.g)
	}
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
		holders atomic.Int32
		mu      sync.Mutex
		tokens  []int64
		wg      sync.WaitGroup
		errs    = make(chan error, sessions*perSession)
	)
	for range sessions {
		l := e.lock(e.session()) // one Lock shared by perSession goroutines
		for range perSession {
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
					mu.Lock()
					tokens = append(tokens, g.Token())
					mu.Unlock()
					runtime.Gosched()
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
	a, b := e.lock(e.session()), e.lock(e.session())
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
	if kids := e.children(); len(kids) != 1 || kids[0].Path != g.Fence().Path {
		t.Fatalf("children after refused TryLocks: %v, want only the holder's", names(kids))
	}
	// A waiter in the queue also makes TryLock fail.
	w := lockAsync(ctx, b)
	e.awaitChildren(2)
	mustUnlock(t, g)
	r := recv(t, w, "waiter")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if _, err := a.TryLock(ctx); !errors.Is(err, recipes.ErrLocked) {
		t.Fatalf("TryLock while the waiter holds: %v", err)
	}
	mustUnlock(t, r.g)
	g, err = a.TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock after release: %v", err)
	}
	mustUnlock(t, g)
	e.awaitChildren(0)
}

func TestDoubleUnlock(t *testing.T) {
	e := newEnv(t)
	g := mustLock(t, e.lock(e.session()))
	live(t, g, "fresh guard")
	if g.Err() != nil || g.Token() == 0 || g.Fence().Token != g.Token() {
		t.Fatalf("fresh guard: err %v token %d fence %+v", g.Err(), g.Token(), g.Fence())
	}
	mustUnlock(t, g)
	if err := ended(t, g, "after Unlock"); !errors.Is(err, recipes.ErrReleased) {
		t.Fatalf("Err after Unlock: %v", err)
	}
	if err := g.Unlock(context.Background()); !errors.Is(err, recipes.ErrReleased) {
		t.Fatalf("second Unlock: %v, want ErrReleased", err)
	}
	if len(e.children()) != 0 {
		t.Fatal("node left after Unlock")
	}
}

// TestUnlockWithDoneContext: the guard's own Context is cancelled by Unlock
// itself; Unlock must still delete the node with a fresh context.
func TestUnlockWithDoneContext(t *testing.T) {
	e := newEnv(t)
	g := mustLock(t, e.lock(e.session()))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Unlock(ctx); err != nil {
		t.Fatalf("Unlock with a done ctx: %v", err)
	}
	if len(e.children()) != 0 {
		t.Fatal("node left after Unlock with a done ctx")
	}
}

// TestCancelAtRandomPoints: 1,000 Locks cancelled at random points (before
// the call, during the join, while waiting, around the grant). Each either
// returns a guard or an error wrapping ctx's; never a nil error without a
// guard. Afterwards nothing is left and another client acquires at once.
func TestCancelAtRandomPoints(t *testing.T) {
	e := newEnv(t)
	holderLock := e.lock(e.session())
	l := e.lock(e.session())
	rng := rand.New(rand.NewPCG(1, 2))
	var granted, cancelled int
	for i := range 1000 {
		var holder *fairlock.Guard
		if rng.IntN(2) == 0 {
			holder = mustLock(t, holderLock)
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
			mustUnlock(t, r.g)
		case r.err != nil && r.g == nil:
			if !errors.Is(r.err, context.Canceled) {
				t.Fatalf("iteration %d: %v, want context.Canceled", i, r.err)
			}
			cancelled++
		default:
			t.Fatalf("iteration %d: guard %v with error %v", i, r.g, r.err)
		}
		if holder != nil {
			mustUnlock(t, holder)
		}
	}
	t.Logf("granted %d, cancelled %d", granted, cancelled)
	e.awaitChildren(0)
	other := e.lock(e.session())
	g, err := other.TryLock(context.Background())
	if err != nil {
		t.Fatalf("another client after the cancel loop: %v", err)
	}
	mustUnlock(t, g)
}

// TestCloseSessionDuringWait: closing the waiter's session ends its Lock
// with ErrClosed and leaves only the holder's node.
func TestCloseSessionDuringWait(t *testing.T) {
	e := newEnv(t)
	holder := mustLock(t, e.lock(e.session()))
	ws := e.session()
	ch := lockAsync(context.Background(), e.lock(ws))
	e.awaitChildren(2)
	if err := ws.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := recv(t, ch, "waiter on a closed session")
	if r.err == nil || !errors.Is(r.err, coordkit.ErrClosed) {
		t.Fatalf("waiter: %v, want ErrClosed", r.err)
	}
	if kids := e.awaitChildren(1); kids[0].Path != holder.Fence().Path {
		t.Fatalf("left: %v", names(kids))
	}
	// A Lock on the closed session fails at once, creating nothing.
	if _, err := e.lock(ws).Lock(context.Background()); !errors.Is(err, coordkit.ErrClosed) {
		t.Fatalf("Lock on a closed session: %v", err)
	}
	mustUnlock(t, holder)
	e.awaitChildren(0)
}

// TestHolderSessionClosed: the holder's guard ends with ErrClosed and the
// next waiter acquires with a larger token.
func TestHolderSessionClosed(t *testing.T) {
	e := newEnv(t)
	hs := e.session()
	holder := mustLock(t, e.lock(hs))
	ch := lockAsync(context.Background(), e.lock(e.session()))
	e.awaitChildren(2)
	hs.Close(context.Background())
	if err := ended(t, holder, "holder"); !errors.Is(err, recipes.ErrLost) || !errors.Is(err, coordkit.ErrClosed) {
		t.Fatalf("holder: %v, want ErrLost + ErrClosed", err)
	}
	r := recv(t, ch, "waiter")
	if r.err != nil || r.g.Token() <= holder.Token() {
		t.Fatalf("waiter: %v (token %d, holder %d)", r.err, r.g.Token(), holder.Token())
	}
	if err := holder.Unlock(context.Background()); err != nil {
		t.Fatalf("Unlock of a lost guard: %v, want nil", err)
	}
	mustUnlock(t, r.g)
}

// TestWaiterSessionExpires: a waiter whose session the server expires gets
// an error matching ErrSessionLost, never the lock.
func TestWaiterSessionExpires(t *testing.T) {
	e := newEnv(t)
	holder := mustLock(t, e.lock(e.session()))
	ws := e.session()
	ch := lockAsync(context.Background(), e.lock(ws))
	e.awaitChildren(2)
	if err := e.drv.Expire(ws.ID()); err != nil {
		t.Fatal(err)
	}
	r := recv(t, ch, "expired waiter")
	if r.err == nil || !errors.Is(r.err, coordkit.ErrSessionLost) {
		t.Fatalf("expired waiter: guard %v err %v, want ErrSessionLost", r.g, r.err)
	}
	e.awaitChildren(1)
	mustUnlock(t, holder)
	e.awaitChildren(0)
}

// TestWaiterSuspended: under the standard policy a waiter whose connection
// is suspended fails with ErrSuspended; its node, which it cannot delete
// while disconnected, is deleted once the session reconnects.
func TestWaiterSuspended(t *testing.T) {
	e := newEnv(t)
	holder := mustLock(t, e.lock(e.session()))
	ws := e.session()
	ch := lockAsync(context.Background(), e.lock(ws))
	e.awaitChildren(2)
	if err := e.drv.Disconnect(ws.ID()); err != nil {
		t.Fatal(err)
	}
	r := recv(t, ch, "suspended waiter")
	if !errors.Is(r.err, session.ErrSuspended) || !errors.Is(r.err, coordkit.ErrSessionLost) {
		t.Fatalf("suspended waiter: %v, want ErrSuspended", r.err)
	}
	if len(e.children()) != 2 {
		t.Fatalf("children while the waiter is disconnected: %v", names(e.children()))
	}
	// Lock while suspended fails at once.
	if _, err := e.lock(ws).Lock(context.Background()); !errors.Is(err, session.ErrSuspended) {
		t.Fatalf("Lock while suspended: %v", err)
	}
	if err := e.drv.Reconnect(ws.ID()); err != nil {
		t.Fatal(err)
	}
	if kids := e.awaitChildren(1); kids[0].Path != holder.Fence().Path {
		t.Fatalf("left: %v", names(kids))
	}
	mustUnlock(t, holder)
	// The reconnected session can lock again.
	g := mustLock(t, e.lock(ws))
	mustUnlock(t, g)
}

// TestWaiterSurvivesDisconnectUnderSessionPolicy: with the session policy a
// short disconnect does not end the wait; a release that happened meanwhile
// is seen after the reconnect.
func TestWaiterSurvivesDisconnectUnderSessionPolicy(t *testing.T) {
	e := newEnv(t)
	holder := mustLock(t, e.lock(e.session()))
	ws := e.session(session.WithErrorPolicy(session.SessionPolicy))
	ch := lockAsync(context.Background(), e.lock(ws))
	e.awaitChildren(2)
	if err := e.drv.Disconnect(ws.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "waiter's session suspended", func() bool { return ws.State() == session.StateSuspended })
	mustUnlock(t, holder)
	select {
	case r := <-ch:
		t.Fatalf("waiter returned while disconnected: %v", r.err)
	default:
	}
	if err := e.drv.Reconnect(ws.ID()); err != nil {
		t.Fatal(err)
	}
	r := recv(t, ch, "reconnected waiter")
	if r.err != nil || r.g.Token() <= holder.Token() {
		t.Fatalf("reconnected waiter: %v", r.err)
	}
	awaitNotSuspended(t, ws)
	mustUnlock(t, r.g)
	e.awaitChildren(0)
}

// TestHolderSuspended: the holder's guard ends on suspension (standard
// policy); Unlock then returns nil at once and the node is deleted once the
// session reconnects, which lets the waiter in.
func TestHolderSuspended(t *testing.T) {
	e := newEnv(t)
	hs := e.session()
	holder := mustLock(t, e.lock(hs))
	ch := lockAsync(context.Background(), e.lock(e.session()))
	e.awaitChildren(2)
	if err := e.drv.Disconnect(hs.ID()); err != nil {
		t.Fatal(err)
	}
	if err := ended(t, holder, "suspended holder"); !errors.Is(err, session.ErrSuspended) || !errors.Is(err, recipes.ErrLost) {
		t.Fatalf("suspended holder: %v", err)
	}
	if err := holder.Unlock(context.Background()); err != nil {
		t.Fatalf("Unlock of a lost guard while disconnected: %v", err)
	}
	if err := e.drv.Reconnect(hs.ID()); err != nil {
		t.Fatal(err)
	}
	r := recv(t, ch, "waiter")
	if r.err != nil {
		t.Fatal(r.err)
	}
	mustUnlock(t, r.g)
	e.awaitChildren(0)
}

// TestHolderNodeDeleted: an operator deletes the holder's node. The
// holder's guard ends with ErrNodeDeleted and the waiter, after listing the
// queue again, acquires with a larger token.
func TestHolderNodeDeleted(t *testing.T) {
	e := newEnv(t)
	holder := mustLock(t, e.lock(e.session()))
	ch := lockAsync(context.Background(), e.lock(e.session()))
	e.awaitChildren(2)
	if err := e.obs.Delete(context.Background(), holder.Fence().Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	if err := ended(t, holder, "holder"); !errors.Is(err, recipes.ErrNodeDeleted) || !errors.Is(err, recipes.ErrLost) {
		t.Fatalf("holder: %v, want ErrNodeDeleted", err)
	}
	r := recv(t, ch, "waiter")
	if r.err != nil || r.g.Token() <= holder.Token() {
		t.Fatalf("waiter: %v", r.err)
	}
	if err := holder.Unlock(context.Background()); err != nil {
		t.Fatalf("Unlock of a guard whose node was deleted: %v", err)
	}
	mustUnlock(t, r.g)
	e.awaitChildren(0)
}

// TestWaiterNodeDeleted: an operator deletes the node of a waiter in the
// middle of the queue. That waiter fails at once with ErrNodeDeleted (it
// does not wait for the queue to move), and the others keep their order.
func TestWaiterNodeDeleted(t *testing.T) {
	e := newEnv(t)
	holder := mustLock(t, e.lock(e.session()))
	var chans []<-chan result
	for i := range 3 {
		chans = append(chans, lockAsync(context.Background(), e.lock(e.session())))
		e.awaitChildren(i + 2)
	}
	kids := e.children()
	if err := e.obs.Delete(context.Background(), kids[2].Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	r := recv(t, chans[1], "deleted waiter")
	if !errors.Is(r.err, recipes.ErrNodeDeleted) {
		t.Fatalf("deleted waiter: %v, want ErrNodeDeleted", r.err)
	}
	live(t, holder, "holder")
	for _, i := range []int{0, 2} {
		select {
		case r := <-chans[i]:
			t.Fatalf("waiter %d returned while the holder holds: %v", i, r.err)
		default:
		}
	}
	mustUnlock(t, holder)
	first := recv(t, chans[0], "waiter 0")
	if first.err != nil {
		t.Fatal(first.err)
	}
	select {
	case r := <-chans[2]:
		t.Fatalf("waiter 2 granted while waiter 0 holds: %v", r.err)
	default:
	}
	mustUnlock(t, first.g)
	last := recv(t, chans[2], "waiter 2")
	if last.err != nil || last.g.Token() <= first.g.Token() {
		t.Fatalf("waiter 2: %v", last.err)
	}
	mustUnlock(t, last.g)
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
		n, err := e.obs.Create(ctx, dir+"/"+c.name, []byte("foreign"), c.opts)
		if err != nil {
			t.Fatal(err)
		}
		foreign = append(foreign, n)
	}
	a := e.lock(e.session())
	g, err := a.TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock with foreign children: %v", err)
	}
	ch := lockAsync(ctx, e.lock(e.session()))
	e.awaitChildren(len(foreign) + 2)
	// A foreign sequential child created after the waiter is ignored too.
	late, err := e.obs.Create(ctx, dir+"/job-", []byte("foreign"), backend.CreateOptions{Sequential: true})
	if err != nil {
		t.Fatal(err)
	}
	foreign = append(foreign, late)
	mustUnlock(t, g)
	r := recv(t, ch, "waiter")
	if r.err != nil {
		t.Fatal(r.err)
	}
	mustUnlock(t, r.g)
	for _, n := range foreign {
		if err := e.obs.Delete(ctx, n.Path, backend.AnyVersion); err != nil {
			t.Fatal(err)
		}
	}
	e.awaitChildren(0)
}

// TestSequenceWrap: the directory's sequence counter crosses 2^31-1 while
// the queue is non-empty; grants still follow creation order.
func TestSequenceWrap(t *testing.T) {
	e := newEnv(t)
	if err := e.drv.SetNextSequence(dir, math.MaxInt32-2); err != nil {
		t.Fatal(err)
	}
	holder := mustLock(t, e.lock(e.session()))
	const n = 5
	chans := make([]<-chan result, n)
	for i := range n {
		chans[i] = lockAsync(context.Background(), e.lock(e.session()))
		e.awaitChildren(i + 2)
	}
	kids := e.children()
	var suffixes []string
	for _, k := range kids {
		suffixes = append(suffixes, k.Name[strings.LastIndex(k.Name, "lock-")+len("lock-"):])
	}
	if !slices.Contains(suffixes, "2147483647") || !slices.Contains(suffixes, "-2147483648") {
		t.Fatalf("the queue does not cross the wrap: %v", suffixes)
	}
	prev := holder.Token()
	mustUnlock(t, holder)
	for i := range n {
		r := recv(t, chans[i], fmt.Sprintf("waiter %d", i))
		if r.err != nil || r.g.Token() <= prev {
			t.Fatalf("waiter %d: %v (token %d after %d)", i, r.err, r.g.Token(), prev)
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
	e.awaitChildren(0)
}

// TestLostCreateReply: the create's reply is lost; the driver finds the
// node by its protected prefix and the lock works with exactly one node.
func TestLostCreateReply(t *testing.T) {
	e := newEnv(t)
	s := e.session()
	if err := e.drv.FailNextReply(s.ID()); err != nil {
		t.Fatal(err)
	}
	g := mustLock(t, e.lock(s))
	kids := e.children()
	if len(kids) != 1 || kids[0].Path != g.Fence().Path {
		t.Fatalf("children after a lost create reply: %v", names(kids))
	}
	n, err := e.obs.Get(context.Background(), g.Fence().Path)
	if err != nil || n.Token != g.Token() {
		t.Fatalf("node %+v err %v, token %d", n, err, g.Token())
	}
	// The release's reply is lost too: the node is deleted anyway.
	if err := e.drv.FailNextReply(s.ID()); err != nil {
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
	holder := mustLock(t, e.lock(e.session()))
	holder.Done() // holders that watch their hold: the costlier case
	granted := make(chan *fairlock.Guard, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		l := e.lock(e.session())
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
	eventually(t, fmt.Sprintf("%d waiters queued", n), func() bool { return e.drv.Stats().Watches == 2*n+1 })
	var costs []cost
	g := holder
	for remaining := n - 1; remaining >= 0; remaining-- {
		before := e.drv.Stats()
		mustUnlock(t, g)
		select {
		case g = <-granted:
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(bound):
			t.Fatalf("no grant within %v with %d waiters left", bound, remaining+1)
		}
		eventually(t, "handoff settled", func() bool { return e.drv.Stats().Watches == 2*remaining+1 })
		after := e.drv.Stats()
		costs = append(costs, cost{after.Requests - before.Requests, after.WatchEvents - before.WatchEvents})
	}
	mustUnlock(t, g)
	return costs
}

// TestConcurrentGoroutinesOneLock: goroutines of one session sharing one
// *Lock each queue their own node and exclude each other.
func TestConcurrentGoroutinesOneLock(t *testing.T) {
	e := newEnv(t)
	l := e.lock(e.session())
	var holders, grants atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				g, err := l.Lock(context.Background())
				if err != nil {
					errs <- err
					return
				}
				if h := holders.Add(1); h != 1 {
					errs <- fmt.Errorf("%d holders", h)
				}
				grants.Add(1)
				holders.Add(-1)
				if err := g.Unlock(context.Background()); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if grants.Load() != 320 {
		t.Fatalf("%d grants", grants.Load())
	}
	e.awaitChildren(0)
}

func TestInvalidInput(t *testing.T) {
	e := newEnv(t)
	s := e.session()
	for _, p := range []string{"", "locks", "/", "/locks/", "/a//b", "/a/./b", "/a/../b", "/zookeeper", "/zookeeper/lock", "/a\x00b", "/a\nb", "/" + strings.Repeat("x", backend.MaxPathLength)} {
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
	if st := e.drv.SessionStats(s.ID()); st.Requests != 0 {
		t.Fatalf("bad input reached the server: %d requests", st.Requests)
	}
	g := mustLock(t, l)
	//nolint:staticcheck // a nil ctx is the point
	if err := g.Unlock(nil); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("Unlock(nil): %v", err)
	}
	mustUnlock(t, g) // the nil-ctx Unlock released nothing
	e.awaitChildren(0)
}

// TestCuratorLayout: the node is named as Curator's InterProcessMutex names
// its nodes, and carries no data.
func TestCuratorLayout(t *testing.T) {
	e := newEnv(t)
	g := mustLock(t, e.lock(e.session()))
	kids := e.children()
	if len(kids) != 1 || !curatorName(kids[0].Name) {
		t.Fatalf("children %v, want one _c_<uuid36>-lock-<10 digits>", names(kids))
	}
	n, err := e.obs.Get(context.Background(), kids[0].Path)
	if err != nil || len(n.Data) != 0 || n.Owner == "" {
		t.Fatalf("lock node %+v (err %v): want empty and ephemeral", n, err)
	}
	mustUnlock(t, g)
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
	lk := e.lock(e.session()).Locker()
	var n, holders int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				lk.Lock()
				if h := atomic.AddInt32(&holders, 1); h != 1 {
					t.Errorf("%d holders", h)
				}
				n++ // guarded by the lock alone: -race checks it
				atomic.AddInt32(&holders, -1)
				lk.Unlock()
			}
		}()
	}
	wg.Wait()
	if n != 80 {
		t.Fatalf("n = %d", n)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Unlock of an unlocked Locker did not panic")
			}
		}()
		lk.Unlock()
	}()
	e.awaitChildren(0)
}

// TestLockDuringDisconnectUnderSessionPolicy: with the session policy a Lock
// started while the connection is down waits for the reconnect, then
// queues.
func TestLockDuringDisconnectUnderSessionPolicy(t *testing.T) {
	e := newEnv(t)
	s := e.session(session.WithErrorPolicy(session.SessionPolicy))
	if err := e.drv.Disconnect(s.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "session suspended", func() bool { return s.State() == session.StateSuspended })
	ch := lockAsync(context.Background(), e.lock(s))
	select {
	case r := <-ch:
		t.Fatalf("Lock returned while disconnected: %v", r.err)
	default:
	}
	if err := e.drv.Reconnect(s.ID()); err != nil {
		t.Fatal(err)
	}
	r := recv(t, ch, "Lock after the reconnect")
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The grant can come before the session has processed the reconnect;
	// Unlock while it still says Suspended defers the delete (documented).
	awaitNotSuspended(t, s)
	mustUnlock(t, r.g)
	// The same, cancelled while it waits for the reconnect.
	if err := e.drv.Disconnect(s.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "session suspended", func() bool { return s.State() == session.StateSuspended })
	ctx, cancel := context.WithCancel(context.Background())
	ch = lockAsync(ctx, e.lock(s))
	cancel()
	if r := recv(t, ch, "cancelled Lock"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled Lock while disconnected: %v", r.err)
	}
	if err := e.drv.Reconnect(s.ID()); err != nil {
		t.Fatal(err)
	}
	e.awaitChildren(0)
}

// TestNodeDataChanged: someone writes to the holder's and a waiter's node.
// Neither hold nor wait ends (the node is the same incarnation), and
// Unlock still deletes the holder's node although its version changed.
func TestNodeDataChanged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	holder := mustLock(t, e.lock(e.session()))
	holder.Done() // arm the guard's watch of its node
	ch := lockAsync(ctx, e.lock(e.session()))
	kids := e.awaitChildren(2)
	eventually(t, "watches armed", func() bool { return e.drv.Stats().Watches == 3 })
	for _, k := range kids {
		if _, err := e.obs.Set(ctx, k.Path, []byte("touched"), backend.AnyVersion); err != nil {
			t.Fatal(err)
		}
	}
	// The waiter re-arms its watches; wait until it has (two watches of
	// the waiter, one of the holder's guard, none of the operator).
	eventually(t, "watches re-armed", func() bool { return e.drv.Stats().Watches == 3 })
	live(t, holder, "holder after a write to its node")
	select {
	case r := <-ch:
		t.Fatalf("waiter returned after a write to its node: %v", r.err)
	default:
	}
	mustUnlock(t, holder)
	r := recv(t, ch, "waiter")
	if r.err != nil {
		t.Fatal(r.err)
	}
	mustUnlock(t, r.g)
	e.awaitChildren(0)
}

// awaitNotSuspended waits until s has processed its reconnect: a grant seen
// on the connection can come first, and Unlock on a session that still says
// Suspended defers its delete to the background and reports that.
func awaitNotSuspended(t *testing.T, s *session.Session) {
	t.Helper()
	eventually(t, "the session to process its reconnect", func() bool { return s.State() != session.StateSuspended })
}
