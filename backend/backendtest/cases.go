package backendtest

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
)

var (
	sessionIDRE      = regexp.MustCompile(`^[0-9a-f]+$`)
	protectedPattern = `^_c_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-`
)

// testInvalidInput: every method refuses invalid paths with ErrInvalidPath
// and oversized data with ErrInvalidArgument (and ErrDataTooLarge), and
// creates nothing; data of exactly MaxDataSize is accepted.
func testInvalidInput(e *env) {
	c := e.open()
	r := e.root
	bad := []string{
		"", "relative", "/", r + "/", r + "//x", r + "/./x", r + "/../x", r + "/x/.", r + "/x/..",
		r + "/a\x00b", r + "/a\x01b", r + "/a\x7fb", r + "/a\u0085b", r + "/\xff", r + "/\ue000",
		r + "/" + strings.Repeat("x", backend.MaxPathLength), "/zookeeper", "/zookeeper/coordkit",
	}
	good := e.path("good")
	kinds := []backend.CreateOptions{{}, {Ephemeral: true}, {Sequential: true}, {Protected: true, Sequential: true, Ephemeral: true}}
	for _, p := range bad {
		want := func(what string, err error) {
			e.t.Helper()
			e.wantErr(err, coordkit.ErrInvalidPath, what+"("+strings.ToValidUTF8(p, "?")+")")
		}
		for _, o := range kinds {
			_, err := c.Create(e.ctx, p, data("bad"), o)
			want("Create", err)
			_, _, err = c.CreateAndList(e.ctx, p, data("bad"), o)
			want("CreateAndList", err)
		}
		_, err := c.Get(e.ctx, p)
		want("Get", err)
		_, err = c.Children(e.ctx, p)
		want("Children", err)
		_, err = c.Set(e.ctx, p, data("bad"), backend.AnyVersion)
		want("Set", err)
		want("Delete", c.Delete(e.ctx, p, backend.AnyVersion))
		_, err = c.GuardedSet(e.ctx, nil, p, data("bad"), backend.AnyVersion)
		want("GuardedSet path", err)
		_, err = c.GuardedSet(e.ctx, []backend.Guard{{Path: p, Version: backend.AnyVersion}}, good, data("bad"), backend.AnyVersion)
		want("GuardedSet guard", err)
		_, _, w, err := c.Watch(e.ctx, p)
		want("Watch", err)
		if w != nil {
			w.Stop()
		}
		_, w, err = c.WatchChildren(e.ctx, p)
		want("WatchChildren", err)
		if w != nil {
			w.Stop()
		}
	}

	big := bytes.Repeat([]byte{'x'}, backend.MaxDataSize+1)
	tooBig := func(what string, err error) {
		e.t.Helper()
		e.wantErr(err, coordkit.ErrInvalidArgument, what)
		e.wantErr(err, backend.ErrDataTooLarge, what)
	}
	_, err := c.Create(e.ctx, good, big, backend.CreateOptions{})
	tooBig("Create with oversized data", err)
	_, _, err = c.CreateAndList(e.ctx, good, big, backend.CreateOptions{})
	tooBig("CreateAndList with oversized data", err)
	_, err = c.Set(e.ctx, good, big, backend.AnyVersion)
	tooBig("Set with oversized data", err)
	_, err = c.GuardedSet(e.ctx, nil, good, big, backend.AnyVersion)
	tooBig("GuardedSet with oversized data", err)

	for _, ttl := range []time.Duration{0, -time.Second} {
		bad, err := e.d.Open(e.ctx, ttl)
		e.wantErr(err, coordkit.ErrInvalidArgument, "Open with ttl "+ttl.String())
		if bad != nil {
			_ = bad.Close(e.ctx)
		}
	}

	if kids := e.children(c, e.root); len(kids) != 0 {
		e.t.Errorf("invalid calls created %q", paths(kids))
	}
	if _, err := c.Get(e.ctx, e.root); !errors.Is(err, backend.ErrNoNode) {
		e.t.Errorf("invalid calls created the root: Get = %v", err)
	}

	largest := bytes.Repeat([]byte{'m'}, backend.MaxDataSize)
	if _, err := c.Create(e.ctx, good, largest, backend.CreateOptions{}); err != nil {
		e.t.Fatalf("Create with MaxDataSize bytes: %v", err)
	}
	if n := e.get(c, good); !bytes.Equal(n.Data, largest) {
		e.t.Errorf("Get after a MaxDataSize create: %d bytes", len(n.Data))
	}
	e.del(c, good)
}

