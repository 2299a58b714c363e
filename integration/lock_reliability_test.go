//go:build unix

package integration_test

// Reliability of the two locks, recipes/mutex and recipes/fairlock, on real
// servers and on both backends: rows 1–4 of the fault matrix in
// design/reliability.md §6, checked with the oracles of §7.
//
//   - TestLockReliabilityLeaderKilled (row 1): the leader of a 3-member
//     ensemble or cluster dies while one session holds and others wait.
//   - TestLockReliabilityShortPartition (row 2): the holder is partitioned
//     for less than the session timeout T.
//   - TestLockReliabilityLongPartition (row 3): the holder is partitioned
//     for longer than T.
//   - TestLockReliabilityPausedHolder (row 4): the holder is a child
//     process (TestLockHolderChildProcess), stopped with SIGSTOP for 2T.
//
// The oracles: an "inside" checker that also records the grants in order
// (mxChecker), a fenced store FS (fence.Register: per lock the largest token
// seen, a smaller one refused), fence.Set for data in the same backend, an
// unfenced read-modify-write counter (the negative control of row 4) and the
// count of acknowledged critical sections. Each test logs "BOUND" lines with
// what it measured. Tests wait on channels, watches or polled server state
// under generous deadlines; the only timed waits are how long a fault lasts.
// The build constraint is for SIGSTOP and SIGCONT.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/integration"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/fence"
	"github.com/coordkit/coordkit/session"
)

// ---- helpers (the two locks' shared shape is in locks_test.go) ---------

// awaitWaiters polls, through errors (the observer may be reconnecting
// after a failover), until at least n processes queue behind the holder.
func awaitWaiters(t *testing.T, k lockRecipe, conn backend.Conn, path string, n int) {
	t.Helper()
	mxAwait(t, fmt.Sprintf("%d waiters queued on %s", n, path), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		got, err := k.waiters(ctx, conn, path)
		return err == nil && got >= n
	})
}

// notSuspended polls until s is not Suspended, and reports whether it
// lives on; false also when deadline passes first.
func notSuspended(s *session.Session, deadline time.Time) bool {
	for s.State() == session.StateSuspended {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s.Err() == nil
}

// relNode creates a persistent node at path holding data, deleted when the
// test ends.
func relNode(t *testing.T, conn backend.Conn, path, data string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), lockBound)
	defer cancel()
	if _, err := conn.Create(ctx, path, []byte(data), backend.CreateOptions{}); err != nil {
		t.Fatalf("create %s: %v", path, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), lockBound)
		defer cancel()
		if err := conn.Delete(ctx, path, backend.AnyVersion); err != nil && !errors.Is(err, backend.ErrNoNode) {
			t.Errorf("delete %s: %v", path, err)
		}
	})
}

// fencedSet writes data to path with fence.Set: only while g holds, checked
// by the server in the same transaction.
func fencedSet(s *session.Session, g lockGuard, path, data string) error {
	ctx, cancel := context.WithTimeout(context.Background(), slack)
	defer cancel()
	_, err := fence.Set(ctx, s.Conn(), g, path, []byte(data), backend.AnyVersion)
	return err
}

// unawareSet writes data to path with fence.Set through conn, a live
// connection (another session's, or a client of the resource's own), as
// the holder of g would that has not heard that g ended (unawareHold: Err
// nil, g's own fences). Only the server can refuse it: see serverRefused.
func unawareSet(conn backend.Conn, g recipes.Held, path, data string) error {
	ctx, cancel := context.WithTimeout(context.Background(), slack)
	defer cancel()
	_, err := fence.Set(ctx, conn, unawareHold{g}, path, []byte(data), backend.AnyVersion)
	return err
}

// readCounter and writeCounter are the two halves of an unfenced
// read-modify-write of a decimal counter.
func readCounter(conn backend.Conn, path string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), slack)
	defer cancel()
	n, err := conn.Get(ctx, path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(n.Data), 10, 64)
}

func writeCounter(conn backend.Conn, path string, v int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), slack)
	defer cancel()
	_, err := conn.Set(ctx, path, []byte(strconv.FormatInt(v, 10)), backend.AnyVersion)
	return err
}

// sameHolder checks that the node of g is still there, the same
// incarnation, owned by the session owner.
func sameHolder(t *testing.T, conn backend.Conn, g lockGuard, owner string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), lockBound)
	defer cancel()
	n, err := conn.Get(ctx, g.Fence().Path)
	if err != nil || n.Owner != owner || n.Token != g.Token() {
		t.Fatalf("holder's node %s: %+v, %v; want owner %s, token %d", g.Fence().Path, n, err, owner, g.Token())
	}
}

// ---- row 1: leader killed ---------------------------------------------

// relWork is the shared state of the critical sections on one lock and the
// oracles over them.
type relWork struct {
	t       *testing.T
	c       mxChecker              // overlaps; grants in order
	fs      *fence.Register[int64] // FS: refuses a token below the largest seen
	data    string                 // written with fence.Set in every section
	counter atomic.Int64           // unfenced read-modify-write
	acked   atomic.Int64           // sections that completed their writes
	retries atomic.Int64           // Lock calls repeated after a suspension
	mu      sync.Mutex
	holds   []*relHold
	changes []relChange
}

// relHold is one grant and how its Guard ended.
type relHold struct {
	sid            string
	token          int64
	granted, ended time.Time // ended is zero while the guard lives
	err            error
}

type relChange struct {
	sid string
	c   session.Change
}

type relUser struct {
	s *session.Session
	l lockHandle
}

// track records the session's state changes until the test ends.
func (w *relWork) track(s *session.Session) {
	remove := s.OnStateChange(func(c session.Change) {
		w.mu.Lock()
		w.changes = append(w.changes, relChange{s.ID(), c})
		w.mu.Unlock()
	})
	w.t.Cleanup(remove)
}

// enter starts a critical section of g and records how g ends.
func (w *relWork) enter(s *session.Session, g lockGuard) *relHold {
	w.c.enter(s.ID(), g.Token())
	h := &relHold{sid: s.ID(), token: g.Token(), granted: time.Now()}
	w.mu.Lock()
	w.holds = append(w.holds, h)
	w.mu.Unlock()
	go func() {
		<-g.Done()
		w.mu.Lock()
		h.ended, h.err = time.Now(), g.Err()
		w.mu.Unlock()
	}()
	return h
}

