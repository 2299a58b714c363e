package backendtest

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
)

// Faults opens sessions on one store and injects faults into them, for
// RunFaults. Its methods are called from the test's goroutine and fail t
// (t.Fatal) when the fault cannot be injected.
//
// backend/memory's Driver injects its faults itself; on a real server a
// fault is injected in the network, for example by a TCP proxy that only
// the session's own client goes through, so Open gives each session its own
// client and proxy.
type Faults interface {
	// Open opens a session, as Driver.Open does, on the store of the Driver
	// returned with these Faults. A fault injected into it must not reach
	// the sessions of that Driver, from which the suite watches and checks
	// what is left; whether it reaches other sessions from Open is up to the
	// implementation (each case opens one).
	Open(ctx context.Context, ttl time.Duration) (backend.Conn, error)

	// Disconnect cuts c's client off from the server: nothing goes through,
	// either way, but the session stays alive on the server until its
	// timeout runs out. The suite then waits for StateDisconnected and, in
	// most cases, calls Reconnect well within the session timeout.
	Disconnect(t testing.TB, c backend.Conn)

	// Reconnect heals a cut made by Disconnect, including after Expire: the
	// client can reach the server again. It is called at most once per
	// Disconnect, never on a Conn that was closed while cut off.
	Reconnect(t testing.TB, c backend.Conn)

	// Expire makes the server end c's session now, as its timeout running
	// out would, whether c is connected or cut off (Disconnect): the server
	// deletes the session's ephemeral nodes, and c learns of it as the
	// backend's client does (at once, or, while cut off, after Reconnect).
	Expire(t testing.TB, c backend.Conn)
}

// RunFaults runs the fault conformance suite with the default Options.
// newDriver is called once per subtest; it returns a Driver, on which the
// suite opens the sessions that watch from outside and checks that nothing
// is left behind (see the package doc), and the Faults that open the
// sessions under test on the same store and inject faults into them. It
// must register every Close with t.Cleanup.
//
// Every case asserts only what package backend's doc comments promise on
// every backend:
//
//   - Disconnect: a disconnect shorter than the session timeout is reported
//     as StateDisconnected, then StateReconnected of the same session (same
//     SessionID); the session's ephemeral node is kept throughout (as
//     another session sees); a watch armed before the disconnect fires
//     after it, for a change made while cut off and for one made after the
//     reconnect, either with that change or with EventLost (it fires "when
//     it can no longer be delivered"), never silently missing it; the Conn
//     works on, and a watch armed after the reconnect reports a change.
//   - CreateWhileDisconnected: a protected create (sequential and not)
//     issued while the client is cut off and then healed either succeeds,
//     and exactly one node with its protected name is there, owned by the
//     session, or fails with ErrConnectionLoss or the ctx's error (the
//     outcome unknown), and then at most one such node is there. (The
//     creates are started on their own goroutines while the client is cut
//     off and the cut is healed right after; nothing tells the suite that a
//     driver has sent one, so a create may reach the server only once the
//     cut has healed.)
//   - Expire: Events ends with StateExpired (StateDisconnected may come
//     first, never StateReconnected) and is closed; the session's ephemeral
//     nodes are gone, as another session and a fresh one see; its armed
//     watches end (EventLost with coordkit.ErrSessionLost, or EventDeleted
//     for a watch on its own ephemeral node); every later call fails with
//     coordkit.ErrSessionLost and writes nothing; Close then returns and
//     later calls fail with coordkit.ErrClosed.
//   - ExpireWhileDisconnected: a session expired while its client is cut
//     off is not revived by the reconnect: Events ends with StateExpired,
//     never StateReconnected, and its calls fail with
//     coordkit.ErrSessionLost.
//   - CloseWhileDisconnected: Close of a session whose client stays cut off
//     returns, bounded by its ctx, and with an error: it cannot have ended
//     the session on the server (Close promises the ephemeral nodes deleted
//     at once; they are not), so it must not report success. The error is
//     ErrConnectionLoss or the ctx's (the contract leaves the choice to the
//     driver). Events ends with StateClosed and is closed, its watches end
//     with EventLost (coordkit.ErrClosed), every later call fails with
//     coordkit.ErrClosed and a second Close returns nil; the session's
//     ephemeral node goes once the server times the session out (within
//     Options.Timeout, which must therefore exceed the session timeout).
//     "Bounded by its ctx": within 2s of the ctx's end.
//   - CloseRightAfterCut: the same, with Close called right after the cut,
//     before the client can have noticed it (a connection gone silent).
//
// Timing: every wait is bounded by Options.Timeout and ordered by events,
// never by sleeping. A fault that takes effect late (an etcd client notices
// a cut only when keepalive replies stop, after half the TTL or so) only
// makes a case slower. Choose Options.TTL so that the client can notice a
// cut and recover from it well within the TTL.
func RunFaults(t *testing.T, newDriver func(t *testing.T) (backend.Driver, Faults)) {
	RunFaultsWithOptions(t, newDriver, Options{})
}