// testCreate: the kinds of node Create makes and the Node it returns.
func testCreate(e *env) {
	c := e.open()
	sid := c.SessionID()
	if !sessionIDRE.MatchString(sid) {
		e.t.Errorf("SessionID %q: want lower-case hex", sid)
	}

	p := e.path("p")
	n := e.create(c, p, "persistent", backend.CreateOptions{})
	if n.Path != p || n.Name != "p" || n.Token <= 0 || n.Owner != "" {
		e.t.Errorf("Create persistent: %+v", n)
	}
	g := e.get(c, p)
	if g.Path != p || g.Name != "p" || string(g.Data) != string(data("persistent")) || g.Token != n.Token || g.Version != n.Version || g.Owner != "" {
		e.t.Errorf("Get persistent: %+v, created %+v", g, n)
	}
	for _, o := range []backend.CreateOptions{{}, {Ephemeral: true}} {
		_, err := c.Create(e.ctx, p, data("again"), o)
		e.wantErr(err, backend.ErrNodeExists, "Create on an existing path")
		_, _, err = c.CreateAndList(e.ctx, p, data("again"), o)
		e.wantErr(err, backend.ErrNodeExists, "CreateAndList on an existing path")
	}
	if g := e.get(c, p); string(g.Data) != string(data("persistent")) {
		e.t.Errorf("a refused create changed the node: %q", g.Data)
	}

	ep := e.path("e")
	n = e.create(c, ep, "ephemeral", backend.CreateOptions{Ephemeral: true})
	if n.Path != ep || n.Owner != sid || n.Token <= 0 {
		e.t.Errorf("Create ephemeral: %+v, session %s", n, sid)
	}
	if g := e.get(c, ep); g.Owner != sid || g.Token != n.Token {
		e.t.Errorf("Get ephemeral: %+v, session %s", g, sid)
	}

	dir, base := e.path("s"), e.path("s", "item-")
	var seqs []backend.Node
	for range 3 {
		n := e.create(c, base, "sequential", backend.CreateOptions{Sequential: true})
		if !n.Sequential || !strings.HasPrefix(n.Name, "item-") || len(n.Name) == len("item-") || n.Path != dir+"/"+n.Name || n.Token <= 0 {
			e.t.Errorf("Create sequential at %s: %+v", base, n)
		}
		if g := e.get(c, n.Path); !g.Sequential || g.Seq != n.Seq || g.Token != n.Token {
			e.t.Errorf("Get sequential: %+v, created %+v", g, n)
		}
		seqs = append(seqs, n)
	}
	e.checkOrder("sequential creates", seqs)

	pdir := e.path("pr")
	pn := e.create(c, e.path("pr", "lock"), "protected", backend.CreateOptions{Protected: true})
	if !regexp.MustCompile(protectedPattern+`lock$`).MatchString(pn.Name) || pn.Path != pdir+"/"+pn.Name {
		e.t.Errorf("Create protected: %+v", pn)
	}
	ps := e.create(c, e.path("pr", "lock-"), "protected", backend.CreateOptions{Protected: true, Sequential: true, Ephemeral: true})
	if !regexp.MustCompile(protectedPattern+`lock-.+$`).MatchString(ps.Name) || !ps.Sequential || ps.Owner != sid || ps.Path != pdir+"/"+ps.Name {
		e.t.Errorf("Create protected sequential ephemeral: %+v", ps)
	}
	if len(ps.Name) > 40 && len(pn.Name) > 40 && ps.Name[:40] == pn.Name[:40] {
		e.t.Errorf("two protected creates share the prefix %s", ps.Name[:40])
	}

	deep := e.path("a", "b", "c", "leaf")
	e.create(c, deep, "deep", backend.CreateOptions{})
	e.samePaths("Children below created parents", e.children(c, e.path("a", "b", "c")), deep)

	e.del(c, deep, pn.Path, ps.Path)
	for _, n := range seqs {
		e.del(c, n.Path)
	}
	e.del(c, ep, p)
}

// testTokens: Token grows with every create, across sessions and kinds, Get
// reports the Token Create returned, Set keeps it, and a re-created node
// gets a larger one.
func testTokens(e *env) {
	c1, c2 := e.open(), e.open()
	q := e.path("q", "n-")
	var made []backend.Node
	made = append(made, e.create(c1, e.path("a"), "a", backend.CreateOptions{}))
	made = append(made, e.create(c2, e.path("b"), "b", backend.CreateOptions{Ephemeral: true}))
	made = append(made, e.create(c1, q, "q", backend.CreateOptions{Sequential: true}))
	made = append(made, e.create(c2, q, "q", backend.CreateOptions{Sequential: true, Protected: true, Ephemeral: true}))
	n, _, err := c1.CreateAndList(e.ctx, q, data("q"), backend.CreateOptions{Sequential: true})
	if err != nil {
		e.t.Fatalf("CreateAndList: %v", err)
	}
	made = append(made, n)
	for i, n := range made {
		if i > 0 && n.Token <= made[i-1].Token {
			e.t.Errorf("token of %s (%d) not above that of %s (%d), created before it", n.Path, n.Token, made[i-1].Path, made[i-1].Token)
		}
		for _, c := range []backend.Conn{c1, c2} {
			if g := e.getVisible(c, n.Path); g.Token != n.Token {
				e.t.Errorf("Get(%s).Token = %d, Create returned %d", n.Path, g.Token, n.Token)
			}
		}
	}
	a := made[0]
	e.set(c2, a.Path, "changed")
	if g := e.get(c1, a.Path); g.Token != a.Token {
		e.t.Errorf("Set changed the token of %s: %d, was %d", a.Path, g.Token, a.Token)
	}
	e.del(c1, a.Path)
	again := e.create(c2, a.Path, "again", backend.CreateOptions{})
	if last := made[len(made)-1]; again.Token <= last.Token {
		e.t.Errorf("re-created %s has token %d, not above %d", a.Path, again.Token, last.Token)
	}
	e.del(c1, again.Path)
	for _, n := range made[1:] {
		e.del(c1, n.Path)
	}
}

// testSequentialOrder: Children lists sequential siblings in creation order,
// with Seq increasing by SeqLess, and sets only Name, Path, Seq and
// Sequential.
func testSequentialOrder(e *env) {
	c := e.open()
	dir, base := e.path("q"), e.path("q", "job-")
	var made []backend.Node
	for i := range 10 {
		made = append(made, e.create(c, base, "job", backend.CreateOptions{Sequential: true, Ephemeral: i%2 == 0, Protected: i%3 == 0}))
	}
	want := paths(made)
	kids := e.children(c, dir)
	e.samePaths("Children of sequential siblings", kids, want...)
	e.checkListing(dir, kids)
	e.checkOrder("Children of sequential siblings", kids)
	for i, k := range kids {
		if i < len(made) && (k.Seq != made[i].Seq || !k.Sequential) {
			e.t.Errorf("Children: %s has seq %d (sequential %v), Create said %d", k.Name, k.Seq, k.Sequential, made[i].Seq)
		}
	}
	e.del(c, made[3].Path, made[7].Path)
	want = slices.Delete(want, 7, 8)
	want = slices.Delete(want, 3, 4)
	e.samePaths("Children after deleting two", e.children(c, dir), want...)
	for _, p := range want {
		e.del(c, p)
	}
}