// finish does the writes of the section, leaves it and unlocks. The
// section is acknowledged if its fenced write succeeded: the counter
// advances and FS is written with the token.
func (w *relWork) finish(s *session.Session, g lockGuard) (acked bool) {
	v := w.counter.Load()
	if err := fencedSet(s, g, w.data, strconv.FormatInt(v+1, 10)); err == nil {
		w.counter.Store(v + 1)
		if err := w.fs.Store(g.Token(), v+1); err != nil {
			w.t.Errorf("FS refused a holder whose fenced write the server accepted: %v", err)
		}
		w.acked.Add(1)
		acked = true
	}
	w.c.leave()
	ctx, cancel := context.WithTimeout(context.Background(), lockBound)
	defer cancel()
	if err := g.Unlock(ctx); err != nil {
		if errors.Is(err, backend.ErrConnectionLoss) {
			w.t.Logf("session %s: Unlock not confirmed, the library deletes the node once reconnected: %v", s.ID(), err)
		} else {
			w.t.Errorf("session %s: Unlock: %v", s.ID(), err)
		}
	}
	return acked
}

// run has u complete rounds acknowledged sections. A Lock that fails
// because the session is suspended (fairlock, standard policy) is called
// again once the session is back.
func (w *relWork) run(u relUser, rounds int, deadline time.Time) {
	for acked, retries := 0, 0; acked < rounds; {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		g, err := u.l.lock(ctx)
		cancel()
		if err != nil {
			if errors.Is(err, coordkit.ErrSessionLost) && retries < 20 && notSuspended(u.s, deadline) {
				retries++
				w.retries.Add(1)
				continue
			}
			w.t.Errorf("session %s: Lock: %v", u.s.ID(), err)
			return
		}
		w.enter(u.s, g)
		if w.finish(u.s, g) {
			acked++
		}
	}
}

// verify applies the oracles once every section is done.
func (w *relWork) verify(t *testing.T, k lockRecipe) {
	t.Helper()
	w.mu.Lock()
	n := len(w.holds)
	w.mu.Unlock()
	w.c.verify(t, n) // no overlap; tokens never back, up when the session changes
	if k.freshTokens {
		for i := 1; i < len(w.c.grants); i++ {
			if a, b := w.c.grants[i-1], w.c.grants[i]; b.token <= a.token {
				t.Fatalf("grant %d: token %d after %d", i, b.token, a.token)
			}
		}
	}
	if got, acked := w.counter.Load(), w.acked.Load(); got != acked {
		t.Fatalf("unfenced counter %d after %d acknowledged sections: sections overlapped", got, acked)
	}
	if _, refused := w.fs.Counts(); refused > 0 {
		t.Fatalf("FS refused %d stale tokens: a holder wrote after a newer one", refused)
	}
}

// memberControl is a 3-member cluster of the test's own.
type memberControl struct {
	addrs  []string
	leader func(testing.TB) int
	kill   func(testing.TB, int)
	start  func(testing.TB, int)
}

// TestLockReliabilityLeaderKilled (row 1): one session holds, two wait, and
// the leader dies (ZooKeeper: SIGKILL; etcd: the member is stopped). The
// holder stays in its critical section through the election, until its
// session is connected again and the others queue again. Then every session
// completes 3 acknowledged sections. Asserted: no two sections overlap,
// tokens never go back and grow whenever the lock changes session (each
// grant of fairlock), FS refuses nothing (nobody writes after a newer
// holder), the unfenced counter equals the acknowledged sections, and
// progress resumes after the election. Logged: the election time, how each
// Guard ended (lost or released, when), each session's state changes.
func TestLockReliabilityLeaderKilled(t *testing.T) {
	clusters := []struct {
		bc    backendCase
		start func(t *testing.T) memberControl
	}{
		{backendCases[0], func(t *testing.T) memberControl {
			zk := integration.StartZooKeeper(t, integration.WithMembers(3))
			return memberControl{zk.Addrs(), zk.Leader, zk.Kill, zk.Start}
		}},
		{backendCases[1], func(t *testing.T) memberControl {
			ec := integration.StartEtcd(t, integration.WithMembers(3))
			return memberControl{ec.Endpoints(), ec.Leader, ec.Stop, ec.Start}
		}},
	}
	for _, c := range clusters {
		t.Run(c.bc.name, func(t *testing.T) {
			mc := c.start(t)
			for _, k := range lockRecipes {
				t.Run(k.name, func(t *testing.T) { testLeaderKilled(t, c.bc, mc, k) })
			}
		})
	}
}

func testLeaderKilled(t *testing.T, bc backendCase, mc memberControl, k lockRecipe) {
	const users, rounds = 3, 3
	drv := bc.driver(t, mc.addrs)
	obs := observerConn(t, drv)
	root := faultRoot(t)
	path := root + "/lock"
	w := &relWork{t: t, fs: fence.NewRegister[int64](0), data: root + "/data"}
	relNode(t, obs, w.data, "0")
	us := make([]relUser, users)
	for i := range us {
		s := lockSession(t, drv)
		w.track(s)
		us[i] = relUser{s, k.open(t, s, path)}
	}
	g := mustLock(t, us[0].l)
	held := w.enter(us[0].s, g)
	deadline := time.Now().Add(3 * lockBound)
	var wg sync.WaitGroup
	for _, u := range us[1:] {
		wg.Go(func() { w.run(u, rounds, deadline) })
	}
	awaitWaiters(t, k, obs, path, users-1)

	leader := mc.leader(t)
	t.Cleanup(func() { mc.start(t, leader) })
	t0 := time.Now()
	mc.kill(t, leader)
	elected := mc.leader(t)
	electedAfter := time.Since(t0)
	if !notSuspended(us[0].s, deadline) {
		t.Fatalf("the holder's session did not come back: state %v, %v", us[0].s.State(), us[0].s.Err())
	}
	awaitWaiters(t, k, obs, path, users-1)
	w.finish(us[0].s, g)
	wg.Go(func() { w.run(us[0], rounds, deadline) })
	wg.Wait()
	doneAfter := time.Since(t0)
	w.verify(t, k)

	w.mu.Lock()
	defer w.mu.Unlock()
	holder := fmt.Sprintf("kept its guard (%v)", held.err)
	if errors.Is(held.err, recipes.ErrLost) {
		holder = fmt.Sprintf("lost its guard %v after the kill (%v)", held.ended.Sub(t0).Round(time.Millisecond), held.err)
	}
	var handoff time.Duration
	for _, h := range w.holds {
		if h.sid != held.sid {
			handoff = h.granted.Sub(t0)
			break
		}
	}
	t.Logf("BOUND %s %s leader killed (T=%v): member %d killed, member %d leads %v later; the holder %s; first grant to another session %v after the kill; %d sections, %d acknowledged, all done %v after the kill; %d Lock calls repeated after a suspension",
		bc.name, k.name, lockTTL, leader, elected, electedAfter.Round(time.Millisecond), holder, handoff.Round(time.Millisecond), len(w.holds), w.acked.Load(), doneAfter.Round(time.Millisecond), w.retries.Load())
	for _, h := range w.holds {
		if errors.Is(h.err, recipes.ErrLost) {
			t.Logf("  guard of session %s (token %d) granted %v, lost %v after the kill: %v", h.sid, h.token, h.granted.Sub(t0).Round(time.Millisecond), h.ended.Sub(t0).Round(time.Millisecond), h.err)
		}
	}
	for _, c := range w.changes {
		t.Logf("  session %s: %v %v after the kill (%v)", c.sid, c.c.State, c.c.At.Sub(t0).Round(time.Millisecond), c.c.Err)
	}
}

