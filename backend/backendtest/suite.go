// Package backendtest is the conformance suite of the backend seam. Every
// driver runs it from a test:
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T) backend.Driver {
//			d := newDriver(t)
//			t.Cleanup(func() { d.Close() })
//			return d
//		})
//	}
//
// Each subtest gets a fresh Driver and a root path of its own,
// "/coordkit-conformance/<uuid>", that it never creates itself (nodes below
// it create it as a parent where the backend has parents). The suite asserts
// only what the doc comments of package backend promise on every backend;
// where they leave a choice to the driver (the Version stamp, etcd's
// sequential suffix, when ZooKeeper reaps an empty container) it does not
// look.
//
// # What a subtest leaves behind
//
// A subtest deletes every node it created. Then, from a fresh Conn, it
// checks with Leftovers that nothing it wrote is left: a node may remain
// below the root only if it has no data and no owner, and the same holds for
// everything below it. That admits the empty container parents that
// ZooKeeper reaps later (every minute by default, see
// znode.container.checkIntervalMs), and nothing else, because every node the
// suite creates explicitly carries data. Last, Cleanup deletes everything
// left, parents included.
//
// # Limits
//
// The suite runs its subtests one after another, never in parallel. It
// checks no goroutine leaks itself, because the Driver under test may share
// long-lived goroutines (a server, a client pool) across subtests: run the
// driver's tests under goleak.VerifyTestMain. Two Drivers from newDriver may
// share a store (real servers) or not (backend/memory); the suite relies on
// neither.
//
// # Faults
//
// Run injects no faults. RunFaults (faults.go) runs a second suite, on a
// driver and a [Faults] that injects disconnects and expiry into its
// sessions, and asserts what package backend promises across them: a short
// disconnect keeps the session, its ephemeral nodes and (or loses, with
// EventLost) its watches; an expired session stays dead; Close of a
// disconnected session is bounded and does not report success. How a fault is injected is up to the
// caller: backend/memory's Driver does it in process, the integration
// package through a TCP proxy in front of a real server. Lost replies and
// stalls, which not every backend can be made to suffer at a chosen moment,
// are not covered by either suite; the drivers' own tests inject them.
package backendtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/coordkit/coordkit/backend"
)

// Options tune the suite. The zero value gives the defaults.
type Options struct {
	// TTL is the session timeout of every session the suite opens. The
	// default, 4s, keeps real servers' ping traffic brisk.
	TTL time.Duration
	// Timeout bounds each subtest's calls and each wait for an event or a
	// state change. Default 30s: generous, because a wait that times out
	// means a failed test, never a slow one.
	Timeout time.Duration
}

// Root is the parent of every subtest's root path.
const Root = "/coordkit-conformance"

// Run runs the conformance suite against the drivers newDriver returns, with
// the default Options. newDriver is called at least once per subtest and
// must register the driver's Close with t.Cleanup.
func Run(t *testing.T, newDriver func(t *testing.T) backend.Driver) {
	RunWithOptions(t, newDriver, Options{})
}

// RunWithOptions is Run with Options.
func RunWithOptions(t *testing.T, newDriver func(t *testing.T) backend.Driver, opts Options) {
	s := &suite{newDriver: newDriver, opts: opts.withDefaults()}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { s.run(t, tc.fn) })
	}
}