// RunFaultsWithOptions is RunFaults with Options.
func RunFaultsWithOptions(t *testing.T, newDriver func(t *testing.T) (backend.Driver, Faults), opts Options) {
	s := &suite{opts: opts.withDefaults()}
	for _, tc := range faultCases {
		t.Run(tc.name, func(t *testing.T) {
			d, f := newDriver(t)
			s.runOn(t, d, f, tc.fn)
		})
	}
}

var faultCases = []struct {
	name string
	fn   func(e *env)
}{
	{"Disconnect", testFaultDisconnect},
	{"CreateWhileDisconnected", testFaultCreateWhileDisconnected},
	{"Expire", testFaultExpire},
	{"ExpireWhileDisconnected", testFaultExpireWhileDisconnected},
	{"CloseWhileDisconnected", testFaultCloseWhileDisconnected},
	{"CloseRightAfterCut", testFaultCloseRightAfterCut},
}

// faulty is a session under test, from Faults.Open, with the record of every
// event read from it so far.
type faulty struct {
	e     *env
	c     backend.Conn
	id    string
	evs   []backend.ConnEvent
	ended bool // Events closed, after its terminal event
	cut   bool // Disconnect without Reconnect
	dead  bool // expired or closed by the case
}

// openFaulty opens a session with e.faults and checks that its first event
// is StateConnected. At the end of the subtest the session is closed (healed
// first if a failed case left it cut off) and its whole life is checked.
func (e *env) openFaulty() *faulty {
	e.t.Helper()
	c, err := e.faults.Open(e.ctx, e.s.opts.TTL)
	if err != nil {
		e.t.Fatalf("Faults.Open: %v", err)
	}
	f := &faulty{e: e, c: c, id: c.SessionID()}
	e.t.Cleanup(f.finish)
	f.await("Open", backend.StateConnected)
	return f
}

func (f *faulty) finish() {
	e := f.e
	if f.cut && !f.dead && e.t.Failed() {
		// The case failed with the session cut off: heal it, so that it
		// can be closed and its nodes deleted now.
		e.faults.Reconnect(e.t, f.c)
		f.cut = false
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.s.opts.Timeout)
	defer cancel()
	if err := f.c.Close(ctx); err != nil && !f.cut && !f.dead {
		e.t.Errorf("Close session %s at the end: %v", f.id, err)
	}
	if !f.ended {
		rest, closed := drain(f.c.Events(), e.s.opts.Timeout)
		f.evs = append(f.evs, rest...)
		if !closed {
			e.t.Errorf("session %s: Events not closed %v after Close (got %v)", f.id, e.s.opts.Timeout, states(f.evs))
			return
		}
		f.ended = true
	}
	if err := checkFaultLife(f.evs); err != nil {
		e.t.Errorf("session %s: %v", f.id, err)
	}
}

// checkFaultLife checks a whole session's events: StateConnected first, a
// terminal state last, and between them StateDisconnected and
// StateReconnected, each StateReconnected after a StateDisconnected.
func checkFaultLife(evs []backend.ConnEvent) error {
	if len(evs) < 2 || evs[0].State != backend.StateConnected || !evs[len(evs)-1].State.Terminal() {
		return fmt.Errorf("events %v: want Connected first and Expired or Closed last", states(evs))
	}
	cut := false
	for _, ev := range evs[1 : len(evs)-1] {
		switch ev.State {
		case backend.StateDisconnected:
			cut = true
		case backend.StateReconnected:
			if !cut {
				return fmt.Errorf("events %v: Reconnected without a Disconnected before it", states(evs))
			}
			cut = false
		default:
			return fmt.Errorf("events %v: %v in the middle", states(evs), ev.State)
		}
	}
	for _, ev := range evs {
		if ev.At.IsZero() {
			return fmt.Errorf("events %v: %v without At", states(evs), ev.State)
		}
	}
	return nil
}