// ---- rows 2 and 3: the holder partitioned -----------------------------

type relPolicy struct {
	name     string
	p        session.ErrorPolicy
	endsHold bool // holds end at Suspended
}

var relPolicies = []relPolicy{{"standard", session.StandardPolicy, true}, {"session", session.SessionPolicy, false}}

// relPartition is a holder whose connection goes through a proxy, and, on
// direct connections, a competitor waiting in Lock and a probe for TryLock,
// all on one lock.
type relPartition struct {
	bc      backendCase
	k       lockRecipe
	pol     relPolicy
	T       time.Duration
	proxy   *integration.Proxy
	holder  *observed // the holder's session, with its state changes
	comp    *session.Session
	hl      lockHandle // the holder's lock
	probe   lockHandle
	obs     backend.Conn
	path    string
	data    string // written with fence.Set
	fs      *fence.Register[int64]
	g       lockGuard         // the holder's guard
	waiting <-chan lockResult // the competitor's Lock
}

// relPartitionCases runs fn in a parallel subtest for every backend, lock
// and error policy, on the shared servers.
func relPartitionCases(t *testing.T, T time.Duration, fn func(*testing.T, *relPartition)) {
	for _, bc := range backendCases {
		for _, k := range lockRecipes {
			for _, pol := range relPolicies {
				t.Run(bc.name+"/"+k.name+"/"+pol.name, func(t *testing.T) {
					t.Parallel()
					fn(t, newRelPartition(t, bc, k, pol, T))
				})
			}
		}
	}
}

// newRelPartition sets up the holder (holding, its token in FS) and the
// competitor (queued behind it).
func newRelPartition(t *testing.T, bc backendCase, k lockRecipe, pol relPolicy, T time.Duration) *relPartition {
	addrs := sharedAddrs(t, bc.name)
	direct := bc.driver(t, addrs)
	root := faultRoot(t)
	p := &relPartition{bc: bc, k: k, pol: pol, T: T, proxy: integration.NewProxy(t, addrs[0]), obs: observerConn(t, direct),
		path: root + "/lock", data: root + "/data", fs: fence.NewRegister[int64](0)}
	p.holder = openObserved(t, bc.driver(t, []string{p.proxy.Addr()}), session.WithTTL(T), session.WithErrorPolicy(pol.p))
	if got := p.holder.s.Timeout(); got != T {
		t.Fatalf("the holder's session timeout is %v, want %v (the server caps it?): the bounds below are T's", got, T)
	}
	p.comp = lockSession(t, direct)
	p.hl = k.open(t, p.holder.s, p.path)
	p.probe = k.open(t, lockSession(t, direct), p.path)
	relNode(t, p.obs, p.data, "")
	p.g = mustLock(t, p.hl)
	if err := p.fs.Store(p.g.Token(), 1); err != nil {
		t.Fatal(err)
	}
	// The competitor's Lock ends when it is granted, or at the latest when
	// the test ends.
	ctx, cancel := context.WithTimeout(context.Background(), 3*lockBound)
	t.Cleanup(cancel)
	p.waiting = lockAsync(ctx, k.open(t, p.comp, p.path))
	awaitWaiters(t, k, p.obs, p.path, 1)
	p.noGrant(t, "before the partition")
	return p
}

// noGrant checks that the competitor's Lock has not returned and that a
// probe's TryLock finds the lock taken.
func (p *relPartition) noGrant(t *testing.T, when string) {
	t.Helper()
	lockPending(t, p.waiting, when+": the competitor's Lock")
	p.probeLocked(t, when)
}

func (p *relPartition) probeLocked(t *testing.T, when string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), lockBound)
	defer cancel()
	g, err := p.probe.tryLock(ctx)
	if g != nil {
		g.Unlock(ctx)
	}
	if !errors.Is(err, recipes.ErrLocked) {
		t.Fatalf("%s: a probe's TryLock = %v, want recipes.ErrLocked", when, err)
	}
}

// handedOver checks the competitor's grant: a larger token, accepted by FS,
// after which FS refuses the old holder's token.
func (p *relPartition) handedOver(t *testing.T, r lockResult) {
	t.Helper()
	if r.g.Token() <= p.g.Token() {
		t.Fatalf("the competitor's token %d is not above the old holder's %d", r.g.Token(), p.g.Token())
	}
	if err := p.fs.Store(r.g.Token(), 2); err != nil {
		t.Fatalf("FS refused the new holder: %v", err)
	}
	if err := p.fs.Store(p.g.Token(), 3); !errors.Is(err, fence.ErrStaleToken) {
		t.Fatalf("FS write with the old holder's token %d = %v, want fence.ErrStaleToken", p.g.Token(), err)
	}
}

