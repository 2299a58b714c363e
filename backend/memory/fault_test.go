package memory_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/memory"
)

var (
	persistent = backend.CreateOptions{}
	ephemeral  = backend.CreateOptions{Ephemeral: true}
	lockNode   = backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true}
)

func TestDisconnectReconnect(t *testing.T) {
	w := newWorld(t)
	id := w.c.SessionID()
	eph := w.create(w.c, "/d/eph", ephemeral)
	w.create(w.other, "/d/w", persistent)
	wt := w.watch(w.c, "/d/w")
	_, wc, err := w.c.WatchChildren(ctx, "/d")
	if err != nil {
		t.Fatal(err)
	}

	if err := w.d.Disconnect(id); err != nil {
		t.Fatal(err)
	}
	ev := w.state(w.c, backend.StateDisconnected)
	wantErr(t, ev.Err, backend.ErrConnectionLoss, "Disconnected event")
	if !ev.At.Equal(w.clk.Now()) {
		t.Errorf("event At %v, fake clock %v", ev.At, w.clk.Now())
	}
	if w.d.Disconnect(id) == nil {
		t.Errorf("second Disconnect: no error")
	}
	_, err = w.c.Get(ctx, eph.Path)
	wantErr(t, err, backend.ErrConnectionLoss, "Get while disconnected")
	_, err = w.c.Create(ctx, "/d/new", nil, persistent)
	wantErr(t, err, backend.ErrConnectionLoss, "Create while disconnected")
	_, err = w.c.Create(ctx, "/d/lock-", nil, lockNode)
	wantErr(t, err, backend.ErrConnectionLoss, "protected Create while disconnected")
	if kids, _ := w.other.Children(ctx, "/d"); len(kids) != 2 {
		t.Errorf("a call while disconnected reached the server: %v", kids)
	}

	// Watches stay armed; what fires meanwhile waits for Reconnect.
	if _, err := w.other.Set(ctx, "/d/w", []byte("x"), backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	w.create(w.other, "/d/child", persistent)
	w.quiet(wt)
	w.quiet(wc)
	if s := w.d.SessionStats(id); s.Watches != 2 || s.WatchEvents != 2 {
		t.Errorf("stats while disconnected: %+v", s)
	}

	if err := w.d.Reconnect(id); err != nil {
		t.Fatal(err)
	}
	w.state(w.c, backend.StateReconnected)
	w.event(wt, backend.EventChanged)
	w.event(wc, backend.EventChildren)
	if g, err := w.c.Get(ctx, eph.Path); err != nil || g.Owner != id {
		t.Errorf("ephemeral after Reconnect: %+v, %v", g, err)
	}
	if w.clk.Timers() != 0 {
		t.Errorf("server timeout still armed after Reconnect")
	}
	w.clk.Advance(time.Hour)
	if !w.exists(eph.Path) {
		t.Errorf("session expired after Reconnect")
	}
	if w.d.Reconnect(id) == nil {
		t.Errorf("Reconnect of a connected session: no error")
	}
	w.noState(w.c)
}

func TestExpireWhileConnected(t *testing.T) {
	w := newWorld(t)
	id := w.c.SessionID()
	eph := w.create(w.c, "/e/eph", ephemeral)
	keep := w.create(w.c, "/e/keep", persistent)
	own := w.watch(w.c, keep.Path)
	seen := w.watch(w.other, eph.Path)

	if err := w.d.Expire(id); err != nil {
		t.Fatal(err)
	}
	ev := w.state(w.c, backend.StateExpired)
	wantErr(t, ev.Err, coordkit.ErrSessionLost, "Expired event")
	w.ended(w.c)
	wantErr(t, w.event(own, backend.EventLost).Err, coordkit.ErrSessionLost, "own watch at expiry")
	w.event(seen, backend.EventDeleted)
	if w.exists(eph.Path) || !w.exists(keep.Path) {
		t.Errorf("after expiry: ephemeral exists %v, persistent exists %v", w.exists(eph.Path), w.exists(keep.Path))
	}
	_, err := w.c.Get(ctx, keep.Path)
	wantErr(t, err, coordkit.ErrSessionLost, "Get after expiry")
	if w.d.Expire(id) == nil {
		t.Errorf("second Expire: no error")
	}
	if err := w.c.Close(ctx); err != nil {
		t.Errorf("Close after expiry: %v", err)
	}
	_, err = w.c.Get(ctx, keep.Path)
	wantErr(t, err, coordkit.ErrClosed, "Get after Close")
}

// A disconnected client learns of its expiry only when it reconnects.
func TestExpireWhileDisconnected(t *testing.T) {
	w := newWorld(t)
	id := w.c.SessionID()
	eph := w.create(w.c, "/e/eph", ephemeral)
	keep := w.create(w.c, "/e/keep", persistent)
	own := w.watch(w.c, keep.Path)
	seen := w.watch(w.other, eph.Path)
	if err := w.d.Disconnect(id); err != nil {
		t.Fatal(err)
	}
	w.state(w.c, backend.StateDisconnected)

	if err := w.d.Expire(id); err != nil {
		t.Fatal(err)
	}
	w.event(seen, backend.EventDeleted)
	w.noState(w.c)
	if _, err := w.other.Set(ctx, keep.Path, nil, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	w.quiet(own)
	_, err := w.c.Get(ctx, keep.Path)
	wantErr(t, err, backend.ErrConnectionLoss, "Get while disconnected and expired")

	if err := w.d.Reconnect(id); err != nil {
		t.Fatal(err)
	}
	w.state(w.c, backend.StateExpired)
	w.ended(w.c)
	wantErr(t, w.event(own, backend.EventLost).Err, coordkit.ErrSessionLost, "own watch at reconnect")
	_, err = w.c.Get(ctx, keep.Path)
	wantErr(t, err, coordkit.ErrSessionLost, "Get after the expiry was learnt")
}

// The server expires a disconnected session TTL after the disconnect, by the
// Driver's clock.
func TestServerTimeout(t *testing.T) {
	w := newWorld(t)
	id := w.c.SessionID()
	eph := w.create(w.c, "/t/eph", ephemeral)
	seen := w.watch(w.other, eph.Path)

	// A reconnect in time keeps the session, and a new disconnect restarts
	// the full timeout.
	if err := w.d.Disconnect(id); err != nil {
		t.Fatal(err)
	}
	w.state(w.c, backend.StateDisconnected)
	if w.clk.Timers() != 1 {
		t.Fatalf("%d timers armed, want the server timeout", w.clk.Timers())
	}
	w.clk.Advance(ttl - time.Second)
	if err := w.d.Reconnect(id); err != nil {
		t.Fatal(err)
	}
	w.state(w.c, backend.StateReconnected)
	if err := w.d.Disconnect(id); err != nil {
		t.Fatal(err)
	}
	w.state(w.c, backend.StateDisconnected)
	w.clk.Advance(ttl - time.Second)
	w.quiet(seen)
	if !w.exists(eph.Path) {
		t.Fatalf("session expired before its timeout")
	}

	w.clk.Advance(time.Second)
	w.event(seen, backend.EventDeleted)
	w.noState(w.c)
	if err := w.d.Reconnect(id); err != nil {
		t.Fatal(err)
	}
	w.state(w.c, backend.StateExpired)
	w.ended(w.c)
}

// A Conn closed while disconnected is closed locally; the server keeps the
// session until it times out.
func TestCloseWhileDisconnected(t *testing.T) {
	w := newWorld(t)
	id := w.c.SessionID()
	eph := w.create(w.c, "/c/eph", ephemeral)
	seen := w.watch(w.other, eph.Path)
	own := w.watch(w.c, eph.Path)
	if err := w.d.Disconnect(id); err != nil {
		t.Fatal(err)
	}
	w.state(w.c, backend.StateDisconnected)

	wantErr(t, w.c.Close(ctx), backend.ErrConnectionLoss, "Close while disconnected")
	w.state(w.c, backend.StateClosed)
	w.ended(w.c)
	wantErr(t, w.event(own, backend.EventLost).Err, coordkit.ErrClosed, "own watch at Close")
	_, err := w.c.Get(ctx, eph.Path)
	wantErr(t, err, coordkit.ErrClosed, "Get after Close")
	if err := w.c.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if w.d.Reconnect(id) == nil || w.d.FailNextReply(id) == nil {
		t.Errorf("Reconnect or FailNextReply of a closed session: no error")
	}
	if !w.exists(eph.Path) {
		t.Fatalf("the server dropped the session at a Close it never heard")
	}
	w.clk.Advance(ttl)
	w.event(seen, backend.EventDeleted)
	if w.d.Expire(id) == nil {
		t.Errorf("Expire of a timed-out session: no error")
	}
}

func TestFailNextReply(t *testing.T) {
	w := newWorld(t)
	id := w.c.SessionID()
	if w.d.FailNextReply("ffff") == nil {
		t.Errorf("FailNextReply of an unknown session: no error")
	}

	// A protected create finds its node after the lost reply: one node,
	// with the create, the listing and the read as requests.
	before := w.d.SessionStats(id).Requests
	if err := w.d.FailNextReply(id); err != nil {
		t.Fatal(err)
	}
	n, err := w.c.Create(ctx, "/f/lock-", []byte("me"), lockNode)
	if err != nil {
		t.Fatalf("protected create after a lost reply: %v", err)
	}
	if kids, _ := w.other.Children(ctx, "/f"); len(kids) != 1 || kids[0].Path != n.Path {
		t.Errorf("after the recovered create: %v, returned %s", kids, n.Path)
	}
	if g, _ := w.other.Get(ctx, n.Path); g.Token != n.Token || g.Owner != id || string(g.Data) != "me" {
		t.Errorf("recovered node %+v, on the server %+v", n, g)
	}
	if got := w.d.SessionStats(id).Requests - before; got != 3 {
		t.Errorf("requests for a recovered create: %d, want 3", got)
	}

	// CreateAndList recovers too, and lists the node.
	if err := w.d.FailNextReply(id); err != nil {
		t.Fatal(err)
	}
	n2, kids, err := w.c.CreateAndList(ctx, "/f/lock-", nil, lockNode)
	if err != nil || len(kids) != 2 || kids[1].Path != n2.Path || kids[0].Path != n.Path {
		t.Errorf("CreateAndList after a lost reply: %s, %v, %v", n2.Path, kids, err)
	}

	// Any other write is applied and reports ErrConnectionLoss.
	if err := w.d.FailNextReply(id); err != nil {
		t.Fatal(err)
	}
	_, err = w.c.Create(ctx, "/f/plain", nil, persistent)
	wantErr(t, err, backend.ErrConnectionLoss, "plain create after a lost reply")
	if !w.exists("/f/plain") {
		t.Errorf("the plain create was not applied")
	}
	if _, err := w.c.Create(ctx, "/f/plain2", nil, persistent); err != nil {
		t.Errorf("only one reply is lost: %v", err)
	}
	if err := w.d.FailNextReply(id); err != nil {
		t.Fatal(err)
	}
	_, err = w.c.Set(ctx, "/f/plain", []byte("new"), backend.AnyVersion)
	wantErr(t, err, backend.ErrConnectionLoss, "Set after a lost reply")
	if g, _ := w.other.Get(ctx, "/f/plain"); string(g.Data) != "new" {
		t.Errorf("the Set was not applied: %q", g.Data)
	}
	if err := w.d.FailNextReply(id); err != nil {
		t.Fatal(err)
	}
	_, err = w.c.Create(ctx, "/f/plain", nil, persistent)
	wantErr(t, err, backend.ErrConnectionLoss, "a refused create's lost reply")
	if err := w.d.FailNextReply(id); err != nil {
		t.Fatal(err)
	}
	wantErr(t, w.c.Delete(ctx, "/f/plain", backend.AnyVersion), backend.ErrConnectionLoss, "Delete after a lost reply")
	if w.exists("/f/plain") {
		t.Errorf("the Delete was not applied")
	}
	// Reads do not consume the lost reply.
	if err := w.d.FailNextReply(id); err != nil {
		t.Fatal(err)
	}
	if _, err := w.c.Get(ctx, "/f/plain2"); err != nil {
		t.Errorf("Get with a lost reply pending: %v", err)
	}
	wantErr(t, w.c.Delete(ctx, "/f/plain2", backend.AnyVersion), backend.ErrConnectionLoss, "the write after a read")
}

// A stalled session's calls wait: one whose ctx ends never reaches the
// server; the others are served at Unstall; the end of the session
// releases them with its error.
func TestStall(t *testing.T) {
	w := newWorld(t)
	id := w.c.SessionID()
	if w.d.Stall("ffff") == nil {
		t.Errorf("Stall of an unknown session: no error")
	}
	if n := w.d.Stalled("ffff"); n != 0 {
		t.Errorf("Stalled of an unknown session: %d", n)
	}
	if w.d.Unstall(id) == nil {
		t.Errorf("Unstall of a session not stalled: no error")
	}
	if err := w.d.Stall(id); err != nil {
		t.Fatal(err)
	}
	before := w.d.SessionStats(id).Requests

	// A call whose ctx ends while it waits gives up and stops counting.
	short, cancel := context.WithCancel(ctx)
	defer cancel()
	gaveUp := make(chan error, 1)
	go func() {
		_, err := w.c.Create(short, "/s/gave-up", nil, persistent)
		gaveUp <- err
	}()
	waitStalled(t, w.d, id, 1, "the create to wait")
	cancel()
	select {
	case err := <-gaveUp:
		wantErr(t, err, context.Canceled, "a stalled create whose ctx ended")
	case <-time.After(wait):
		t.Fatal("a stalled create did not return when its ctx ended")
	}
	if n := w.d.Stalled(id); n != 0 {
		t.Errorf("Stalled after the only waiting call gave up: %d, want 0", n)
	}

	type created struct {
		n   backend.Node
		err error
	}
	done := make(chan created, 1)
	go func() {
		n, err := w.c.Create(ctx, "/s/waited", nil, ephemeral)
		done <- created{n, err}
	}()
	waitStalled(t, w.d, id, 1, "the create to wait")
	select {
	case r := <-done:
		t.Fatalf("a stalled create returned: %+v, %v", r.n, r.err)
	default:
	}
	if n := w.d.Stalled(w.other.SessionID()); n != 0 {
		t.Errorf("Stalled of a session not stalled: %d, want 0", n)
	}
	if _, err := w.other.Get(ctx, "/s/waited"); !errors.Is(err, backend.ErrNoNode) {
		t.Errorf("the stalled create reached the server: %v", err)
	}
	if _, err := w.other.Create(ctx, "/s/other", nil, persistent); err != nil {
		t.Errorf("another session is stalled too: %v", err)
	}
	if got := w.d.SessionStats(id).Requests - before; got != 0 {
		t.Errorf("requests reached the server while stalled: %d", got)
	}
	if err := w.d.Unstall(id); err != nil {
		t.Fatal(err)
	}
	if n := w.d.Stalled(id); n != 0 {
		t.Errorf("Stalled after Unstall: %d, want 0", n)
	}
	select {
	case r := <-done:
		if r.err != nil || r.n.Path != "/s/waited" {
			t.Errorf("the create after Unstall: %+v, %v", r.n, r.err)
		}
	case <-time.After(wait):
		t.Fatal("a stalled create did not return after Unstall")
	}
	if w.exists("/s/gave-up") {
		t.Errorf("the create whose ctx ended reached the server")
	}
	if got := w.d.SessionStats(id).Requests - before; got != 1 {
		t.Errorf("requests after Unstall: %d, want 1", got)
	}

	// The session's end releases a stalled call with its error.
	if err := w.d.Stall(id); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := w.c.Get(ctx, "/s/waited")
		errc <- err
	}()
	// Expire only once the Get waits: a Get that came after the expiry
	// would fail the same way without showing that the end releases it.
	waitStalled(t, w.d, id, 1, "the Get to wait")
	if err := w.d.Expire(id); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		wantErr(t, err, coordkit.ErrSessionLost, "a stalled Get when the session expired")
	case <-time.After(wait):
		t.Fatal("the session's end did not release a stalled Get")
	}
	if n := w.d.Stalled(id); n != 0 {
		t.Errorf("Stalled of an expired session: %d, want 0", n)
	}
}