// next waits for f's next event, for Options.Timeout.
func (f *faulty) next(what string) backend.ConnEvent {
	f.e.t.Helper()
	return f.nextBy(what, time.Now().Add(f.e.s.opts.Timeout))
}

// nextBy waits for f's next event until deadline.
func (f *faulty) nextBy(what string, deadline time.Time) backend.ConnEvent {
	f.e.t.Helper()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case ev, ok := <-f.c.Events():
		if !ok {
			f.ended = true
			f.e.t.Fatalf("%s: session %s: Events closed after %v", what, f.id, states(f.evs))
		}
		f.evs = append(f.evs, ev)
		return ev
	case <-timer.C:
		f.e.t.Fatalf("%s: session %s: no event in time (so far %v)", what, f.id, states(f.evs))
	}
	panic("unreachable")
}

// await reads f's events until one has state want, within Options.Timeout
// in all; every event before it must have one of the states allowed.
func (f *faulty) await(what string, want backend.ConnState, allowed ...backend.ConnState) backend.ConnEvent {
	f.e.t.Helper()
	deadline := time.Now().Add(f.e.s.opts.Timeout)
	for {
		ev := f.nextBy(what, deadline)
		if ev.State == want {
			return ev
		}
		if !containsState(allowed, ev.State) {
			f.e.t.Fatalf("%s: session %s: got %v (err %v) waiting for %v (events %v)", what, f.id, ev.State, ev.Err, want, states(f.evs))
		}
	}
}

// awaitEnd is await of a terminal state (unless it is the last event read
// already); then Events must be closed.
func (f *faulty) awaitEnd(what string, want backend.ConnState, allowed ...backend.ConnState) {
	f.e.t.Helper()
	f.dead = true
	if n := len(f.evs); n == 0 || f.evs[n-1].State != want {
		f.await(what, want, allowed...)
	}
	if f.ended {
		return
	}
	timer := time.NewTimer(f.e.s.opts.Timeout)
	defer timer.Stop()
	select {
	case ev, ok := <-f.c.Events():
		if ok {
			f.evs = append(f.evs, ev)
			f.e.t.Fatalf("%s: session %s: %v after the terminal %v", what, f.id, ev.State, want)
		}
		f.ended = true
	case <-timer.C:
		f.e.t.Fatalf("%s: session %s: Events not closed within %v of %v", what, f.id, f.e.s.opts.Timeout, want)
	}
}

// queued returns the events already delivered, without waiting.
func (f *faulty) queued() []backend.ConnEvent {
	var out []backend.ConnEvent
	for {
		select {
		case ev, ok := <-f.c.Events():
			if !ok {
				f.ended = true
				return out
			}
			f.evs = append(f.evs, ev)
			out = append(out, ev)
		default:
			return out
		}
	}
}

func containsState(states []backend.ConnState, s backend.ConnState) bool {
	for _, x := range states {
		if x == s {
			return true
		}
	}
	return false
}

// disconnect cuts f off and waits for StateDisconnected, which must be the
// next event.
func (f *faulty) disconnect() {
	f.e.t.Helper()
	f.e.faults.Disconnect(f.e.t, f.c)
	f.cut = true
	f.await("Disconnect", backend.StateDisconnected)
}

// heal ends the cut. Nothing but StateDisconnected may have come while f was
// cut off: the client could not reach the server.
func (f *faulty) heal() {
	f.e.t.Helper()
	for _, ev := range f.queued() {
		if ev.State != backend.StateDisconnected {
			f.e.t.Fatalf("session %s: %v while cut off (events %v)", f.id, ev.State, states(f.evs))
		}
	}
	if f.ended {
		f.e.t.Fatalf("session %s: Events closed while cut off (events %v)", f.id, states(f.evs))
	}
	f.e.faults.Reconnect(f.e.t, f.c)
	f.cut = false
}