// release unlocks the competitor and checks that nothing of the lock is
// left.
func (p *relPartition) release(t *testing.T, r lockResult) {
	t.Helper()
	mustUnlock(t, r.g)
	noLeftovers(t, p.obs, p.path)
}

// shortPartitionT is the session timeout of the holder in
// TestLockReliabilityShortPartition, on both backends: the largest the
// shared ZooKeeper grants (its maxSessionTimeout: 20 ticks of 500ms). It
// must leave, after a Suspended as late as cut accepts it
// (suspendBound(T)+slack after the partition began), shortProbe for the
// checks during the partition (the guard's end, which comes with
// Suspended, and a probe's TryLock: a round trip) before T, when the
// partition must be healed: ZooKeeper 6.67s+3s+0.3s, etcd 5s+3s+0.3s.
//
// Once Suspended the session has T-suspendBound(T) (the server expires it
// T after it last heard from it, the client suspends 2T/3 (ZooKeeper) or
// T/2 (etcd) after its last reply) to reconnect: etcd 5s, enough for a
// Suspended seen slack late, the checks and the reconnection (0.5s);
// ZooKeeper 3.3s, of which the reconnection takes 1s (go-zookeeper waits
// that long before it starts over its list of servers), so a Suspended
// seen more than about 2s late fails there with the session Lost (expired
// on the server) instead of Reconnected.
const (
	shortPartitionT = 10 * time.Second
	shortProbe      = 300 * time.Millisecond
)

// TestLockReliabilityShortPartition (row 2): the holder is black-holed,
// T = shortPartitionT (10s), until its session is Suspended, then healed
// (within T) while a competitor waits in Lock. Asserted: Suspended within
// the documented bound; under the standard policy the Guard ends (Done,
// ErrLost) at Suspended and a fenced write with it is refused; under the
// session policy it survives and its fenced write succeeds; the
// competitor's Lock does not return and a probe's TryLock returns
// recipes.ErrLocked during the partition and after it, until the holder unlocks; the holder's node is
// the same after the partition; the holder's Unlock succeeds; then the
// competitor gets the lock with a larger token and FS refuses the old one.
func TestLockReliabilityShortPartition(t *testing.T) {
	// T leaves T/3 (ZooKeeper) or T/2 (etcd) from Suspended to reconnect
	// before the server could expire the session (see shortPartitionT).
	for _, bc := range backendCases {
		if late := bc.suspendBound(shortPartitionT) + slack + shortProbe; late >= shortPartitionT {
			t.Fatalf("%s: a Suspended accepted %v after the partition began and %v of checks end at %v, not before T=%v",
				bc.name, bc.suspendBound(shortPartitionT)+slack, shortProbe, late, shortPartitionT)
		}
	}
	relPartitionCases(t, shortPartitionT, func(t *testing.T, p *relPartition) {
		ended, t0, suspended := p.cut()
		guard := "kept"
		if p.pol.endsHold {
			guard = "ended " + p.awaitLost(t, ended, t0, slack).String()
		} else if err := p.g.Err(); err != nil {
			t.Fatalf("the guard ended at Suspended under the session policy: %v", err)
		}
		p.noGrant(t, "during the partition")
		healed := time.Since(t0)
		if healed >= p.T {
			t.Fatalf("the partition lasted %v (Suspended after %v, accepted up to %v; then %v of checks, allowed %v), not less than T=%v",
				healed, suspended.Round(time.Millisecond), p.bc.suspendBound(p.T)+slack, (healed - suspended).Round(time.Millisecond), shortProbe, p.T)
		}
		p.proxy.Unblackhole()
		p.holder.await(session.StateReconnected, p.T)
		reconnected := time.Since(t0)
		sameHolder(t, p.obs, p.g, p.holder.s.ID())
		p.noGrant(t, "after the partition, before the holder's Unlock")
		err := fencedSet(p.holder.s, p.g, p.data, "holder")
		if p.pol.endsHold && !errors.Is(err, fence.ErrStale) {
			t.Fatalf("fenced write with the ended guard = %v, want fence.ErrStale", err)
		}
		if !p.pol.endsHold && (err != nil || p.g.Err() != nil) {
			t.Fatalf("the guard did not survive the short partition: fenced write %v, guard %v", err, p.g.Err())
		}
		t.Logf("BOUND %s %s %s policy, partition < T (T=%v): Suspended %v after the partition began (documented %v), guard %s; healed at %v, Reconnected %v after the partition began; nobody else acquired",
			p.bc.name, p.k.name, p.pol.name, p.T, suspended.Round(time.Millisecond), p.bc.suspendBound(p.T), guard, healed.Round(time.Millisecond), reconnected.Round(time.Millisecond))
		mustUnlock(t, p.g)
		r := awaitGrant(t, p.waiting, "the competitor, after the holder's Unlock")
		p.handedOver(t, r)
		p.release(t, r)
	})
}

// cut black-holes the holder and waits for its session to be Suspended
// within the documented bound. It returns when the partition began, how
// long Suspended took, and a channel that tells when the holder's guard
// ends.
func (p *relPartition) cut() (ended <-chan time.Time, t0 time.Time, suspended time.Duration) {
	ch := make(chan time.Time, 1)
	go func() {
		<-p.g.Done()
		ch <- time.Now()
	}()
	t0 = time.Now()
	p.proxy.Blackhole()
	p.holder.await(session.StateSuspended, p.bc.suspendBound(p.T)+slack)
	return ch, t0, time.Since(t0)
}

// awaitLost waits up to within for the holder's guard to end, checks that
// it was lost, and returns when, counted from t0.
func (p *relPartition) awaitLost(t *testing.T, ended <-chan time.Time, t0 time.Time, within time.Duration) time.Duration {
	t.Helper()
	select {
	case at := <-ended:
		if err := p.g.Err(); !errors.Is(err, recipes.ErrLost) {
			t.Fatalf("the guard ended with %v, want recipes.ErrLost", err)
		}
		return at.Sub(t0).Round(time.Millisecond)
	case <-time.After(within):
		t.Fatalf("the guard did not end within %v (session %v)", within, p.holder.s.State())
	}
	return 0
}