// testCreateAndList: the listing is taken after the create and contains the
// new node, in order.
func testCreateAndList(e *env) {
	c := e.open()
	dir, base := e.path("q"), e.path("q", "m-")
	n1, l1, err := c.CreateAndList(e.ctx, base, data("m"), backend.CreateOptions{Sequential: true, Ephemeral: true})
	if err != nil {
		e.t.Fatalf("CreateAndList under a missing parent: %v", err)
	}
	if n1.Token <= 0 || n1.Owner != c.SessionID() || !n1.Sequential || !strings.HasPrefix(n1.Name, "m-") {
		e.t.Errorf("CreateAndList node: %+v", n1)
	}
	e.samePaths("CreateAndList under a missing parent", l1, n1.Path)
	e.checkListing(dir, l1)
	n2 := e.create(c, base, "m", backend.CreateOptions{Sequential: true})
	n3, l3, err := c.CreateAndList(e.ctx, base, data("m"), backend.CreateOptions{Sequential: true, Protected: true})
	if err != nil {
		e.t.Fatalf("CreateAndList: %v", err)
	}
	if !regexp.MustCompile(protectedPattern + `m-.+$`).MatchString(n3.Name) {
		e.t.Errorf("CreateAndList protected: %+v", n3)
	}
	e.samePaths("CreateAndList listing", l3, n1.Path, n2.Path, n3.Path)
	e.checkListing(dir, l3)
	e.checkOrder("CreateAndList listing", l3)
	if len(l3) == 3 && l3[2].Seq != n3.Seq {
		e.t.Errorf("CreateAndList: listed seq %d, returned %d", l3[2].Seq, n3.Seq)
	}
	if g := e.get(c, n3.Path); g.Token != n3.Token || n3.Token <= n2.Token {
		e.t.Errorf("CreateAndList token %d, Get %d, previous create %d", n3.Token, g.Token, n2.Token)
	}
	fixed := e.path("q", "fixed")
	n4, l4, err := c.CreateAndList(e.ctx, fixed, data("fixed"), backend.CreateOptions{})
	if err != nil {
		e.t.Fatalf("CreateAndList non-sequential: %v", err)
	}
	got := paths(l4)
	slices.Sort(got)
	want := []string{n1.Path, n2.Path, n3.Path, n4.Path}
	slices.Sort(want)
	if !slices.Equal(got, want) || n4.Path != fixed {
		e.t.Errorf("CreateAndList non-sequential: node %s, listing %q", n4.Path, paths(l4))
	}
	e.del(c, n1.Path, n2.Path, n3.Path, n4.Path)
}

// testCreateAndWatch: the node is created as by Create and its watch is
// armed on that incarnation: silent until the node changes (by anyone,
// the creator included) or is deleted, then one event. An existing path
// fails as Create does and arms nothing.
func testCreateAndWatch(e *env) {
	c, other := e.open(), e.open()
	p := e.path("cw", "owner")
	n, w, err := c.CreateAndWatch(e.ctx, p, data("v0"), backend.CreateOptions{Ephemeral: true})
	if err != nil {
		e.t.Fatalf("CreateAndWatch under a missing parent: %v", err)
	}
	if n.Path != p || n.Token <= 0 || n.Owner != c.SessionID() || string(n.Data) != string(data("v0")) {
		e.t.Errorf("CreateAndWatch node: %+v", n)
	}
	if g := e.get(other, p); g.Token != n.Token || g.Version != n.Version {
		e.t.Errorf("CreateAndWatch returned token %d version %d, Get reads %d and %d", n.Token, n.Version, g.Token, g.Version)
	}
	if w.Fired() {
		e.t.Fatalf("CreateAndWatch: the watch fired before any change")
	}
	if _, _, err := other.CreateAndWatch(e.ctx, p, data("v1"), backend.CreateOptions{}); !errors.Is(err, backend.ErrNodeExists) {
		e.t.Errorf("CreateAndWatch of an existing path: %v, want ErrNodeExists", err)
	}
	e.set(other, p, "v1")
	e.expect(w, backend.EventChanged, p, "CreateAndWatch, then Set")

	// Deleted by another session; then the creator's own delete fires a
	// fresh one.
	q := e.path("cw", "q")
	_, wq, err := c.CreateAndWatch(e.ctx, q, data("q"), backend.CreateOptions{})
	if err != nil {
		e.t.Fatalf("CreateAndWatch: %v", err)
	}
	e.del(other, q)
	e.expect(wq, backend.EventDeleted, q, "CreateAndWatch, then Delete by another session")
	_, wq2, err := c.CreateAndWatch(e.ctx, q, data("q"), backend.CreateOptions{})
	if err != nil {
		e.t.Fatalf("CreateAndWatch again: %v", err)
	}
	e.del(c, q)
	e.expect(wq2, backend.EventDeleted, q, "CreateAndWatch, then the creator's Delete")
	if wq2.Fired() {
		e.t.Errorf("Fired after the event was received from C: true (C delivers exactly one event)")
	}

	// A sequential node is watched too.
	sn, ws, err := c.CreateAndWatch(e.ctx, e.path("cw", "s-"), data("s"), backend.CreateOptions{Sequential: true, Ephemeral: true})
	if err != nil {
		e.t.Fatalf("CreateAndWatch sequential: %v", err)
	}
	if !sn.Sequential || sn.Token <= n.Token {
		e.t.Errorf("CreateAndWatch sequential node: %+v", sn)
	}
	if ws.Fired() {
		e.t.Fatalf("CreateAndWatch sequential: the watch fired before any change")
	}
	e.del(other, sn.Path)
	e.expect(ws, backend.EventDeleted, sn.Path, "CreateAndWatch sequential, then Delete")
	e.del(c, p)
}

// testChildren: a missing parent has no children and is no error; only
// direct children are listed, and "/a" does not see "/ab".
func testChildren(e *env) {
	c := e.open()
	if kids := e.children(c, e.path("missing", "parent")); len(kids) != 0 {
		e.t.Errorf("Children of a missing parent: %q", paths(kids))
	}
	x := e.path("r", "a", "x")
	ab := e.path("r", "ab")
	e.create(c, x, "x", backend.CreateOptions{})
	e.create(c, ab, "ab", backend.CreateOptions{})
	kids := e.children(c, e.path("r", "a"))
	e.samePaths("Children(/r/a)", kids, x)
	e.checkListing(e.path("r", "a"), kids)
	if kids := e.children(c, ab); len(kids) != 0 {
		e.t.Errorf("Children of a leaf: %q", paths(kids))
	}
	e.del(c, x, ab)
	if kids := e.children(c, e.path("r", "a")); len(kids) != 0 {
		e.t.Errorf("Children after delete: %q", paths(kids))
	}
}