// reconnect heals the cut and waits for StateReconnected of the same
// session.
func (f *faulty) reconnect() {
	f.e.t.Helper()
	f.heal()
	healed := time.Now()
	ev := f.await("Reconnect", backend.StateReconnected, backend.StateDisconnected)
	f.e.t.Logf("session %s: Reconnected %v after the heal (session timeout %v)", f.id, ev.At.Sub(healed).Round(time.Millisecond), f.c.Timeout())
	if got := f.c.SessionID(); got != f.id {
		f.e.t.Errorf("SessionID after the reconnect: %s, want %s", got, f.id)
	}
}

// watchedEvent waits for w's event after a fault: typ on path, or EventLost,
// which the contract allows for a watch that can no longer be delivered.
func (e *env) watchedEvent(w *backend.Watch, typ backend.EventType, path, what string) {
	e.t.Helper()
	ev := e.next(w, what)
	switch {
	case ev.Type == backend.EventLost:
		e.t.Logf("%s: EventLost (%v)", what, ev.Err)
	case ev.Type != typ || ev.Path != path:
		e.t.Errorf("%s: got %v %q (err %v), want %v %q or Lost", what, ev.Type, ev.Path, ev.Err, typ, path)
	}
}

// lostWith waits for w's event, which must be EventLost with err target.
func (e *env) lostWith(w *backend.Watch, target error, what string) {
	e.t.Helper()
	ev := e.next(w, what)
	if ev.Type != backend.EventLost || !errors.Is(ev.Err, target) {
		e.t.Errorf("%s: got %v %q (err %v), want Lost with %v", what, ev.Type, ev.Path, ev.Err, target)
	}
}

// callsFail checks that every call on c fails with target, and that the
// writes among them leave keep (a node other reads) as it was.
func (e *env) callsFail(c backend.Conn, target error, what string, other backend.Conn, keepPath string) {
	e.t.Helper()
	keep := e.get(other, keepPath)
	fail := func(call string, err error) {
		e.t.Helper()
		e.wantErr(err, target, call+" "+what)
	}
	p := e.path("after")
	_, err := c.Create(e.ctx, p, data("x"), backend.CreateOptions{})
	fail("Create", err)
	_, err = c.Create(e.ctx, e.path("after-eph"), data("x"), backend.CreateOptions{Ephemeral: true})
	fail("ephemeral Create", err)
	_, _, err = c.CreateAndList(e.ctx, e.path("afterq", "n-"), data("x"), backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true})
	fail("CreateAndList", err)
	_, w, err := c.CreateAndWatch(e.ctx, p, data("x"), backend.CreateOptions{})
	fail("CreateAndWatch", err)
	if w != nil {
		w.Stop()
	}
	_, err = c.Get(e.ctx, keep.Path)
	fail("Get", err)
	_, err = c.Children(e.ctx, e.root)
	fail("Children", err)
	_, err = c.Set(e.ctx, keep.Path, data("x"), backend.AnyVersion)
	fail("Set", err)
	_, err = c.GuardedSet(e.ctx, nil, keep.Path, data("x"), backend.AnyVersion)
	fail("GuardedSet", err)
	fail("Delete", c.Delete(e.ctx, keep.Path, backend.AnyVersion))
	_, _, w, err = c.Watch(e.ctx, keep.Path)
	fail("Watch", err)
	if w != nil {
		w.Stop()
	}
	_, w, err = c.WatchChildren(e.ctx, e.root)
	fail("WatchChildren", err)
	if w != nil {
		w.Stop()
	}
	if g := e.get(other, keep.Path); string(g.Data) != string(keep.Data) || g.Version != keep.Version {
		e.t.Errorf("a call %s wrote: %+v, was %+v", what, g, keep)
	}
	for _, q := range []string{p, e.path("after-eph")} {
		if _, err := other.Get(e.ctx, q); !errors.Is(err, backend.ErrNoNode) {
			e.t.Errorf("a Create %s left %s (Get: %v)", what, q, err)
		}
	}
	if kids := e.children(other, e.path("afterq")); len(kids) != 0 {
		e.t.Errorf("a CreateAndList %s left %q", what, paths(kids))
	}
}