// TestLockReliabilityLongPartition (row 3): the holder is black-holed,
// T = 4s, until its session is Lost and the competitor has the lock.
// Asserted, while still partitioned: Suspended and then Lost by the local
// timer within the documented bounds; the Guard ends with ErrLost by about
// T (the lost bound); under the standard policy it ended before the
// competitor was granted (the session policy's overlap is logged: a
// documented limit); the competitor acquires with a larger token; FS
// refuses the old token; fence.Set refuses the old guard (locally: it knows
// it is lost) and accepts the new one; the old guard's write as a holder
// that has not heard of the loss would send it (Err nil, its own fences),
// through a live connection, is refused by the server
// (backend.ErrGuardFailed) and leaves the node unwritten. After healing:
// the old session stays Lost, its TryLock fails with ErrSessionLost or
// ErrClosed, its Unlock returns nil and leaves the
// new holder's node alone, and its node is gone or the new holder's.
func TestLockReliabilityLongPartition(t *testing.T) {
	relPartitionCases(t, 4*time.Second, func(t *testing.T, p *relPartition) {
		ended, t0, suspended := p.cut()
		lost := p.holder.await(session.StateLost, p.bc.lostBound(p.T)+slack-suspended)
		lostAfter := time.Since(t0)
		if !errors.Is(lost.Err, coordkit.ErrSessionLost) {
			t.Fatalf("Lost with %v", lost.Err)
		}
		guardEnd := p.awaitLost(t, ended, t0, slack)
		if guardEnd > p.bc.lostBound(p.T)+slack {
			t.Fatalf("the guard ended %v after the partition began, documented bound %v", guardEnd, p.bc.lostBound(p.T))
		}
		r := awaitGrant(t, p.waiting, "the competitor, while the holder is partitioned")
		granted := r.at.Sub(t0).Round(time.Millisecond)
		p.handedOver(t, r)
		// The holder's own fence.Set refuses locally: its guard knows it
		// is lost.
		if err := fencedSet(p.holder.s, p.g, p.data, "stale"); !errors.Is(err, fence.ErrStale) || !errors.Is(err, recipes.ErrLost) {
			t.Fatalf("fence.Set with the lost guard = %v, want fence.ErrStale and recipes.ErrLost", err)
		}
		// A holder that has not heard of the loss gets as far as the
		// server, through a live connection (the competitor's): the
		// server must refuse the old guard's fences.
		if err := unawareSet(p.comp.Conn(), p.g, p.data, "stale"); !serverRefused(err) {
			t.Fatalf("the lost guard's write through a live connection = %v, want the server's refusal (fence.ErrStale and backend.ErrGuardFailed)", err)
		}
		if n, err := p.obs.Get(testCtx(t), p.data); err != nil || string(n.Data) != "" {
			t.Fatalf("the fenced node after the refused writes: %q (%v), want it unwritten", n.Data, err)
		}
		if err := fencedSet(p.comp, r.g, p.data, "new"); err != nil {
			t.Fatalf("fence.Set refused the new holder: %v", err)
		}
		if p.pol.endsHold && guardEnd >= granted {
			t.Fatalf("the old guard ended %v after the partition began, after the competitor's grant at %v", guardEnd, granted)
		}
		t.Logf("BOUND %s %s %s policy, partition > T (T=%v): Suspended %v, Lost %v (documented %v, %v), guard lost %v, competitor granted %v after the partition began (self-declared overlap %v)",
			p.bc.name, p.k.name, p.pol.name, p.T, suspended.Round(time.Millisecond), lostAfter.Round(time.Millisecond), p.bc.suspendBound(p.T), p.bc.lostBound(p.T), guardEnd, granted, max(0, guardEnd-granted))

		p.proxy.Unblackhole()
		ctx, cancel := context.WithTimeout(context.Background(), lockBound)
		defer cancel()
		if g, err := p.hl.tryLock(ctx); !errors.Is(err, coordkit.ErrSessionLost) && !errors.Is(err, coordkit.ErrClosed) {
			if g != nil {
				g.Unlock(ctx)
			}
			t.Fatalf("TryLock on the lost session after healing = %v, want ErrSessionLost or ErrClosed", err)
		}
		if err := p.g.Unlock(ctx); err != nil {
			t.Fatalf("Unlock of the lost guard: %v", err)
		}
		if st := p.holder.s.State(); st != session.StateLost {
			t.Fatalf("the old session is %v after healing, want Lost", st)
		}
		sameHolder(t, p.obs, r.g, p.comp.ID())
		if n, err := p.obs.Get(ctx, p.g.Fence().Path); err == nil && n.Owner == p.holder.s.ID() {
			t.Fatalf("the old session owns %s again", n.Path)
		}
		if err := r.g.Err(); err != nil {
			t.Fatalf("the new holder's guard ended: %v", err)
		}
		p.probeLocked(t, "after healing")
		p.release(t, r)
	})
}

// ---- a server that stops answering while a call waits on it -------------

// silentDeadline is the deadline of the calls TestLockDeadlineServerSilent
// makes while the server does not answer.
const silentDeadline = 300 * time.Millisecond