// withDefaults fills in the defaults of the zero fields.
func (o Options) withDefaults() Options {
	if o.TTL <= 0 {
		o.TTL = 4 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	return o
}

var cases = []struct {
	name string
	fn   func(e *env)
}{
	{"InvalidInput", testInvalidInput},
	{"Create", testCreate},
	{"Tokens", testTokens},
	{"SequentialOrder", testSequentialOrder},
	{"CreateAndList", testCreateAndList},
	{"CreateAndWatch", testCreateAndWatch},
	{"Children", testChildren},
	{"Versions", testVersions},
	{"GuardedSet", testGuardedSet},
	{"ParentStamps", testParentStamps},
	{"Watch", testWatch},
	{"WatchChildren", testWatchChildren},
	{"SessionClose", testSessionClose},
	{"Events", testEvents},
	{"DriverClose", testDriverClose},
	{"Concurrency", testConcurrency},
	{"Context", testContext},
}

type suite struct {
	newDriver func(t *testing.T) backend.Driver // nil in the fault suite
	opts      Options
}

// env is one subtest's world.
type env struct {
	t      *testing.T
	s      *suite
	d      backend.Driver // the driver the leftover check uses
	faults Faults         // the fault suite's injector (nil in Run's suite)
	root   string
	ctx    context.Context // bounds the subtest

	mu   sync.Mutex
	dirs map[string]bool // every parent of a path built by path
}

func (s *suite) run(t *testing.T, fn func(e *env)) {
	s.runOn(t, s.newDriver(t), nil, fn)
}

// runOn runs fn as one subtest on d (and f, in the fault suite).
func (s *suite) runOn(t *testing.T, d backend.Driver, f Faults, fn func(e *env)) {
	e := &env{
		t:      t,
		s:      s,
		d:      d,
		faults: f,
		root:   Root + "/" + uuid.NewString(),
		dirs:   map[string]bool{},
	}
	var cancel context.CancelFunc
	e.ctx, cancel = context.WithTimeout(context.Background(), s.opts.Timeout)
	t.Cleanup(cancel)
	// Cleanups run last-in first-out: finish runs after the Conns that fn
	// opens are closed, and before the driver is.
	t.Cleanup(e.finish)
	fn(e)
}

// path returns root + "/" + elems joined by "/", and records every
// directory on the way for the leftover check.
func (e *env) path(elems ...string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.root
	for _, el := range elems {
		e.dirs[p] = true
		p += "/" + el
	}
	return p
}

// finish checks, from a fresh Conn, that the subtest left nothing behind,
// then deletes what is left.
func (e *env) finish() {
	ctx, cancel := context.WithTimeout(context.Background(), e.s.opts.Timeout)
	defer cancel()
	c, err := e.d.Open(ctx, e.s.opts.TTL)
	if err != nil {
		e.t.Errorf("leftover check: Open: %v", err)
		return
	}
	defer func() {
		if err := c.Close(ctx); err != nil {
			e.t.Errorf("leftover check: Close: %v", err)
		}
		drain(c.Events(), e.s.opts.Timeout)
	}()
	e.mu.Lock()
	dirs := make([]string, 0, len(e.dirs)+1)
	dirs = append(dirs, e.root)
	for d := range e.dirs {
		dirs = append(dirs, d)
	}
	e.mu.Unlock()
	left, err := Leftovers(ctx, c, dirs...)
	if err != nil {
		e.t.Errorf("leftover check: %v", err)
	}
	if len(left) > 0 {
		e.t.Errorf("nodes left behind: %v", left)
	}
	Cleanup(e.t, c, dirs...)
}

// open opens a session for the subtest. At the end of the subtest it is
// closed (a second Close must succeed too) and its Events must run from
// StateConnected to StateClosed and then be closed.
func (e *env) open() backend.Conn {
	e.t.Helper()
	c, err := e.d.Open(e.ctx, e.s.opts.TTL)
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), e.s.opts.Timeout)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			e.t.Errorf("Close session %s at the end: %v", c.SessionID(), err)
		}
		evs, closed := drain(c.Events(), e.s.opts.Timeout)
		if !closed {
			e.t.Errorf("session %s: Events not closed %v after Close (got %v)", c.SessionID(), e.s.opts.Timeout, states(evs))
			return
		}
		if err := checkLife(evs); err != nil {
			e.t.Errorf("session %s: %v", c.SessionID(), err)
		}
	})
	return c
}