// testFaultDisconnect: see RunFaults.
func testFaultDisconnect(e *env) {
	obs := e.open()
	f := e.openFaulty()
	c := f.c
	eph := e.create(c, e.path("eph"), "eph", backend.CreateOptions{Ephemeral: true})
	if eph.Owner != f.id {
		e.t.Errorf("ephemeral node owned by %q, session %s", eph.Owner, f.id)
	}
	during := e.create(obs, e.path("during"), "v0", backend.CreateOptions{})
	after := e.create(obs, e.path("after"), "v0", backend.CreateOptions{})
	kidsDir := e.path("kids")
	_, wDuring := e.watchVisible(c, during.Path)
	_, wAfter := e.watchVisible(c, after.Path)
	kids, wKids := e.watchChildren(c, kidsDir)
	if len(kids) != 0 {
		e.t.Fatalf("WatchChildren of a missing parent: %q", paths(kids))
	}
	if g := e.getVisible(obs, eph.Path); g.Owner != f.id || g.Token != eph.Token {
		e.t.Fatalf("ephemeral node as another session sees it: %+v, created %+v", g, eph)
	}

	f.disconnect()
	// Changes while the client is cut off. The session is alive on the
	// server: its ephemeral node stays.
	e.set(obs, during.Path, "v1")
	kid := e.create(obs, e.path("kids", "k"), "k", backend.CreateOptions{})
	if g := e.get(obs, eph.Path); g.Owner != f.id || g.Token != eph.Token {
		e.t.Errorf("ephemeral node while its client is cut off: %+v, created %+v", g, eph)
	}

	f.reconnect()
	e.set(obs, after.Path, "v1")
	e.watchedEvent(wDuring, backend.EventChanged, during.Path, "Watch armed before a disconnect, node changed while cut off")
	e.watchedEvent(wKids, backend.EventChildren, kidsDir, "WatchChildren armed before a disconnect, child added while cut off")
	e.watchedEvent(wAfter, backend.EventChanged, after.Path, "Watch armed before a disconnect, node changed after the reconnect")
	if g := e.get(obs, eph.Path); g.Owner != f.id || g.Token != eph.Token {
		e.t.Errorf("ephemeral node after the reconnect: %+v, created %+v", g, eph)
	}

	// The session works on as before.
	if g := e.get(c, eph.Path); g.Owner != f.id || g.Token != eph.Token {
		e.t.Errorf("the session's own ephemeral node after the reconnect: %+v, created %+v", g, eph)
	}
	own := e.create(c, e.path("own"), "own", backend.CreateOptions{Ephemeral: true})
	if own.Owner != f.id || own.Token <= eph.Token {
		e.t.Errorf("ephemeral node created after the reconnect: %+v, session %s, earlier token %d", own, f.id, eph.Token)
	}
	_, _, w := e.watch(c, during.Path)
	e.set(obs, during.Path, "v2")
	e.expect(w, backend.EventChanged, during.Path, "Watch armed after the reconnect, then Set")

	e.del(c, own.Path, eph.Path)
	e.del(obs, kid.Path, during.Path, after.Path)
}