// TestLockDeadlineServerSilent: the server stops answering the session
// while a call is in flight, for less than the session timeout T, in two
// ways: the requests are lost (Blackhole; the connection is reset when it
// ends) or only delayed (Pause; delivered and applied when it ends). Lock,
// TryLock, fence.Set and Unlock under a 300ms deadline must return the deadline's error
// then, not when the session is declared lost (the mutex used to wait for an
// unanswered create: T on etcd, 5T/3 on ZooKeeper). Asserted, for each call
// on a lock path of its own (the Unlock's guard arms its node watch during
// the silence): it returns an error matching
// context.DeadlineExceeded before the session could be Suspended (the
// documented bound); after the silence (and the ZooKeeper session's
// reconnection, when its connection was reset), what the call left finishes in the
// background: a competitor session is granted the lock (the abandoned Lock
// released what its delayed create made, the interrupted Unlock's release
// went through) with a token above the released holder's; the session then
// takes and releases the lock again; nothing of the three locks is left.
func TestLockDeadlineServerSilent(t *testing.T) {
	const T = 6 * time.Second
	modes := []struct {
		name      string
		quiet     func(*integration.Proxy)
		speakOnce func(*integration.Proxy)
	}{
		{"lost", (*integration.Proxy).Blackhole, (*integration.Proxy).Unblackhole},
		{"delayed", (*integration.Proxy).Pause, (*integration.Proxy).Resume},
	}
	for _, bc := range backendCases {
		for _, k := range lockRecipes {
			for _, mode := range modes {
				t.Run(bc.name+"/"+k.name+"/"+mode.name, func(t *testing.T) {
					t.Parallel()
					addrs := sharedAddrs(t, bc.name)
					direct := bc.driver(t, addrs)
					obs := observerConn(t, direct)
					proxy := integration.NewProxy(t, addrs[0])
					o := openObserved(t, bc.driver(t, []string{proxy.Addr()}), session.WithTTL(T))
					s := o.s
					compSession := lockSession(t, direct)
					root := faultRoot(t)
					bound := bc.suspendBound(T)

					// silent runs call under silentDeadline while the server
					// is silent and checks that it returns the deadline's
					// error before the session could be Suspended; then the
					// server speaks again.
					silent := func(what string, call func(ctx context.Context) error) {
						t.Helper()
						mode.quiet(proxy)
						ctx, cancel := context.WithTimeout(context.Background(), silentDeadline)
						t0 := time.Now()
						err := call(ctx)
						took := time.Since(t0)
						cancel()
						mode.speakOnce(proxy)
						if mode.name == "lost" && bc.name == "zookeeper" {
							// The reset connection disconnects a ZooKeeper
							// session. (The etcd driver's states follow its
							// keepalives, which a 300ms silence does not
							// miss.)
							o.await(session.StateSuspended, bound+slack)
							o.await(session.StateReconnected, T)
						}
						if !errors.Is(err, context.DeadlineExceeded) {
							t.Fatalf("%s with the server silent = %v, want context.DeadlineExceeded", what, err)
						}
						if took >= bound {
							t.Fatalf("%s returned %v after its %v deadline, not before the session could be Suspended (%v)", what, took, silentDeadline, bound)
						}
						t.Logf("BOUND %s %s, requests %s: %s under a %v deadline returned after %v", bc.name, k.name, mode.name, what, silentDeadline, took.Round(time.Millisecond))
					}
					// settled checks that the lock at path ends up free: the
					// competitor is granted it with a token above floor and
					// releases it; then s takes and releases it again.
					settled := func(what, path string, l lockHandle, floor int64) {
						t.Helper()
						g := mustLock(t, k.open(t, compSession, path))
						if g.Token() <= floor {
							t.Fatalf("%s: the competitor's token %d is not above %d", what, g.Token(), floor)
						}
						mustUnlock(t, g)
						mustUnlock(t, mustLock(t, l))
					}

					// Lock and TryLock, each on a path of its own.
					lockPath, tryPath := root+"/lock", root+"/trylock"
					for _, c := range []struct {
						what, path string
						call       func(lockHandle) func(context.Context) (lockGuard, error)
					}{
						{"Lock", lockPath, func(h lockHandle) func(context.Context) (lockGuard, error) { return h.lock }},
						{"TryLock", tryPath, func(h lockHandle) func(context.Context) (lockGuard, error) { return h.tryLock }},
					} {
						h := k.open(t, s, c.path)
						silent(c.what, func(ctx context.Context) error {
							g, err := c.call(h)(ctx)
							if g != nil {
								g.Unlock(ctx)
							}
							return err
						})
						settled("after the abandoned "+c.what, c.path, h, 0)
					}

					unlockPath := root + "/unlock"
					ul := k.open(t, s, unlockPath)
					held := mustLock(t, ul)
					data := root + "/data"
					relNode(t, obs, data, "")
					silent("fence.Set", func(ctx context.Context) error {
						_, err := fence.Set(ctx, s.Conn(), held, data, []byte("x"), backend.AnyVersion)
						return err
					})
					if held.Err() != nil {
						// The reset connection suspended the session and
						// the standard policy ended the hold: take it again.
						mustUnlock(t, held)
						held = mustLock(t, ul)
					}
					silent("Unlock", func(ctx context.Context) error {
						// Done arms the guard's node watch, whose request goes
						// out into the silence: the release must not wait for it.
						held.Done()
						return held.Unlock(ctx)
					})
					settled("after the interrupted Unlock", unlockPath, ul, held.Token())

					for _, path := range []string{lockPath, tryPath, unlockPath} {
						noLeftovers(t, obs, path)
					}
				})
			}
		}
	}
}

// ---- row 4: the holder paused with SIGSTOP ----------------------------

// lockChildEnv carries a lockChildSpec (JSON) to TestLockHolderChildProcess.
const lockChildEnv = "COORDKIT_LOCK_CHILD"

// lockChildMark starts every line of the child's protocol on its stdout.
const lockChildMark = "LOCKCHILD"

type lockChildSpec struct {
	Backend, Kind string
	Addrs         []string
	Lock          string // the lock's path
	Counter       string // the unfenced counter
	Fenced        string // the node written with fence.Set
	TTL           time.Duration
}