// testVersions: Set and Delete check versions; AnyVersion skips the check;
// a missing node is ErrNoNode.
func testVersions(e *env) {
	c := e.open()
	p := e.path("v")
	created := e.create(c, p, "v1", backend.CreateOptions{})
	g := e.get(c, p)
	if g.Version != created.Version || string(g.Data) != string(data("v1")) {
		e.t.Errorf("Get after Create: %+v, created %+v", g, created)
	}
	s, err := c.Set(e.ctx, p, data("v2"), g.Version)
	if err != nil {
		e.t.Fatalf("Set with the current version: %v", err)
	}
	if s.Version == g.Version {
		e.t.Errorf("Set kept version %d", s.Version)
	}
	if g2 := e.get(c, p); g2.Version != s.Version || string(g2.Data) != string(data("v2")) {
		e.t.Errorf("Get after Set: %+v, Set returned version %d", g2, s.Version)
	}
	_, err = c.Set(e.ctx, p, data("stale"), g.Version)
	e.wantErr(err, backend.ErrBadVersion, "Set with a stale version")
	e.wantErr(c.Delete(e.ctx, p, g.Version), backend.ErrBadVersion, "Delete with a stale version")
	if g3 := e.get(c, p); g3.Version != s.Version || string(g3.Data) != string(data("v2")) {
		e.t.Errorf("refused writes changed the node: %+v", g3)
	}
	a := e.set(c, p, "v3")
	if a.Version == s.Version {
		e.t.Errorf("Set with AnyVersion kept version %d", a.Version)
	}
	if err := c.Delete(e.ctx, p, a.Version); err != nil {
		e.t.Fatalf("Delete with the current version: %v", err)
	}
	_, err = c.Get(e.ctx, p)
	e.wantErr(err, backend.ErrNoNode, "Get after Delete")
	_, err = c.Set(e.ctx, p, data("x"), backend.AnyVersion)
	e.wantErr(err, backend.ErrNoNode, "Set on a missing node")
	e.wantErr(c.Delete(e.ctx, p, backend.AnyVersion), backend.ErrNoNode, "Delete of a missing node")
	if _, err := c.Get(e.ctx, p); !errors.Is(err, backend.ErrNoNode) {
		e.t.Errorf("Set on a missing node created it: %v", err)
	}
}