// testFaultCreateWhileDisconnected: see RunFaults.
func testFaultCreateWhileDisconnected(e *env) {
	f := e.openFaulty()
	c := f.c
	type result struct {
		n   backend.Node
		err error
	}
	creates := []struct {
		dir, base, name string
		opts            backend.CreateOptions
	}{
		{e.path("q"), e.path("q", "n-"), "n-", backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true}},
		{e.path("p"), e.path("p", "lock"), "lock", backend.CreateOptions{Ephemeral: true, Protected: true}},
	}
	f.disconnect()
	results := make([]chan result, len(creates))
	started := make(chan struct{}, len(creates))
	for i, cr := range creates {
		results[i] = make(chan result, 1)
		go func() {
			started <- struct{}{}
			n, err := c.Create(e.ctx, cr.base, data("n"), cr.opts)
			results[i] <- result{n, err}
		}()
	}
	for range creates {
		<-started // the creates are on their way (or about to be)
	}
	f.reconnect()

	timer := time.NewTimer(e.s.opts.Timeout)
	defer timer.Stop()
	for i, cr := range creates {
		var r result
		select {
		case r = <-results[i]:
		case <-timer.C:
			// Unreachable unless the create ignores its ctx (e.ctx).
			e.t.Fatalf("Create %+v issued while cut off: no result within %v of the reconnect", cr.opts, e.s.opts.Timeout)
		}
		what := fmt.Sprintf("Create %+v issued while cut off", cr.opts)
		// The session reads its own writes: its listing shows whatever its
		// create did.
		kids := e.children(c, cr.dir)
		pattern := regexp.MustCompile(protectedPattern + regexp.QuoteMeta(cr.name))
		var mine []string
		for _, k := range kids {
			if pattern.MatchString(k.Name) {
				mine = append(mine, k.Path)
			}
		}
		switch {
		case r.err == nil:
			e.t.Logf("%s: created %s", what, r.n.Path)
			if !pattern.MatchString(r.n.Name) || r.n.Path != cr.dir+"/"+r.n.Name || r.n.Owner != f.id {
				e.t.Errorf("%s: node %+v, session %s", what, r.n, f.id)
			}
			e.samePaths(what+": the parent's children", kids, r.n.Path)
			if g := e.getVisible(e.open(), r.n.Path); g.Owner != f.id || g.Token != r.n.Token {
				e.t.Errorf("%s: another session reads %+v, created %+v", what, g, r.n)
			}
		case errors.Is(r.err, backend.ErrConnectionLoss), errors.Is(r.err, context.DeadlineExceeded), errors.Is(r.err, context.Canceled):
			// The outcome is unknown; protected mode still never makes two.
			e.t.Logf("%s: %v, then the parent holds %q", what, r.err, paths(kids))
			if len(kids) > 1 || len(mine) != len(kids) {
				e.t.Errorf("%s failed (%v): the parent holds %q, want at most one node of the create", what, r.err, paths(kids))
			}
			for _, p := range mine {
				if g := e.get(c, p); g.Owner != f.id {
					e.t.Errorf("%s failed (%v): %s owned by %q, session %s", what, r.err, p, g.Owner, f.id)
				}
			}
		default:
			e.t.Errorf("%s: %v, want success, ErrConnectionLoss or a ctx error", what, r.err)
		}
		if e.ctx.Err() != nil {
			e.t.Fatalf("%s: returned (%v) only when the subtest's ctx ended", what, r.err)
		}
		for _, p := range mine {
			if err := c.Delete(e.ctx, p, backend.AnyVersion); err != nil && !errors.Is(err, backend.ErrNoNode) {
				e.t.Errorf("Delete(%s): %v", p, err)
			}
		}
	}
}

// testFaultExpire: see RunFaults.
func testFaultExpire(e *env) {
	obs := e.open()
	f := e.openFaulty()
	c := f.c
	eph := e.create(c, e.path("eph"), "eph", backend.CreateOptions{Ephemeral: true})
	qdir := e.path("q")
	seq := e.create(c, e.path("q", "n-"), "n", backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true})
	keep := e.create(obs, e.path("keep"), "keep", backend.CreateOptions{})
	_, wKeep := e.watchVisible(c, keep.Path)
	_, wNone := e.watchChildren(c, e.path("none"))
	_, ok, wOwn := e.watch(c, eph.Path)
	if !ok {
		e.t.Fatalf("Watch: the session's own ephemeral node is missing")
	}
	_, wEph := e.watchVisible(obs, eph.Path)
	_, wSeq := e.watchVisible(obs, seq.Path)

	e.faults.Expire(e.t, c)
	f.dead = true
	f.awaitEnd("Expire", backend.StateExpired, backend.StateDisconnected)

	e.expect(wEph, backend.EventDeleted, eph.Path, "another session's Watch of an ephemeral node, then its session expired")
	e.expect(wSeq, backend.EventDeleted, seq.Path, "another session's Watch of an ephemeral sequential node, then its session expired")
	fresh := e.open()
	e.gone(fresh, eph.Path, "Get of an ephemeral node of an expired session, from a new session")
	e.gone(fresh, seq.Path, "Get of an ephemeral sequential node of an expired session, from a new session")
	if kids := e.children(fresh, qdir); len(kids) != 0 {
		e.t.Errorf("Children after the session expired: %q", paths(kids))
	}

	e.lostWith(wKeep, coordkit.ErrSessionLost, "the expired session's Watch of another session's node")
	e.lostWith(wNone, coordkit.ErrSessionLost, "the expired session's WatchChildren")
	if ev := e.next(wOwn, "the expired session's Watch of its own ephemeral node"); ev.Type != backend.EventDeleted && (ev.Type != backend.EventLost || !errors.Is(ev.Err, coordkit.ErrSessionLost)) {
		e.t.Errorf("the expired session's Watch of its own ephemeral node: %v (err %v), want Deleted, or Lost with ErrSessionLost", ev.Type, ev.Err)
	}

	e.callsFail(c, coordkit.ErrSessionLost, "after the session expired", obs, keep.Path)

	ctx, cancel := context.WithTimeout(e.ctx, e.s.opts.Timeout)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		e.t.Logf("Close after expiry: %v", err)
	}
	_, err := c.Get(e.ctx, keep.Path)
	e.wantErr(err, coordkit.ErrClosed, "Get after the expired session was closed")
	e.del(obs, keep.Path)
}