// TestLockHolderChildProcess is the holder of TestLockReliabilityPausedHolder,
// run as a child process of it. It takes the lock and says "TOKEN t"; then,
// for each line "go" on its stdin, it writes the fenced node with fence.Set
// twice: through its session with its guard as it is ("FENCED ok", or
// "FENCED refused server err", server: true if the server refused it, see
// serverRefused), and through the counter's connection as a holder that has
// not heard its guard end ("UNAWARE ok" or "UNAWARE refused server err"; see
// unawareSet: only the server can refuse it); then it reads the counter
// ("READ v"), waits for the line, writes v+1 ("WROTE v+1"). When its stdin
// ends it unlocks ("UNLOCK ok" or "UNLOCK failed err") and exits. When its
// guard ends it says "DONE lost err" (lost: true or false).
// The counter has a client of its own, as an external resource would: it
// outlasts the pause, the lock's session does not.
func TestLockHolderChildProcess(t *testing.T) {
	raw := os.Getenv(lockChildEnv)
	if raw == "" {
		t.Skip("helper process of TestLockReliabilityPausedHolder: runs only as its child, with " + lockChildEnv + " set")
	}
	var spec lockChildSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatalf("%s: %v", lockChildEnv, err)
	}
	var bc backendCase
	var k lockRecipe
	for _, b := range backendCases {
		if b.name == spec.Backend {
			bc = b
		}
	}
	for _, l := range lockRecipes {
		if l.name == spec.Kind {
			k = l
		}
	}
	if bc.driver == nil || k.open == nil {
		t.Fatalf("unknown backend %q or lock %q", spec.Backend, spec.Kind)
	}
	s := lockSession(t, bc.driver(t, spec.Addrs), session.WithTTL(spec.TTL))
	ctx, cancel := context.WithTimeout(context.Background(), lockBound)
	defer cancel()
	data, err := bc.driver(t, spec.Addrs).Open(ctx, 30*time.Second)
	if err != nil {
		t.Fatalf("open the counter's connection: %v", err)
	}
	t.Cleanup(func() { data.Close(context.Background()) })
	say := func(verb string, args ...any) { fmt.Println(append([]any{lockChildMark, verb}, args...)...) }

	g := mustLock(t, k.open(t, s, spec.Lock))
	say("TOKEN", g.Token())
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-g.Done()
		say("DONE", errors.Is(g.Err(), recipes.ErrLost), g.Err())
	}()
	in := bufio.NewScanner(os.Stdin)
	for i := 1; ; i++ {
		if err := fencedSet(s, g, spec.Fenced, fmt.Sprintf("child:%d:%d", g.Token(), i)); err != nil {
			say("FENCED", "refused", serverRefused(err), err)
		} else {
			say("FENCED", "ok")
		}
		if err := unawareSet(data, g, spec.Fenced, fmt.Sprintf("child:%d:%d:unaware", g.Token(), i)); err != nil {
			say("UNAWARE", "refused", serverRefused(err), err)
		} else {
			say("UNAWARE", "ok")
		}
		v, err := readCounter(data, spec.Counter)
		if err != nil {
			t.Fatalf("read the counter: %v", err)
		}
		say("READ", v)
		if !in.Scan() {
			break
		}
		if err := writeCounter(data, spec.Counter, v+1); err != nil {
			t.Fatalf("write the counter: %v", err)
		}
		say("WROTE", v+1)
	}
	uctx, ucancel := context.WithTimeout(context.Background(), lockBound)
	defer ucancel()
	if err := g.Unlock(uctx); err != nil {
		// Documented: Unlock of a lost guard returns nil, even when the
		// connection knows of the expiry before the session does.
		t.Errorf("Unlock: %v", err)
		say("UNLOCK", "failed", err)
	} else {
		say("UNLOCK", "ok")
	}
	<-done
}

// lockChild is a running TestLockHolderChildProcess.
type lockChild struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan []string // protocol lines but DONE, closed at the end of output
	done   chan struct{} // closed at DONE
	doneAt time.Time
	doneF  []string
	exited chan struct{} // closed once the child is reaped
	err    error         // the child's exit, set before exited is closed
	quit   chan struct{}
	mu     sync.Mutex
	output strings.Builder // everything else it printed
}

// startLockChild starts the child. It is always reaped: when the test ends
// it is continued and killed if it has not exited.
func startLockChild(t *testing.T, spec lockChildSpec) *lockChild {
	t.Helper()
	js, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	c := &lockChild{t: t, lines: make(chan []string, 64), done: make(chan struct{}), exited: make(chan struct{}), quit: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestLockHolderChildProcess$", "-test.count=1", "-test.timeout=2m")
	c.cmd.Env = append(os.Environ(), lockChildEnv+"="+string(js))
	c.cmd.Stderr = c
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start the child: %v", err)
	}
	go c.read(stdout)
	t.Cleanup(func() {
		close(c.quit)
		c.stdin.Close()
		select {
		case <-c.exited:
		default:
			c.cmd.Process.Signal(syscall.SIGCONT)
			c.cmd.Process.Kill()
			<-c.exited
		}
	})
	return c
}

// Write collects the child's stderr.
func (c *lockChild) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.output.Write(b)
}

func (c *lockChild) read(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) < 2 || f[0] != lockChildMark:
			c.Write([]byte(sc.Text() + "\n"))
		case f[1] == "DONE":
			c.doneAt, c.doneF = time.Now(), f[1:]
			close(c.done)
		default:
			select {
			case c.lines <- f[1:]:
			case <-c.quit:
			}
		}
	}
	close(c.lines)
	c.err = c.cmd.Wait()
	close(c.exited)
}

// fail ends the test with the child's output.
func (c *lockChild) fail(format string, args ...any) {
	c.t.Helper()
	c.mu.Lock()
	out := c.output.String()
	c.mu.Unlock()
	c.t.Fatalf("%s\nthe child's other output:\n%s", fmt.Sprintf(format, args...), out)
}

// expect returns the child's next protocol line, which must be verb.
func (c *lockChild) expect(verb string) []string {
	c.t.Helper()
	select {
	case f, ok := <-c.lines:
		if !ok {
			<-c.exited
			c.fail("the child ended (%v), want %s", c.err, verb)
		}
		if f[0] != verb {
			c.fail("the child said %q, want %s", f, verb)
		}
		return f
	case <-time.After(lockBound):
		c.fail("the child did not say %s within %v", verb, lockBound)
	}
	return nil
}

// number returns the number in the child's next line, which must be verb.
func (c *lockChild) number(verb string) int64 {
	c.t.Helper()
	f := c.expect(verb)
	n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil {
		c.fail("%q: %v", f, err)
	}
	return n
}

func (c *lockChild) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.fail("write to the child: %v", err)
	}
}

func (c *lockChild) signal(sig os.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.fail("%v the child: %v", sig, err)
	}
}

// TestLockReliabilityPausedHolder (row 4): the holder is a child process
// (T = 3s). It takes the lock, then loops: a fenced write (fence.Set with
// its guard), an unfenced read-modify-write of a counter. After two
// iterations, between its read and its write, the child is stopped with
// SIGSTOP for 2T. Meanwhile a holder in this process acquires with a
// larger token, writes the fenced node and increments the counter 3 times;
// the "go" for the child's pending write is queued on its stdin, then the
// child is continued with SIGCONT. Asserted: the child's write after resume
// lands on the counter (the negative control: its final value is the value
// the child read + 1, below the acknowledged increments: lost updates); its
// fenced writes after resume are refused (0 stale accepts): its own
// fence.Set, and the write it would make as paused (its guard's fences, Err
// not yet heard of) through a live connection, which must be the server's
// refusal (backend.ErrGuardFailed; accepted before the pause: the positive
// control); the fenced node keeps this process's write; the child's Guard reports lost within
// the lost bound of resume; this process's Guard and node are intact.
func TestLockReliabilityPausedHolder(t *testing.T) {
	const T = 3 * time.Second
	for _, bc := range backendCases {
		for _, k := range lockRecipes {
			t.Run(bc.name+"/"+k.name, func(t *testing.T) {
				t.Parallel()
				testPausedHolder(t, bc, k, T)
			})
		}
	}
}