// drain reads events until the channel is closed or timeout passes.
func drain(ch <-chan backend.ConnEvent, timeout time.Duration) (evs []backend.ConnEvent, closed bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return evs, true
			}
			evs = append(evs, ev)
		case <-timer.C:
			return evs, false
		}
	}
}

// checkLife checks a whole session's events: StateConnected first, then only
// StateDisconnected and StateReconnected, and StateClosed last.
func checkLife(evs []backend.ConnEvent) error {
	if len(evs) < 2 || evs[0].State != backend.StateConnected || evs[len(evs)-1].State != backend.StateClosed {
		return fmt.Errorf("events %v: want Connected first and Closed last", states(evs))
	}
	for _, ev := range evs[1 : len(evs)-1] {
		if ev.State != backend.StateDisconnected && ev.State != backend.StateReconnected {
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

func states(evs []backend.ConnEvent) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.State.String()
	}
	return out
}

// data is what the suite writes: never empty, so Leftovers sees it.
func data(s string) []byte { return []byte("conformance:" + s) }

func (e *env) create(c backend.Conn, path, content string, opts backend.CreateOptions) backend.Node {
	e.t.Helper()
	n, err := c.Create(e.ctx, path, data(content), opts)
	if err != nil {
		e.t.Fatalf("Create(%s, %+v): %v", path, opts, err)
	}
	return n
}

func (e *env) get(c backend.Conn, path string) backend.Node {
	e.t.Helper()
	n, err := c.Get(e.ctx, path)
	if err != nil {
		e.t.Fatalf("Get(%s): %v", path, err)
	}
	return n
}

func (e *env) set(c backend.Conn, path, content string) backend.Node {
	e.t.Helper()
	n, err := c.Set(e.ctx, path, data(content), backend.AnyVersion)
	if err != nil {
		e.t.Fatalf("Set(%s): %v", path, err)
	}
	return n
}

func (e *env) del(c backend.Conn, paths ...string) {
	e.t.Helper()
	for _, p := range paths {
		if err := c.Delete(e.ctx, p, backend.AnyVersion); err != nil {
			e.t.Fatalf("Delete(%s): %v", p, err)
		}
	}
}

func (e *env) children(c backend.Conn, parent string) []backend.Node {
	e.t.Helper()
	kids, err := c.Children(e.ctx, parent)
	if err != nil {
		e.t.Fatalf("Children(%s): %v", parent, err)
	}
	return kids
}

func (e *env) watch(c backend.Conn, path string) (backend.Node, bool, *backend.Watch) {
	e.t.Helper()
	n, ok, w, err := c.Watch(e.ctx, path)
	if err != nil {
		e.t.Fatalf("Watch(%s): %v", path, err)
	}
	e.t.Cleanup(w.Stop)
	return n, ok, w
}

// watchVisible watches a node another session has just created. On a
// ZooKeeper ensemble c may talk to a member that has not applied that create
// yet (a session reads its own writes at once, others' only eventually), so
// it waits, by watch, until the node is visible to c, then returns a watch
// armed on the existing node.
func (e *env) watchVisible(c backend.Conn, path string) (backend.Node, *backend.Watch) {
	e.t.Helper()
	for {
		n, ok, w := e.watch(c, path)
		if ok {
			return n, w
		}
		if ev := e.next(w, "Watch of a node created by another session, until it is visible"); ev.Type != backend.EventCreated {
			e.t.Fatalf("Watch(%s) of a node not yet visible: got %v, want Created", path, ev.Type)
		}
	}
}

// getVisible reads a node another session may have just created: like
// watchVisible, it waits until c's member has applied the create.
func (e *env) getVisible(c backend.Conn, path string) backend.Node {
	e.t.Helper()
	n, w := e.watchVisible(c, path)
	w.Stop()
	return n
}

// gone checks that a node another session deleted (or whose session ended)
// is gone as c sees it, waiting by watch for c's member to apply the delete.
func (e *env) gone(c backend.Conn, path, what string) {
	e.t.Helper()
	_, ok, w := e.watch(c, path)
	if ok {
		e.expect(w, backend.EventDeleted, path, what)
	}
	w.Stop()
	_, err := c.Get(e.ctx, path)
	e.wantErr(err, backend.ErrNoNode, what)
}

func (e *env) watchChildren(c backend.Conn, parent string) ([]backend.Node, *backend.Watch) {
	e.t.Helper()
	kids, w, err := c.WatchChildren(e.ctx, parent)
	if err != nil {
		e.t.Fatalf("WatchChildren(%s): %v", parent, err)
	}
	e.t.Cleanup(w.Stop)
	return kids, w
}

// next waits for w's event.
func (e *env) next(w *backend.Watch, what string) backend.WatchEvent {
	e.t.Helper()
	timer := time.NewTimer(e.s.opts.Timeout)
	defer timer.Stop()
	select {
	case ev, ok := <-w.C():
		if !ok {
			e.t.Fatalf("%s: watch channel closed without an event", what)
		}
		return ev
	case <-timer.C:
		e.t.Fatalf("%s: no watch event within %v", what, e.s.opts.Timeout)
	}
	panic("unreachable")
}

// expect waits for w's event and checks its type and path.
func (e *env) expect(w *backend.Watch, typ backend.EventType, path, what string) {
	e.t.Helper()
	ev := e.next(w, what)
	if ev.Type != typ || ev.Path != path {
		e.t.Fatalf("%s: got %v %q (err %v), want %v %q", what, ev.Type, ev.Path, ev.Err, typ, path)
	}
}

// quiet fails if w holds an event now. A closed channel is no event.
func (e *env) quiet(w *backend.Watch, what string) {
	e.t.Helper()
	select {
	case ev, ok := <-w.C():
		if ok {
			e.t.Errorf("%s: unexpected watch event %v %q", what, ev.Type, ev.Path)
		}
	default:
	}
}

// wantErr fails unless errors.Is(err, target).
func (e *env) wantErr(err, target error, what string) {
	e.t.Helper()
	if !errors.Is(err, target) {
		e.t.Errorf("%s: got error %v, want %v", what, err, target)
	}
}

func paths(nodes []backend.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Path
	}
	return out
}