// ephemeralUnderWatch opens an observer session obs and a faulty session
// f, and makes an ephemeral node eph of f and a persistent node keep of
// obs; f watches keep (wKeep) and obs watches eph (wEph).
func (e *env) ephemeralUnderWatch() (obs backend.Conn, f *faulty, eph, keep backend.Node, wKeep, wEph *backend.Watch) {
	e.t.Helper()
	obs = e.open()
	f = e.openFaulty()
	eph = e.create(f.c, e.path("eph"), "eph", backend.CreateOptions{Ephemeral: true})
	keep = e.create(obs, e.path("keep"), "keep", backend.CreateOptions{})
	_, wKeep = e.watchVisible(f.c, keep.Path)
	_, wEph = e.watchVisible(obs, eph.Path)
	return obs, f, eph, keep, wKeep, wEph
}

// testFaultExpireWhileDisconnected: see RunFaults.
func testFaultExpireWhileDisconnected(e *env) {
	obs, f, eph, keep, wKeep, wEph := e.ephemeralUnderWatch()
	c := f.c

	f.disconnect()
	e.faults.Expire(e.t, c)
	f.dead = true
	e.expect(wEph, backend.EventDeleted, eph.Path, "another session's Watch of an ephemeral node, then its session expired while cut off")

	// The client may have given the session up on its own meanwhile (an
	// etcd client whose keepalive deadline passed): StateExpired may come
	// before the heal, never StateReconnected.
	for _, ev := range f.queued() {
		if ev.State != backend.StateDisconnected && ev.State != backend.StateExpired {
			e.t.Fatalf("session %s: %v while cut off (events %v)", f.id, ev.State, states(f.evs))
		}
	}
	e.faults.Reconnect(e.t, c)
	f.cut = false
	// The session is gone: contact is back, but never with StateReconnected.
	f.awaitEnd("Reconnect after the session expired", backend.StateExpired, backend.StateDisconnected)
	e.lostWith(wKeep, coordkit.ErrSessionLost, "Watch of a session that expired while cut off")
	_, err := c.Get(e.ctx, keep.Path)
	e.wantErr(err, coordkit.ErrSessionLost, "Get after the session expired while cut off")
	_, err = c.Create(e.ctx, eph.Path, data("again"), backend.CreateOptions{Ephemeral: true})
	e.wantErr(err, coordkit.ErrSessionLost, "ephemeral Create after the session expired while cut off")
	e.gone(e.open(), eph.Path, "Get of an ephemeral node of a session expired while cut off, from a new session")
	e.del(obs, keep.Path)
}

// closeWaitCtx bounds the Close of a cut-off session: it cannot reach the
// server, so it must give up when its ctx ends.
const closeWaitCtx = 2 * time.Second

// testFaultCloseWhileDisconnected: see RunFaults.
func testFaultCloseWhileDisconnected(e *env) { closeWhileCutOff(e, true) }