func testPausedHolder(t *testing.T, bc backendCase, k lockRecipe, T time.Duration) {
	addrs := sharedAddrs(t, bc.name)
	drv := bc.driver(t, addrs)
	data := observerConn(t, drv)
	root := faultRoot(t)
	spec := lockChildSpec{Backend: bc.name, Kind: k.name, Addrs: addrs, TTL: T,
		Lock: root + "/lock", Counter: root + "/counter", Fenced: root + "/fenced"}
	relNode(t, data, spec.Counter, "0")
	relNode(t, data, spec.Fenced, "")
	child := startLockChild(t, spec)
	childToken := child.number("TOKEN")
	acked := 0
	var read int64
	for i := 1; ; i++ {
		if f := child.expect("FENCED"); f[1] != "ok" {
			child.fail("the child's fenced write %d before the pause: %q", i, f)
		}
		// The positive control of the unaware write: while the guard is
		// current the server accepts it.
		if f := child.expect("UNAWARE"); f[1] != "ok" {
			child.fail("the child's unaware fenced write %d before the pause: %q", i, f)
		}
		read = child.number("READ")
		if i == 3 {
			break
		}
		child.send("go")
		child.number("WROTE")
		acked++
	}

	// The child has read the counter and waits to write read+1.
	stopped := time.Now()
	child.signal(syscall.SIGSTOP)
	ps := lockSession(t, drv)
	g := mustLock(t, k.open(t, ps, spec.Lock))
	granted := time.Since(stopped)
	if g.Token() <= childToken {
		t.Fatalf("token %d granted after the child's %d", g.Token(), childToken)
	}
	mine := fmt.Sprintf("parent:%d", g.Token())
	if err := fencedSet(ps, g, spec.Fenced, mine); err != nil {
		t.Fatalf("fenced write of the new holder: %v", err)
	}
	const increments = 3
	for range increments {
		v, err := readCounter(data, spec.Counter)
		if err == nil {
			err = writeCounter(data, spec.Counter, v+1)
		}
		if err != nil {
			t.Fatalf("increment: %v", err)
		}
		acked++
	}
	<-time.After(time.Until(stopped.Add(2 * T))) // the pause lasts 2T
	child.send("go")
	resumed := time.Now()
	child.signal(syscall.SIGCONT)
	if wrote := child.number("WROTE"); wrote != read+1 {
		t.Fatalf("the child wrote %d after resuming, want %d", wrote, read+1)
	}
	acked++
	// The child's own fence.Set must not write (refused locally once its
	// guard knows, or by the server, or failed on its expired session);
	// the write of the child as it was when paused, sent through a live
	// connection, must reach the server and be refused there.
	staleAccepted := 0
	own := child.expect("FENCED")
	if own[1] == "ok" {
		staleAccepted++
	}
	unaware := child.expect("UNAWARE")
	if unaware[1] == "ok" {
		staleAccepted++
	}
	child.number("READ")
	child.stdin.Close()
	select {
	case <-child.done:
	case <-time.After(lockBound):
		child.fail("the child's guard did not end")
	}
	select {
	case <-child.exited:
		if child.err != nil {
			child.fail("the child failed: %v", child.err)
		}
	case <-time.After(lockBound):
		child.fail("the child did not exit")
	}
	if f := child.expect("UNLOCK"); f[1] != "ok" {
		t.Errorf("%s %s: Unlock of the child's lost guard returned an error (documented: nil): %s", bc.name, k.name, strings.Join(f[2:], " "))
	}
	lostAfter := child.doneAt.Sub(resumed).Round(time.Millisecond)
	if child.doneF[1] != "true" || lostAfter > bc.lostBound(T)+slack {
		t.Fatalf("the child's guard ended %v after resuming (documented bound %v): %q", lostAfter, bc.lostBound(T), child.doneF)
	}
	if staleAccepted > 0 {
		t.Fatalf("the fenced node accepted %d writes of the paused holder after token %d: the child said %q and %q", staleAccepted, g.Token(), strings.Join(own, " "), strings.Join(unaware, " "))
	}
	if len(unaware) < 3 || unaware[2] != "true" {
		t.Fatalf("the paused holder's unaware write was not refused by the server (want fence.ErrStale and backend.ErrGuardFailed): the child said %q", strings.Join(unaware, " "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), lockBound)
	defer cancel()
	if n, err := data.Get(ctx, spec.Fenced); err != nil || string(n.Data) != mine {
		t.Fatalf("fenced node: %q (%v), want %q", n.Data, err, mine)
	}
	final, err := readCounter(data, spec.Counter)
	if err != nil {
		t.Fatal(err)
	}
	// The negative control: the harness must see the unfenced counter
	// corrupted.
	if final != read+1 || final >= int64(acked) {
		t.Fatalf("unfenced counter %d after %d acknowledged increments; want %d, lost updates", final, acked, read+1)
	}
	if err := g.Err(); err != nil {
		t.Fatalf("the new holder's guard ended: %v", err)
	}
	sameHolder(t, data, g, ps.ID())
	t.Logf("BOUND %s %s SIGSTOP (T=%v): new holder granted %v after the stop; paused %v; the child's guard lost %v after SIGCONT (%s); fenced node: 0 of 2 stale writes accepted (the unaware one refused by the server: %s; the own one: %s); unfenced counter %d after %d acknowledged increments (%d lost)",
		bc.name, k.name, T, granted.Round(time.Millisecond), resumed.Sub(stopped).Round(time.Millisecond), lostAfter, strings.Join(child.doneF[2:], " "), strings.Join(unaware[3:], " "), strings.Join(own[1:], " "), final, acked, int64(acked)-final)
	mustUnlock(t, g)
	noLeftovers(t, data, spec.Lock)
}