// checkListing checks what Children promises about each listed node: only
// Name, Path, Seq, Sequential and (where the backend's listing carries it)
// Token set, Name the last element of Path.
func (e *env) checkListing(parent string, kids []backend.Node) {
	e.t.Helper()
	for _, k := range kids {
		if k.Path != parent+"/"+k.Name || strings.Contains(k.Name, "/") {
			e.t.Errorf("Children(%s): node %q named %q", parent, k.Path, k.Name)
		}
		if k.Data != nil || k.Version != 0 || k.Owner != "" {
			e.t.Errorf("Children(%s): %s has fields Children does not set: %+v", parent, k.Name, k)
		}
	}
}

// checkOrder fails unless kids' Seq strictly increase by backend.SeqLess.
func (e *env) checkOrder(what string, kids []backend.Node) {
	e.t.Helper()
	for i := 1; i < len(kids); i++ {
		a, b := kids[i-1], kids[i]
		if !a.Sequential || !b.Sequential || !backend.SeqLess(a.Seq, b.Seq) || backend.SeqLess(b.Seq, a.Seq) {
			e.t.Errorf("%s: %s (seq %d, sequential %v) listed before %s (seq %d, sequential %v)", what, a.Name, a.Seq, a.Sequential, b.Name, b.Seq, b.Sequential)
		}
	}
}

// samePaths fails unless got lists exactly want, in order.
func (e *env) samePaths(what string, got []backend.Node, want ...string) {
	e.t.Helper()
	if g := paths(got); !slices.Equal(g, want) {
		e.t.Errorf("%s: got %q, want %q", what, g, want)
	}
}