// testFaultCloseRightAfterCut: see RunFaults.
func testFaultCloseRightAfterCut(e *env) { closeWhileCutOff(e, false) }

// closeSlack is how much longer than its ctx a Close may take to return.
const closeSlack = 2 * time.Second

// closing waits until c's Close has begun: its calls return
// coordkit.ErrClosed. path is a node c can read.
func (e *env) closing(c backend.Conn, path string) {
	e.t.Helper()
	deadline := time.Now().Add(e.s.opts.Timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err := c.Get(ctx, path)
		cancel()
		if errors.Is(err, coordkit.ErrClosed) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("Close has not begun within %v (Get: %v)", e.s.opts.Timeout, err)
		}
	}
}

// closeWhileCutOff closes a session cut off from the server, once its
// client has reported the cut (reported) or at once, before it can have
// noticed.
func closeWhileCutOff(e *env, reported bool) {
	obs, f, eph, keep, wKeep, wEph := e.ephemeralUnderWatch()
	c := f.c

	if reported {
		f.disconnect()
	} else {
		e.faults.Disconnect(e.t, c)
		f.cut = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeWaitCtx)
	defer cancel()
	closed := make(chan error, 1)
	begin := time.Now()
	go func() { closed <- c.Close(ctx) }()
	// A Close while the first one waits for the server returns nil,
	// whatever its ctx: only the first reports whether the server was told.
	e.closing(c, keep.Path)
	ended, end := context.WithCancel(context.Background())
	end()
	if err := c.Close(ended); err != nil {
		e.t.Errorf("a Close, with its ctx done, while the first waits for the server: %v, want nil", err)
	}
	timer := time.NewTimer(e.s.opts.Timeout)
	defer timer.Stop()
	var err error
	select {
	case err = <-closed:
	case <-timer.C:
		e.t.Fatalf("Close of a cut-off session with a %v ctx: no return within %v", closeWaitCtx, e.s.opts.Timeout)
	}
	// It is not healed: the session ends on the server by its timeout.
	f.cut, f.dead = false, true
	took := time.Since(begin)
	e.t.Logf("Close while cut off: %v after %v", err, took.Round(time.Millisecond))
	if took > closeWaitCtx+closeSlack {
		e.t.Errorf("Close of a cut-off session took %v, with a %v ctx", took.Round(time.Millisecond), closeWaitCtx)
	}
	// The server was not told: a nil error would claim the session's
	// ephemeral nodes deleted, and they are not.
	if !errors.Is(err, backend.ErrConnectionLoss) && !errors.Is(err, context.DeadlineExceeded) {
		still := ""
		if _, gerr := obs.Get(e.ctx, eph.Path); gerr == nil {
			still = " (and another session still reads its ephemeral node)"
		}
		e.t.Errorf("Close while cut off: %v%s, want ErrConnectionLoss or DeadlineExceeded", err, still)
	}
	f.awaitEnd("Close while cut off", backend.StateClosed, backend.StateDisconnected)
	e.lostWith(wKeep, coordkit.ErrClosed, "Watch of a session closed while cut off")
	_, err = c.Get(e.ctx, keep.Path)
	e.wantErr(err, coordkit.ErrClosed, "Get after Close while cut off")
	_, err = c.Create(e.ctx, e.path("late"), data("late"), backend.CreateOptions{Ephemeral: true})
	e.wantErr(err, coordkit.ErrClosed, "ephemeral Create after Close while cut off")
	if err := c.Close(e.ctx); err != nil {
		e.t.Errorf("second Close: %v", err)
	}
	// The server could not be told: the session, and its ephemeral node,
	// end when the server times it out.
	e.expect(wEph, backend.EventDeleted, eph.Path, "another session's Watch of an ephemeral node, then its session was closed while cut off and timed out")
	e.gone(e.open(), eph.Path, "Get of an ephemeral node of a session closed while cut off, from a new session")
	if _, err := obs.Get(e.ctx, e.path("late")); !errors.Is(err, backend.ErrNoNode) {
		e.t.Errorf("a Create after Close left %s (Get: %v)", e.path("late"), err)
	}
	e.del(obs, keep.Path)
}