// testParentStamps: where the driver implements backend.ParentStamps, a
// stamped create writes the parent and creates a pin in its transaction; a
// stamped delete removes the node and the pin while nobody else stamped the
// parent, and deletes nothing once the node was deleted by somebody else
// and created again, whether the parent lived on (its version moved) or
// was deleted and made again (the pin is gone). The node's own version is
// still checked. The root cannot be stamped. A driver without stamps must
// say that its versions identify incarnations (the reason a recipe can do
// without).
func testParentStamps(e *env) {
	c, other := e.open(), e.open()
	ps, ok := c.(backend.ParentStamps)
	if !ok {
		if v, ok := c.(backend.IncarnationVersions); !ok || !v.VersionsIdentifyIncarnations() {
			e.t.Fatalf("%T implements neither backend.ParentStamps nor exact backend.IncarnationVersions", c)
		}
		return
	}
	ops := other.(backend.ParentStamps)
	dir := e.path("stamp")
	p := e.path("stamp", "owner")
	eph := backend.CreateOptions{Ephemeral: true}
	// stamped creates p through q, stamped, or ends the test.
	stamped := func(q backend.ParentStamps, what string) (backend.Node, backend.Stamp) {
		e.t.Helper()
		n, st, err := q.CreateStamped(e.ctx, p, nil, eph)
		if err != nil {
			e.t.Fatalf("%s: %v", what, err)
		}
		return n, st
	}
	// dropDir deletes dir, empty, if the server has not reaped it yet.
	dropDir := func() {
		e.t.Helper()
		// ZooKeeper may reap the empty container first, on its own
		// schedule: gone either way.
		if err := other.Delete(e.ctx, dir, backend.AnyVersion); err != nil && !errors.Is(err, backend.ErrNoNode) {
			e.t.Fatalf("Delete(%s): %v", dir, err)
		}
	}
	// caughtUp makes other's reads see every write acknowledged so far: on
	// a ZooKeeper ensemble other's member may not have applied c's writes
	// yet (a session reads its own writes at once, others' eventually),
	// but it has applied them once it answers a write of other's.
	barrier := e.path("stamp-barrier")
	e.create(other, barrier, "", eph)
	caughtUp := func() {
		e.t.Helper()
		e.set(other, barrier, "")
	}
	// holds checks that dir holds exactly want and its pin.
	holds := func(what string, want backend.Node, st backend.Stamp) {
		e.t.Helper()
		caughtUp()
		got := paths(e.children(other, dir))
		slices.Sort(got)
		exp := []string{want.Path, st.Pin}
		slices.Sort(exp)
		if !slices.Equal(got, exp) || e.get(other, want.Path).Token != want.Token {
			e.t.Errorf("%s: %s holds %q, want %q (token %d)", what, dir, got, exp, want.Token)
		}
	}

	// Under a missing parent: the parent is made, then stamped; the pin
	// is a sibling of the node.
	n1, s1, err := ps.CreateStamped(e.ctx, p, data("v0"), eph)
	if err != nil {
		e.t.Fatalf("CreateStamped under a missing parent: %v", err)
	}
	caughtUp()
	got := e.get(other, p)
	if n1.Path != p || n1.Token <= 0 || n1.Token != got.Token || n1.Version != got.Version ||
		n1.Owner != c.SessionID() || string(got.Data) != string(data("v0")) {
		e.t.Errorf("CreateStamped returned %+v, Get reads %+v", n1, got)
	}
	if pd := e.get(other, dir); !s1.Known || s1.Parent.Path != dir || s1.Parent.Version != pd.Version {
		e.t.Errorf("stamp %+v, the parent reads version %d", s1, pd.Version)
	}
	if pin := e.get(other, s1.Pin); pin.Owner != c.SessionID() || !strings.HasPrefix(s1.Pin, dir+"/") {
		e.t.Errorf("pin %s: %+v", s1.Pin, pin)
	}
	if _, _, err := ops.CreateStamped(e.ctx, p, nil, eph); !errors.Is(err, backend.ErrNodeExists) {
		e.t.Errorf("CreateStamped of an existing path: %v, want ErrNodeExists", err)
	}
	if pd := e.get(other, dir); pd.Version != s1.Parent.Version || len(e.children(other, dir)) != 2 {
		e.t.Errorf("a failed CreateStamped moved the parent to version %d (stamp %d) or left a pin: %q",
			pd.Version, s1.Parent.Version, paths(e.children(other, dir)))
	}
	if err := ps.DeleteStamped(e.ctx, p, n1.Version, s1); err != nil {
		e.t.Fatalf("DeleteStamped: %v", err)
	}
	caughtUp()
	if kids := e.children(other, dir); len(kids) != 0 {
		e.t.Errorf("after DeleteStamped %s holds %q", dir, paths(kids))
	}

	// An operator deletes our node and another session creates it again,
	// stamped: the parent lived on (our pin kept it), its version moved.
	n2, s2 := stamped(ps, "CreateStamped")
	e.del(other, p)
	n3, s3 := stamped(ops, "CreateStamped by another session")
	if s3.Parent.Version == s2.Parent.Version || n3.Token <= n2.Token || s3.Pin == s2.Pin {
		e.t.Errorf("stamps %+v then %+v, tokens %d then %d", s2, s3, n2.Token, n3.Token)
	}
	if err := ps.DeleteStamped(e.ctx, p, n2.Version, s2); !errors.Is(err, backend.ErrGuardFailed) {
		e.t.Errorf("DeleteStamped under a stale stamp: %v, want ErrGuardFailed", err)
	}
	if err := ps.Unpin(e.ctx, s2); err != nil {
		e.t.Errorf("Unpin: %v", err)
	}
	if err := ps.Unpin(e.ctx, s2); err != nil {
		e.t.Errorf("Unpin again: %v", err)
	}
	holds("after a stale DeleteStamped and Unpin", n3, s3)

	// The node's version is checked too; nothing is deleted.
	e.set(c, p, "marked")
	if err := ops.DeleteStamped(e.ctx, p, n3.Version, s3); !errors.Is(err, backend.ErrBadVersion) || errors.Is(err, backend.ErrGuardFailed) {
		e.t.Errorf("DeleteStamped of a changed node: %v, want ErrBadVersion", err)
	}
	holds("after a failed DeleteStamped", n3, s3)
	if err := ops.DeleteStamped(e.ctx, p, backend.AnyVersion, s3); err != nil {
		e.t.Fatalf("DeleteStamped at any version: %v", err)
	}

	// The parent deleted and made again (an operator deletes all): its
	// version restarts. Both creates here are the first under a fresh
	// parent, so the stale stamp matches the new parent's version, and
	// only the pin, gone with the old parent, can tell.
	dropDir()
	n4, s4 := stamped(ps, "CreateStamped under a fresh parent")
	e.del(other, p, s4.Pin)
	dropDir()
	n5, s5 := stamped(ops, "CreateStamped by another session under the parent made again")
	if s5.Parent.Version != s4.Parent.Version {
		e.t.Fatalf("the parent made again has version %d, the stale stamp %d: the case needs them equal", s5.Parent.Version, s4.Parent.Version)
	}
	if err := ps.DeleteStamped(e.ctx, p, n4.Version, s4); !errors.Is(err, backend.ErrGuardFailed) {
		e.t.Errorf("DeleteStamped after the parent was made again: %v, want ErrGuardFailed", err)
	}
	holds("after a stale DeleteStamped", n5, s5)
	if err := ops.DeleteStamped(e.ctx, p, n5.Version, s5); err != nil {
		e.t.Errorf("DeleteStamped: %v", err)
	}

	// An unknown stamp never deletes.
	n6, s6 := stamped(ps, "CreateStamped")
	if err := ps.DeleteStamped(e.ctx, p, n6.Version, backend.Stamp{Pin: s6.Pin}); !errors.Is(err, backend.ErrGuardFailed) {
		e.t.Errorf("DeleteStamped with an unknown stamp: %v, want ErrGuardFailed", err)
	}
	if err := ps.DeleteStamped(e.ctx, p, n6.Version, s6); err != nil {
		e.t.Errorf("DeleteStamped: %v", err)
	}

	// The root cannot be stamped; nothing is created.
	top := "/" + strings.TrimPrefix(strings.ReplaceAll(e.root, "/", "-"), "-") + "-stamp"
	if _, _, err := ps.CreateStamped(e.ctx, top, nil, eph); !errors.Is(err, backend.ErrNoStamp) {
		e.t.Errorf("CreateStamped under the root: %v, want ErrNoStamp", err)
	}
	if _, err := other.Get(e.ctx, top); !errors.Is(err, backend.ErrNoNode) {
		e.t.Errorf("a CreateStamped that failed left %s: %v", top, err)
	}
	e.del(other, barrier)
}