// waitStalled waits until n calls of session id wait behind a Stall
// (Driver.Stalled), failing the test if they do not within the bound.
func waitStalled(t *testing.T, d *memory.Driver, id string, n int, what string) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for d.Stalled(id) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: Stalled(%s) = %d, want %d within %v", what, id, d.Stalled(id), n, wait)
		}
		time.Sleep(time.Millisecond)
	}
}

// Sequence numbers are the parent's int32 child counter: they count deletes
// too, and wrap to negative names that SeqLess orders after the positive
// ones.
func TestSequenceNumbers(t *testing.T) {
	w := newWorld(t)
	w.create(w.c, "/s/gap/keep", persistent)
	a := w.create(w.c, "/s/gap/x-", backend.CreateOptions{Sequential: true})
	if err := w.c.Delete(ctx, a.Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	b := w.create(w.c, "/s/gap/x-", backend.CreateOptions{Sequential: true})
	if a.Name != "x-0000000001" || b.Name != "x-0000000003" || b.Seq != 3 {
		t.Errorf("sequence after a delete and a create: %s then %s (seq %d)", a.Name, b.Name, b.Seq)
	}

	for _, tc := range []struct {
		start int32
		names []string
		seqs  []int64
	}{
		{math.MaxInt32 - 1, []string{"x-2147483646", "x-2147483647", "x--2147483648", "x--2147483647"}, []int64{math.MaxInt32 - 1, math.MaxInt32, math.MinInt32, math.MinInt32 + 1}},
		{-2, []string{"x--000000002", "x--000000001", "x-0000000000", "x-0000000001"}, []int64{-2, -1, 0, 1}},
	} {
		dir := fmt.Sprintf("/s/wrap%d", tc.start)
		if err := w.d.SetNextSequence(dir, tc.start); err != nil {
			t.Fatal(err)
		}
		var made []backend.Node
		for range tc.names {
			made = append(made, w.create(w.c, dir+"/x-", backend.CreateOptions{Sequential: true}))
		}
		var names []string
		var seqs []int64
		for _, n := range made {
			names, seqs = append(names, n.Name), append(seqs, n.Seq)
		}
		if !slices.Equal(names, tc.names) || !slices.Equal(seqs, tc.seqs) {
			t.Errorf("from %d: names %q seqs %v, want %q %v", tc.start, names, seqs, tc.names, tc.seqs)
		}
		kids, err := w.c.Children(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range kids {
			if k.Path != made[i].Path || k.Seq != made[i].Seq {
				t.Errorf("from %d: Children[%d] = %s (%d), created %s (%d)", tc.start, i, k.Name, k.Seq, made[i].Name, made[i].Seq)
			}
			for _, later := range kids[i+1:] {
				if !backend.SeqLess(k.Seq, later.Seq) || backend.SeqLess(later.Seq, k.Seq) {
					t.Errorf("from %d: SeqLess does not order %s before %s", tc.start, k.Name, later.Name)
				}
			}
		}
	}
	if err := w.d.SetNextSequence("relative", 1); !errors.Is(err, coordkit.ErrInvalidPath) {
		t.Errorf("SetNextSequence with a bad path: %v", err)
	}
}

// Missing parents are containers, removed with their last child; explicit
// parents stay; ephemeral nodes take no children.
func TestContainers(t *testing.T) {
	w := newWorld(t)
	leaf := w.create(w.c, "/k/a/b/leaf", persistent)
	gone := w.watch(w.other, "/k/a/b")
	if err := w.c.Delete(ctx, leaf.Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	w.event(gone, backend.EventDeleted)
	for _, p := range []string{"/k/a/b", "/k/a", "/k"} {
		if w.exists(p) {
			t.Errorf("container %s outlived its last child", p)
		}
	}

	w.create(w.c, "/p", persistent)
	x := w.create(w.c, "/p/x", persistent)
	if err := w.c.Delete(ctx, x.Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	if !w.exists("/p") {
		t.Errorf("an explicitly created parent was removed with its last child")
	}
	wantErr(t, w.c.Delete(ctx, "/", backend.AnyVersion), coordkit.ErrInvalidPath, "Delete of the root")

	if err := w.d.SetNextSequence("/fresh", 5); err != nil {
		t.Fatal(err)
	}
	if !w.exists("/fresh") {
		t.Errorf("SetNextSequence did not create the parent")
	}
	n := w.create(w.c, "/fresh/x-", backend.CreateOptions{Sequential: true})
	if n.Seq != 5 {
		t.Errorf("first child after SetNextSequence(5): seq %d", n.Seq)
	}

	w.create(w.c, "/k/c/child", persistent)
	wantErr(t, w.c.Delete(ctx, "/k/c", backend.AnyVersion), backend.ErrNotEmpty, "Delete of a parent with children")

	eph := w.create(w.c, "/eph", ephemeral)
	_, err := w.c.Create(ctx, eph.Path+"/child", nil, persistent)
	wantErr(t, err, coordkit.ErrInvalidArgument, "child of an ephemeral node")
	wantErr(t, w.d.SetNextSequence(eph.Path, 1), coordkit.ErrInvalidArgument, "SetNextSequence on an ephemeral node")
}

// A Guard's Token is compared exactly, unlike on ZooKeeper: a node
// re-created at the same path is another node.
func TestGuardTokenIsExact(t *testing.T) {
	w := newWorld(t)
	lock := w.create(w.c, "/g/lock", persistent)
	w.create(w.c, "/g/target", persistent)
	if err := w.c.Delete(ctx, lock.Path, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	again := w.create(w.other, "/g/lock", persistent)
	if again.Version != lock.Version {
		t.Fatalf("versions differ (%d, %d): the test needs equal ones", again.Version, lock.Version)
	}
	_, err := w.c.GuardedSet(ctx, []backend.Guard{backend.GuardOf(lock)}, "/g/target", []byte("x"), backend.AnyVersion)
	wantErr(t, err, backend.ErrGuardFailed, "guard on a re-created node")
	wantErr(t, err, backend.ErrNoNode, "guard on a re-created node")
	_, err = w.c.GuardedSet(ctx, []backend.Guard{backend.GuardOf(again)}, "/g/target", []byte("x"), backend.AnyVersion)
	if err != nil {
		t.Errorf("guard on the new node: %v", err)
	}
}

// Stats count requests and watch notifications, so a recipe test can show
// that one change wakes one watcher.
func TestStats(t *testing.T) {
	w := newWorld(t)
	base := w.d.Stats()
	var watches []*backend.Watch
	for i := range 10 {
		p := fmt.Sprintf("/n/%d", i)
		w.create(w.c, p, persistent)
		watches = append(watches, w.watch(w.other, p))
	}
	s := w.d.Stats()
	if s.Requests-base.Requests != 20 || s.Watches != 10 || s.WatchEvents != base.WatchEvents {
		t.Errorf("after 10 creates and 10 watches: %+v (before %+v)", s, base)
	}
	if err := w.c.Delete(ctx, "/n/3", backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	w.event(watches[3], backend.EventDeleted)
	s2 := w.d.Stats()
	if s2.WatchEvents-s.WatchEvents != 1 || s2.Watches != 9 {
		t.Errorf("one delete: %+v, before %+v", s2, s)
	}
	if o := w.d.SessionStats(w.other.SessionID()); o.WatchEvents != 1 || o.Watches != 9 || o.Requests != 10 {
		t.Errorf("observer's stats: %+v", o)
	}
	watches[0].Stop()
	watches[0].Stop()
	if got := w.d.Stats().Watches; got != 8 {
		t.Errorf("after Stop: %d watches", got)
	}
	// A stopped watch never delivers, not even one held for Reconnect.
	if _, err := w.c.Set(ctx, "/n/0", nil, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	w.quiet(watches[0])
	if err := w.d.Disconnect(w.other.SessionID()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.c.Set(ctx, "/n/1", nil, backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	watches[1].Stop()
	if err := w.d.Reconnect(w.other.SessionID()); err != nil {
		t.Fatal(err)
	}
	w.quiet(watches[1])
	if (w.d.SessionStats("nope") != memory.Stats{}) {
		t.Errorf("stats of an unknown session")
	}
}

// Events are unbounded and ordered: nothing is lost while nobody reads.
func TestEventsUnbounded(t *testing.T) {
	w := newWorld(t)
	id := w.c.SessionID()
	const n = 500
	for range n {
		if err := w.d.Disconnect(id); err != nil {
			t.Fatal(err)
		}
		if err := w.d.Reconnect(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for range n {
		w.state(w.c, backend.StateDisconnected)
		w.state(w.c, backend.StateReconnected)
	}
	w.state(w.c, backend.StateClosed)
	w.ended(w.c)
}

// Driver.Close ends every session, the unread and the disconnected ones too,
// and leaves no goroutine behind (goleak checks at the end).
func TestDriverClose(t *testing.T) {
	w := newWorld(t)
	for range 100 { // more than the channel holds: a pump runs
		if err := w.d.Disconnect(w.c.SessionID()); err != nil {
			t.Fatal(err)
		}
		if err := w.d.Reconnect(w.c.SessionID()); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.d.Disconnect(w.other.SessionID()); err != nil { // a server timeout runs
		t.Fatal(err)
	}
	unread := w.open()
	wt := w.watch(unread, "/x")
	if err := w.d.Close(); err != nil {
		t.Fatal(err)
	}
	wantErr(t, w.event(wt, backend.EventLost).Err, coordkit.ErrClosed, "watch at Driver.Close")
	w.state(w.other, backend.StateDisconnected)
	w.state(w.other, backend.StateClosed)
	w.ended(w.other)
	w.state(unread, backend.StateClosed)
	w.ended(unread)
	for range w.c.Events() { // dropped at Close or not, the channel ends
	}
	_, err := w.c.Get(ctx, "/x")
	wantErr(t, err, coordkit.ErrClosed, "Get after Driver.Close")
	if w.d.Disconnect(w.c.SessionID()) == nil || w.d.Expire(w.other.SessionID()) == nil {
		t.Errorf("fault injection after Driver.Close: no error")
	}
	if w.clk.Timers() != 0 {
		t.Errorf("%d timers left armed", w.clk.Timers())
	}
	if err := w.d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