// testGuardedSet: a write guarded by a lock node lands while the lock node
// is unchanged, and is refused with ErrGuardFailed, writing nothing, once
// it changed, went, or was replaced by a new holder's node.
func testGuardedSet(e *env) {
	holder, writer := e.open(), e.open()
	lockBase := e.path("lock", "lock-")
	lockOpts := backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true}
	lock := e.create(holder, lockBase, "holder", lockOpts)
	target := e.path("target")
	e.create(writer, target, "v0", backend.CreateOptions{})
	cur := e.get(writer, target)

	guarded := func(what string, guards []backend.Guard, content string, version int64) (backend.Node, error) {
		e.t.Helper()
		n, err := writer.GuardedSet(e.ctx, guards, target, data(content), version)
		if err == nil {
			if g := e.get(writer, target); string(g.Data) != string(data(content)) || g.Version != n.Version {
				e.t.Errorf("%s: Get after GuardedSet %+v, returned version %d", what, g, n.Version)
			}
			cur = e.get(writer, target)
		}
		return n, err
	}
	unchanged := func(what string, err error, want ...error) {
		e.t.Helper()
		for _, w := range want {
			e.wantErr(err, w, what)
		}
		if g := e.get(writer, target); string(g.Data) != string(cur.Data) || g.Version != cur.Version {
			e.t.Errorf("%s: a refused GuardedSet wrote %q (version %d), was %q (version %d)", what, g.Data, g.Version, cur.Data, cur.Version)
		}
	}

	before := cur.Version
	if n, err := guarded("valid guard", []backend.Guard{backend.GuardOf(lock)}, "v1", cur.Version); err != nil {
		e.t.Fatalf("GuardedSet with a valid guard: %v", err)
	} else if n.Version == before {
		e.t.Errorf("GuardedSet kept version %d", n.Version)
	}
	_, err := guarded("stale target", []backend.Guard{backend.GuardOf(lock)}, "stale", before)
	unchanged("GuardedSet with a stale target version", err, backend.ErrBadVersion)
	if errors.Is(err, backend.ErrGuardFailed) {
		e.t.Errorf("GuardedSet with a stale target version: %v; the guard held", err)
	}
	_, err = writer.GuardedSet(e.ctx, []backend.Guard{backend.GuardOf(lock)}, e.path("missing"), data("x"), backend.AnyVersion)
	e.wantErr(err, backend.ErrNoNode, "GuardedSet on a missing target")
	if _, err := guarded("AnyVersion", []backend.Guard{backend.GuardOf(lock)}, "v2", backend.AnyVersion); err != nil {
		e.t.Fatalf("GuardedSet with AnyVersion: %v", err)
	}
	if _, err := guarded("no guards", nil, "v3", cur.Version); err != nil {
		e.t.Fatalf("GuardedSet without guards: %v", err)
	}

	// The holder changes its lock node: the old guard fails, a guard
	// without a version still holds.
	e.set(holder, lock.Path, "holder again")
	_, err = guarded("changed guard", []backend.Guard{backend.GuardOf(lock)}, "x", backend.AnyVersion)
	unchanged("GuardedSet after the guard node changed", err, backend.ErrGuardFailed)
	loose := backend.Guard{Path: lock.Path, Token: lock.Token, Version: backend.AnyVersion}
	if _, err := guarded("guard without version", []backend.Guard{loose}, "v4", backend.AnyVersion); err != nil {
		e.t.Fatalf("GuardedSet with a guard on token only: %v", err)
	}
	now := backend.GuardOf(e.get(holder, lock.Path))
	other := e.create(writer, e.path("other"), "other", backend.CreateOptions{})
	_, err = guarded("one of two guards stale", []backend.Guard{now, backend.GuardOf(other), backend.GuardOf(lock)}, "x", backend.AnyVersion)
	unchanged("GuardedSet with one stale guard of three", err, backend.ErrGuardFailed)
	if _, err := guarded("two guards", []backend.Guard{now, backend.GuardOf(other)}, "v5", backend.AnyVersion); err != nil {
		e.t.Fatalf("GuardedSet with two valid guards: %v", err)
	}

	// The holder lets go and a new holder takes the lock with a node of its
	// own: the old guard fails, the new one holds.
	e.del(holder, lock.Path)
	_, err = guarded("deleted guard", []backend.Guard{now}, "x", backend.AnyVersion)
	unchanged("GuardedSet after the guard node was deleted", err, backend.ErrGuardFailed)
	lock2 := e.create(writer, lockBase, "new holder", lockOpts)
	for _, g := range []backend.Guard{now, loose} {
		_, err = guarded("replaced guard", []backend.Guard{g}, "x", backend.AnyVersion)
		unchanged("GuardedSet after a new holder's node replaced the guard node", err, backend.ErrGuardFailed)
	}
	if _, err := guarded("new holder", []backend.Guard{backend.GuardOf(lock2)}, "v6", cur.Version); err != nil {
		e.t.Fatalf("GuardedSet with the new holder's guard: %v", err)
	}
	e.del(writer, lock2.Path, other.Path, target)
}

// testWatch: a Watch fires once: EventCreated on a missing node,
// EventChanged on Set, EventDeleted on Delete; Stop is safe twice.
func testWatch(e *env) {
	c, other := e.open(), e.open()
	p := e.path("w")

	_, exists, w := e.watch(c, p)
	if exists {
		e.t.Fatalf("Watch of a missing node: exists")
	}
	created := e.create(other, p, "v0", backend.CreateOptions{})
	e.expect(w, backend.EventCreated, p, "Watch of a missing node, then Create")
	w.Stop()
	w.Stop()

	n, exists, w1 := e.watch(c, p)
	if !exists || n.Path != p || string(n.Data) != string(data("v0")) || n.Token != created.Token {
		e.t.Errorf("Watch of an existing node: exists %v, %+v", exists, n)
	}
	e.set(other, p, "v1")
	e.expect(w1, backend.EventChanged, p, "Watch, then Set")

	// One event per Watch: w1 stays silent through two more changes, the
	// second of which a newer watch sees.
	e.set(other, p, "v2")
	_, _, w2 := e.watch(c, p)
	e.set(other, p, "v3")
	e.expect(w2, backend.EventChanged, p, "second Watch, then Set")
	e.quiet(w1, "a fired Watch after two more Sets")

	// A session's own write fires its watch too.
	_, _, w3 := e.watch(c, p)
	e.set(c, p, "v4")
	e.expect(w3, backend.EventChanged, p, "Watch, then Set by the same session")

	_, _, w4 := e.watch(c, p)
	e.del(other, p)
	e.expect(w4, backend.EventDeleted, p, "Watch, then Delete")

	// Stop before any event, twice; the node may come and go after.
	_, _, w5 := e.watch(c, p)
	w5.Stop()
	w5.Stop()
	e.create(other, p, "v5", backend.CreateOptions{})
	e.del(other, p)
}

// testWatchChildren: fires EventChildren when a child is added or removed,
// also the first child of a missing parent, and not when a child's data
// changes.
func testWatchChildren(e *env) {
	c, other := e.open(), e.open()
	dir := e.path("wc")
	// anchor keeps dir from being empty, so a ZooKeeper container parent is
	// not reaped under the watch. It is created by c itself: on a ZooKeeper
	// ensemble c and other may talk to different members, and a session is
	// only guaranteed to read its own writes at once (without sync), so c's
	// first listing could miss a node other has just created. Later steps
	// read only after a watch fired on c's member, which orders them.
	anchor := e.create(c, e.path("wc", "anchor"), "anchor", backend.CreateOptions{})

	kids, w := e.watchChildren(c, dir)
	e.samePaths("WatchChildren listing", kids, anchor.Path)
	e.checkListing(dir, kids)
	_, _, wd := e.watch(c, anchor.Path)
	e.set(other, anchor.Path, "changed")
	e.expect(wd, backend.EventChanged, anchor.Path, "Watch of a child, then Set")
	e.quiet(w, "WatchChildren after a child's data changed")

	x := e.create(other, e.path("wc", "x"), "x", backend.CreateOptions{Ephemeral: true})
	e.expect(w, backend.EventChildren, dir, "WatchChildren, then a child added")

	kids, w2 := e.watchChildren(c, dir)
	got := paths(kids)
	slices.Sort(got)
	if !slices.Equal(got, []string{anchor.Path, x.Path}) {
		e.t.Errorf("WatchChildren listing: %q", got)
	}
	e.del(other, x.Path)
	e.expect(w2, backend.EventChildren, dir, "WatchChildren, then a child removed")

	_, w3 := e.watchChildren(c, dir)
	s := e.create(c, e.path("wc", "s-"), "s", backend.CreateOptions{Sequential: true, Protected: true})
	e.expect(w3, backend.EventChildren, dir, "WatchChildren, then a sequential child added by the same session")

	missing := e.path("wc2")
	kids, w4 := e.watchChildren(c, missing)
	if len(kids) != 0 {
		e.t.Errorf("WatchChildren of a missing parent: %q", paths(kids))
	}
	y := e.create(other, e.path("wc2", "y"), "y", backend.CreateOptions{})
	e.expect(w4, backend.EventChildren, missing, "WatchChildren of a missing parent, then a child created")

	e.del(other, y.Path, s.Path, anchor.Path)
}

// testSessionClose: Close deletes the session's ephemeral nodes at once, as
// another session sees, ends its watches with EventLost (ErrClosed), is
// idempotent, and every later call returns ErrClosed.
func testSessionClose(e *env) {
	c, other := e.open(), e.open()
	eph := e.create(c, e.path("eph"), "eph", backend.CreateOptions{Ephemeral: true})
	qdir := e.path("q")
	seq := e.create(c, e.path("q", "n-"), "n", backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true})
	keep := e.create(c, e.path("keep"), "keep", backend.CreateOptions{})
	_, wEph := e.watchVisible(other, eph.Path)
	_, wSeq := e.watchVisible(other, seq.Path)
	_, ok3, wOwn := e.watch(c, keep.Path)
	if !ok3 {
		e.t.Fatalf("Watch: the session's own node missing before Close")
	}

	if err := c.Close(e.ctx); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	e.expect(wEph, backend.EventDeleted, eph.Path, "another session's Watch of an ephemeral node, then Close")
	e.expect(wSeq, backend.EventDeleted, seq.Path, "another session's Watch of an ephemeral sequential node, then Close")
	for _, p := range []string{eph.Path, seq.Path} {
		_, err := other.Get(e.ctx, p)
		e.wantErr(err, backend.ErrNoNode, "Get of an ephemeral node after its session closed")
	}
	if kids := e.children(other, qdir); len(kids) != 0 {
		e.t.Errorf("Children after the session closed: %q", paths(kids))
	}
	if g := e.get(other, keep.Path); g.Token != keep.Token {
		e.t.Errorf("persistent node after Close: %+v", g)
	}
	ev := e.next(wOwn, "the closed session's own Watch")
	if ev.Type != backend.EventLost || !errors.Is(ev.Err, coordkit.ErrClosed) {
		e.t.Errorf("the closed session's own Watch: %v %v, want Lost with ErrClosed", ev.Type, ev.Err)
	}
	if err := c.Close(e.ctx); err != nil {
		e.t.Errorf("second Close: %v", err)
	}

	e.callsFail(c, coordkit.ErrClosed, "after Close", other, keep.Path)
	e.del(other, keep.Path)
}

// testEvents: a session's Events start with StateConnected and end with
// StateClosed, then the channel is closed; sessions have distinct ids and a
// positive Timeout.
func testEvents(e *env) {
	c, err := e.d.Open(e.ctx, e.s.opts.TTL)
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	e.t.Cleanup(func() { _ = c.Close(context.Background()) })
	timer := time.NewTimer(e.s.opts.Timeout)
	defer timer.Stop()
	select {
	case ev := <-c.Events():
		if ev.State != backend.StateConnected || ev.At.IsZero() {
			e.t.Errorf("first event %v at %v, want Connected with At", ev.State, ev.At)
		}
	case <-timer.C:
		e.t.Fatalf("no event within %v of Open", e.s.opts.Timeout)
	}
	if c.Timeout() <= 0 {
		e.t.Errorf("Timeout() = %v", c.Timeout())
	}
	c2 := e.open()
	if c.SessionID() == c2.SessionID() {
		e.t.Errorf("two sessions share the id %s", c.SessionID())
	}
	if err := c.Close(e.ctx); err != nil {
		e.t.Errorf("Close: %v", err)
	}
	rest, closed := drain(c.Events(), e.s.opts.Timeout)
	if !closed {
		e.t.Fatalf("Events not closed within %v of Close: %v", e.s.opts.Timeout, states(rest))
	}
	all := append([]backend.ConnEvent{{State: backend.StateConnected, At: time.Now()}}, rest...)
	if err := checkLife(all); err != nil {
		e.t.Errorf("after Connected: %v", err)
	}
	if err := c.Close(e.ctx); err != nil {
		e.t.Errorf("second Close: %v", err)
	}
}

// testDriverClose: closing the Driver closes its sessions: their Events end
// with StateClosed, their calls return ErrClosed, their ephemeral nodes are
// gone. Driver.Close is idempotent.
func testDriverClose(e *env) {
	d := e.s.newDriver(e.t)
	c, err := d.Open(e.ctx, e.s.opts.TTL)
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	eph := e.create(c, e.path("eph"), "eph", backend.CreateOptions{Ephemeral: true})
	if err := d.Close(); err != nil {
		e.t.Errorf("Driver.Close: %v", err)
	}
	evs, closed := drain(c.Events(), e.s.opts.Timeout)
	if !closed {
		e.t.Fatalf("Events not closed within %v of Driver.Close: %v", e.s.opts.Timeout, states(evs))
	}
	if err := checkLife(evs); err != nil {
		e.t.Errorf("after Driver.Close: %v", err)
	}
	_, err = c.Get(e.ctx, eph.Path)
	e.wantErr(err, coordkit.ErrClosed, "Get after Driver.Close")
	if err := c.Close(e.ctx); err != nil {
		e.t.Errorf("Conn.Close after Driver.Close: %v", err)
	}
	if err := d.Close(); err != nil {
		e.t.Errorf("second Driver.Close: %v", err)
	}
	watcher := e.open()
	e.gone(watcher, eph.Path, "Get of an ephemeral node after its Driver closed")
}

// testConcurrency: one Conn used from many goroutines at once.
func testConcurrency(e *env) {
	c := e.open()
	const n = 50
	dir, base := e.path("q"), e.path("q", "c-")
	made := make([]backend.Node, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			made[i], errs[i] = c.Create(e.ctx, base, data("c"), backend.CreateOptions{Sequential: true, Ephemeral: i%2 == 0, Protected: i%3 == 0})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		e.t.Fatalf("concurrent creates: %v", err)
	}
	byPath := map[string]backend.Node{}
	tokens := map[int64]bool{}
	for _, m := range made {
		byPath[m.Path] = m
		tokens[m.Token] = true
	}
	if len(byPath) != n || len(tokens) != n {
		e.t.Errorf("%d concurrent creates gave %d paths and %d tokens", n, len(byPath), len(tokens))
	}
	kids := e.children(c, dir)
	if len(kids) != n {
		e.t.Errorf("Children: %d, want %d", len(kids), n)
	}
	e.checkOrder("Children after concurrent creates", kids)
	for i, k := range kids {
		m, ok := byPath[k.Path]
		if !ok || m.Seq != k.Seq {
			e.t.Errorf("Children lists %s (seq %d), which no create returned that way", k.Path, k.Seq)
		}
		if i > 0 && ok && m.Token <= byPath[kids[i-1].Path].Token {
			e.t.Errorf("Children lists %s (token %d) after %s (token %d)", k.Path, m.Token, kids[i-1].Path, byPath[kids[i-1].Path].Token)
		}
	}

	// Compare-and-set increments from many goroutines: none lost.
	counter := e.path("counter")
	e.create(c, counter, "0", backend.CreateOptions{})
	const incs = 20
	for i := range incs {
		errs[i] = nil
		wg.Go(func() {
			for errs[i] == nil {
				g, err := c.Get(e.ctx, counter)
				if err != nil {
					errs[i] = err
					return
				}
				v := strings.TrimPrefix(string(g.Data), string(data("")))
				_, err = c.Set(e.ctx, counter, data(v+"+"), g.Version)
				if err == nil {
					return
				}
				if !errors.Is(err, backend.ErrBadVersion) {
					errs[i] = err
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs[:incs]...); err != nil {
		e.t.Fatalf("concurrent compare-and-set: %v", err)
	}
	if g := e.get(c, counter); string(g.Data) != string(data("0"+strings.Repeat("+", incs))) {
		e.t.Errorf("after %d compare-and-set increments: %q", incs, g.Data)
	}

	for i := range n {
		wg.Go(func() { errs[i] = c.Delete(e.ctx, made[i].Path, backend.AnyVersion) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		e.t.Fatalf("concurrent deletes: %v", err)
	}
	if kids := e.children(c, dir); len(kids) != 0 {
		e.t.Errorf("Children after concurrent deletes: %q", paths(kids))
	}
	e.del(c, counter)
}

// testContext: a cancelled ctx makes every call return an error matching
// context.Canceled, an expired one context.DeadlineExceeded; the Conn works
// on afterwards.
func testContext(e *env) {
	c := e.open()
	dir := e.path("ctx")
	target := e.path("ctx", "t")
	e.create(c, target, "t", backend.CreateOptions{})
	guard := backend.GuardOf(e.get(c, target))

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tc := range []struct {
		ctx  context.Context
		want error
	}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
		want := func(what string, err error) {
			e.t.Helper()
			e.wantErr(err, tc.want, what)
		}
		conn, err := e.d.Open(tc.ctx, e.s.opts.TTL)
		want("Open", err)
		if conn != nil {
			_ = conn.Close(e.ctx)
			drain(conn.Events(), e.s.opts.Timeout)
		}
		_, err = c.Create(tc.ctx, e.path("ctx", "n"), data("n"), backend.CreateOptions{})
		want("Create", err)
		_, _, err = c.CreateAndList(tc.ctx, e.path("ctx", "l-"), data("l"), backend.CreateOptions{Sequential: true, Protected: true})
		want("CreateAndList", err)
		_, err = c.Get(tc.ctx, target)
		want("Get", err)
		_, err = c.Children(tc.ctx, dir)
		want("Children", err)
		_, err = c.Set(tc.ctx, target, data("x"), backend.AnyVersion)
		want("Set", err)
		_, err = c.GuardedSet(tc.ctx, []backend.Guard{guard}, target, data("x"), backend.AnyVersion)
		want("GuardedSet", err)
		want("Delete", c.Delete(tc.ctx, target, backend.AnyVersion))
		_, _, w, err := c.Watch(tc.ctx, target)
		want("Watch", err)
		if w != nil {
			w.Stop()
		}
		_, w, err = c.WatchChildren(tc.ctx, dir)
		want("WatchChildren", err)
		if w != nil {
			w.Stop()
		}
	}
	// The session lives on. A write cut off by its ctx may still have been
	// applied, so delete whatever is there.
	e.children(c, dir)
	Cleanup(e.t, c, dir)
}
