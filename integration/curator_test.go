package integration_test

import (
	"context"
	"errors"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/coordkit/coordkit/integration"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/fairlock"
	"github.com/coordkit/coordkit/session"
)

// curatorNode is the name of an InterProcessMutex lock node: Curator's
// protected prefix (_c_ and a UUID) then lock- and ZooKeeper's sequence.
var curatorNode = regexp.MustCompile(`^_c_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-lock-[0-9]{10}$`)

// curatorLockPath returns a fresh lock path for the test (Curator creates the
// parents as containers, which the server reaps once empty).
func curatorLockPath(t *testing.T) string {
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	return "/curator-interop/" + name + "-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "/lock"
}

// curatorWatcher returns a plain go-zookeeper connection for observing lock
// directories, closed when the test ends.
func curatorWatcher(t *testing.T, addrs []string) *zk.Conn {
	t.Helper()
	conn, _, err := zk.Connect(addrs, 10*time.Second, zk.WithLogger(quietLogger{}))
	if err != nil {
		t.Fatalf("zk.Connect: %v", err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// curatorSeq returns the sequence number at the end of a lock node's name.
func curatorSeq(t *testing.T, node string) int64 {
	t.Helper()
	i := strings.LastIndex(node, "lock-")
	if i < 0 {
		t.Fatalf("node %q has no lock- part", node)
	}
	n, err := strconv.ParseInt(node[i+len("lock-"):], 10, 64)
	if err != nil {
		t.Fatalf("node %q: sequence: %v", node, err)
	}
	return n
}

// curatorWaitChildren waits, through child watches (no polling, no sleeps), until
// dir has exactly n children, and returns them in sequence order.
func curatorWaitChildren(ctx context.Context, t *testing.T, conn *zk.Conn, dir string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var last []string
	for {
		children, _, ch, err := conn.ChildrenW(dir)
		switch {
		case errors.Is(err, zk.ErrNoNode):
			if n == 0 {
				return nil
			}
			ok, _, ech, err := conn.ExistsW(dir)
			if err != nil {
				t.Fatalf("exists %s: %v", dir, err)
			}
			if !ok {
				select {
				case <-ech:
				case <-ctx.Done():
					t.Fatalf("waiting for %d children of %s: %s does not exist: %v", n, dir, dir, ctx.Err())
				}
			}
			continue
		case err != nil:
			t.Fatalf("children of %s: %v", dir, err)
		}
		last = children
		if len(children) == n {
			sort.Slice(children, func(i, j int) bool { return curatorSeq(t, children[i]) < curatorSeq(t, children[j]) })
			return children
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("waiting for %d children of %s: %v (children now: %v)", n, dir, ctx.Err(), last)
		}
	}
}

// checkCuratorNode checks that node is an InterProcessMutex node directly
// under dir and returns its name.
func checkCuratorNode(t *testing.T, dir, node string) string {
	t.Helper()
	if path.Dir(node) != dir {
		t.Fatalf("lock node %q is not under %q", node, dir)
	}
	name := path.Base(node)
	if !curatorNode.MatchString(name) {
		t.Fatalf("lock node %q is not named like Curator's _c_<uuid>-lock-<seq>", name)
	}
	return name
}

type curatorGrant struct {
	node  string
	czxid int64
	err   error
}

// curatorAcquireAsync runs c.Acquire in a goroutine.
func curatorAcquireAsync(ctx context.Context, c *integration.Curator, dir string) <-chan curatorGrant {
	out := make(chan curatorGrant, 1)
	go func() {
		node, z, err := c.Acquire(ctx, dir)
		out <- curatorGrant{node, z, err}
	}()
	return out
}

func curatorNotYet[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s already happened: %+v", what, v)
	default:
	}
}

// startCurators starts n Curator drivers on the shared ZooKeeper.
func startCurators(t *testing.T, n int) ([]*integration.Curator, *integration.ZooKeeperCluster) {
	t.Helper()
	zkc := sharedZK.Get(t)
	cs := make([]*integration.Curator, n)
	for i := range cs {
		cs[i] = integration.StartCurator(t, zkc.ConnectString())
	}
	return cs, zkc
}

// TestCuratorExclusion checks the harness against Curator alone: two
// drivers (two JVMs, two sessions) exclude each other on one path, the
// waiter is granted right after the release, Curator's timed acquire and a
// cancelled Acquire leave no node behind.
func TestCuratorExclusion(t *testing.T) {
	cs, zkc := startCurators(t, 2)
	a, b := cs[0], cs[1]
	conn := curatorWatcher(t, zkc.Addrs())
	ctx := context.Background()
	dir := curatorLockPath(t)

	nodeA, zA, err := a.Acquire(ctx, dir)
	if err != nil {
		t.Fatalf("A acquire: %v", err)
	}
	nameA := checkCuratorNode(t, dir, nodeA)
	if got := curatorWaitChildren(ctx, t, conn, dir, 1); got[0] != nameA {
		t.Fatalf("children %v, want [%s]", got, nameA)
	}
	_, st, err := conn.Get(nodeA)
	if err != nil || st.Czxid != zA || st.EphemeralOwner == 0 {
		t.Fatalf("A's node: stat %+v, err %v; want czxid %d and an ephemeral owner", st, err, zA)
	}

	// Curator's own timeout: one attempt, then a wait in the queue.
	if _, _, err := b.TryAcquire(ctx, dir, 0); !errors.Is(err, integration.ErrCuratorTimedOut) {
		t.Fatalf("B TryAcquire(0) while A holds: %v, want ErrCuratorTimedOut", err)
	}
	if _, _, err := b.TryAcquire(ctx, dir, 200*time.Millisecond); !errors.Is(err, integration.ErrCuratorTimedOut) {
		t.Fatalf("B TryAcquire(200ms) while A holds: %v, want ErrCuratorTimedOut", err)
	}
	curatorWaitChildren(ctx, t, conn, dir, 1)

	// A cancelled Acquire returns at once and Curator deletes its node.
	cctx, cancel := context.WithCancel(ctx)
	cancelled := curatorAcquireAsync(cctx, b, dir)
	curatorWaitChildren(ctx, t, conn, dir, 2)
	cancel()
	if g := receive(t, "cancelled acquire", cancelled, 30*time.Second); !errors.Is(g.err, context.Canceled) {
		t.Fatalf("cancelled B acquire: %+v, want context.Canceled", g)
	}
	curatorWaitChildren(ctx, t, conn, dir, 1)

	// B queues behind A and is granted when A releases.
	queued, g := curatorHandOver(ctx, t, conn, a, b, dir, nameA)
	if name := checkCuratorNode(t, dir, g.node); name != queued || curatorSeq(t, name) <= curatorSeq(t, nameA) || g.czxid <= zA {
		t.Fatalf("B got %s (czxid %d); want its queued node %s, after A's %s (czxid %d)", name, g.czxid, queued, nameA, zA)
	}
	if got := curatorWaitChildren(ctx, t, conn, dir, 1); got[0] != path.Base(g.node) {
		t.Fatalf("children %v after A's release, want only B's", got)
	}
	if err := b.Release(ctx, dir); err != nil {
		t.Fatalf("B release: %v", err)
	}
	curatorWaitChildren(ctx, t, conn, dir, 0)

	// A's state is clean after all this: it takes the lock again.
	if _, _, err := a.Acquire(ctx, dir); err != nil {
		t.Fatalf("A acquire again: %v", err)
	}
	if err := a.Release(ctx, dir); err != nil {
		t.Fatalf("A release again: %v", err)
	}
	curatorWaitChildren(ctx, t, conn, dir, 0)
}

// curatorHandOver has b queue behind a, which holds the lock at dir with its
// node held (a name), checks that b waits, releases a and returns b's grant
// and the name of the node b queued.
func curatorHandOver(ctx context.Context, t *testing.T, conn *zk.Conn, a, b *integration.Curator, dir, held string) (string, curatorGrant) {
	t.Helper()
	granted := curatorAcquireAsync(ctx, b, dir)
	queued := curatorWaitChildren(ctx, t, conn, dir, 2)
	if queued[0] != held || !curatorNode.MatchString(queued[1]) {
		t.Fatalf("queue %v: want A's %s first, then a Curator node", queued, held)
	}
	curatorNotYet(t, granted, "B's grant while A holds")
	if err := a.Release(ctx, dir); err != nil {
		t.Fatalf("A release: %v", err)
	}
	g := receive(t, "B's acquire", granted, 30*time.Second)
	if g.err != nil {
		t.Fatalf("B acquire: %v", g.err)
	}
	return queued[1], g
}

// TestCuratorAcquireNode checks AcquireNode, the acquire without the czxid
// read that lockbench's handoff rows use: it takes the lock as Acquire does
// (its node is the directory's one child, named like Curator's), another
// driver cannot take the lock while it is held and queues behind it, and
// after Release the other driver is granted its queued node.
func TestCuratorAcquireNode(t *testing.T) {
	cs, zkc := startCurators(t, 2)
	a, b := cs[0], cs[1]
	conn := curatorWatcher(t, zkc.Addrs())
	ctx := context.Background()
	dir := curatorLockPath(t)

	node, err := a.AcquireNode(ctx, dir)
	if err != nil {
		t.Fatalf("A AcquireNode: %v", err)
	}
	name := checkCuratorNode(t, dir, node)
	if got := curatorWaitChildren(ctx, t, conn, dir, 1); got[0] != name {
		t.Fatalf("children %v, want [%s]", got, name)
	}
	if _, _, err := b.TryAcquire(ctx, dir, 200*time.Millisecond); !errors.Is(err, integration.ErrCuratorTimedOut) {
		t.Fatalf("B TryAcquire(200ms) while A holds through AcquireNode: %v, want ErrCuratorTimedOut", err)
	}
	curatorWaitChildren(ctx, t, conn, dir, 1)

	queued, g := curatorHandOver(ctx, t, conn, a, b, dir, name)
	if got := checkCuratorNode(t, dir, g.node); got != queued {
		t.Fatalf("B got %s, want its queued node %s", got, queued)
	}
	if err := b.Release(ctx, dir); err != nil {
		t.Fatalf("B release: %v", err)
	}
	curatorWaitChildren(ctx, t, conn, dir, 0)
}

// TestCuratorBench measures Curator's InterProcessMutex on the shared
// server through the driver (short runs; the comparison harness runs longer
// ones): the uncontended acquire + release cycle, and 32 threads of one
// client contending.
func TestCuratorBench(t *testing.T) {
	cs, zkc := startCurators(t, 1)
	c := cs[0]
	conn := curatorWatcher(t, zkc.Addrs())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dir := curatorLockPath(t)
	unc, err := c.BenchUncontended(ctx, dir, 500)
	if err != nil {
		t.Fatalf("BenchUncontended: %v", err)
	}
	threads, err := c.BenchThreads(ctx, dir, 32, 2*time.Second)
	if err != nil {
		t.Fatalf("BenchThreads: %v", err)
	}
	if unc <= 0 || threads <= 0 {
		t.Fatalf("rates %v, %v: want positive", unc, threads)
	}
	t.Logf("Curator 5.4 InterProcessMutex on %s: uncontended %.0f cycles/s; 32 threads on one client %.0f acquisitions/s",
		zkc.ConnectString(), unc, threads)
	curatorWaitChildren(ctx, t, conn, dir, 0)

	// A cancelled benchmark stops and leaves nothing behind.
	bctx, bcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer bcancel()
	if _, err := c.BenchThreads(bctx, dir, 4, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled BenchThreads: %v, want context.DeadlineExceeded", err)
	}
	curatorWaitChildren(ctx, t, conn, dir, 0)
}

// curatorSession opens a coordkit session on ZooKeeper, closed when the
// test ends.
func curatorSession(t *testing.T, addrs []string) *session.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := session.New(ctx, openZooKeeperDriver(t, addrs))
	if err != nil {
		t.Fatalf("session.New: %v", err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// goLockNode finds the child of dir created by the grant with the given
// fencing token (fairlock's token is its node's czxid), checks that it is
// named like Curator's, and returns its name.
func goLockNode(t *testing.T, conn *zk.Conn, dir string, token int64) string {
	t.Helper()
	children, _, err := conn.Children(dir)
	if err != nil {
		t.Fatalf("children of %s: %v", dir, err)
	}
	for _, c := range children {
		_, st, err := conn.Get(dir + "/" + c)
		if err == nil && st.Czxid == token {
			return checkCuratorNode(t, dir, dir+"/"+c)
		}
	}
	t.Fatalf("no child of %s has czxid %d (the Go guard's token); children %v", dir, token, children)
	return ""
}

type goGrant struct {
	g   *fairlock.Guard
	err error
}

func goLockAsync(ctx context.Context, lk *fairlock.Lock) <-chan goGrant {
	out := make(chan goGrant, 1)
	go func() {
		g, err := lk.Lock(ctx)
		out <- goGrant{g, err}
	}()
	return out
}

func newFairlock(t *testing.T, s *session.Session, dir string) *fairlock.Lock {
	t.Helper()
	lk, err := fairlock.New(s, dir)
	if err != nil {
		t.Fatalf("fairlock.New(%s): %v", dir, err)
	}
	return lk
}

// TestCuratorFairlockInterop runs coordkit's fairlock and Apache Curator
// 5.4's InterProcessMutex (Debian's jars, through the Java driver) on the
// same lock paths of one ZooKeeper server: each excludes the other, a
// waiter on either side is granted right after the holder on the other side
// releases, and a mixed queue is granted in creation order. Both sides
// create nodes named _c_<uuid>-lock-<seq>. Events are ordered by watching
// the lock directory, never by sleeping.
func TestCuratorFairlockInterop(t *testing.T) {
	cs, zkc := startCurators(t, 2)
	addrs := zkc.Addrs()
	conn := curatorWatcher(t, addrs)
	goSess := []*session.Session{curatorSession(t, addrs), curatorSession(t, addrs), curatorSession(t, addrs)}

	t.Run("GoHoldsCuratorWaits", func(t *testing.T) {
		ctx := context.Background()
		j := cs[0]
		dir := curatorLockPath(t)
		lk := newFairlock(t, goSess[0], dir)
		g, err := lk.Lock(ctx)
		if err != nil {
			t.Fatalf("Go lock: %v", err)
		}
		goName := goLockNode(t, conn, dir, g.Token())
		curatorWaitChildren(ctx, t, conn, dir, 1)

		// Curator's try (one attempt) and timed acquire fail while Go holds,
		// and take their nodes away again.
		if _, _, err := j.TryAcquire(ctx, dir, 0); !errors.Is(err, integration.ErrCuratorTimedOut) {
			t.Fatalf("Curator TryAcquire(0) while Go holds: %v, want ErrCuratorTimedOut", err)
		}
		if _, _, err := j.TryAcquire(ctx, dir, 200*time.Millisecond); !errors.Is(err, integration.ErrCuratorTimedOut) {
			t.Fatalf("Curator TryAcquire(200ms) while Go holds: %v, want ErrCuratorTimedOut", err)
		}
		if got := curatorWaitChildren(ctx, t, conn, dir, 1); got[0] != goName {
			t.Fatalf("children %v, want only Go's %s", got, goName)
		}

		// Curator queues behind Go and gets the lock when Go unlocks.
		granted := curatorAcquireAsync(ctx, j, dir)
		queue := curatorWaitChildren(ctx, t, conn, dir, 2)
		if queue[0] != goName || !curatorNode.MatchString(queue[1]) {
			t.Fatalf("queue %v: want Go's %s, then Curator's node", queue, goName)
		}
		curatorNotYet(t, granted, "Curator's grant while Go holds")
		if err := g.Unlock(ctx); err != nil {
			t.Fatalf("Go unlock: %v", err)
		}
		jg := receive(t, "Curator's acquire after Go's unlock", granted, 30*time.Second)
		if jg.err != nil {
			t.Fatalf("Curator acquire: %v", jg.err)
		}
		if name := checkCuratorNode(t, dir, jg.node); name != queue[1] || jg.czxid <= g.Token() {
			t.Fatalf("Curator got %s (czxid %d); want its queued %s, with a czxid above Go's token %d", name, jg.czxid, queue[1], g.Token())
		}

		// While Curator holds, Go's TryLock is refused and leaves nothing.
		if _, err := lk.TryLock(ctx); !errors.Is(err, recipes.ErrLocked) {
			t.Fatalf("Go TryLock while Curator holds: %v, want recipes.ErrLocked", err)
		}
		if got := curatorWaitChildren(ctx, t, conn, dir, 1); got[0] != queue[1] {
			t.Fatalf("children %v, want only Curator's %s", got, queue[1])
		}
		if err := j.Release(ctx, dir); err != nil {
			t.Fatalf("Curator release: %v", err)
		}
		curatorWaitChildren(ctx, t, conn, dir, 0)
	})

	t.Run("CuratorHoldsGoWaits", func(t *testing.T) {
		ctx := context.Background()
		j := cs[0]
		dir := curatorLockPath(t)
		lk := newFairlock(t, goSess[0], dir)
		jNode, jZxid, err := j.Acquire(ctx, dir)
		if err != nil {
			t.Fatalf("Curator acquire: %v", err)
		}
		jName := checkCuratorNode(t, dir, jNode)

		if _, err := lk.TryLock(ctx); !errors.Is(err, recipes.ErrLocked) {
			t.Fatalf("Go TryLock while Curator holds: %v, want recipes.ErrLocked", err)
		}
		if got := curatorWaitChildren(ctx, t, conn, dir, 1); got[0] != jName {
			t.Fatalf("children %v after Go's TryLock, want only Curator's %s", got, jName)
		}

		// A cancelled Go Lock leaves nothing behind either.
		cctx, cancel := context.WithCancel(ctx)
		cancelled := goLockAsync(cctx, lk)
		curatorWaitChildren(ctx, t, conn, dir, 2)
		cancel()
		if r := receive(t, "cancelled Go lock", cancelled, 30*time.Second); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("cancelled Go lock: %v, want context.Canceled", r.err)
		}
		curatorWaitChildren(ctx, t, conn, dir, 1)

		granted := goLockAsync(ctx, lk)
		queue := curatorWaitChildren(ctx, t, conn, dir, 2)
		if queue[0] != jName || !curatorNode.MatchString(queue[1]) {
			t.Fatalf("queue %v: want Curator's %s, then Go's node named like Curator's", queue, jName)
		}
		curatorNotYet(t, granted, "Go's grant while Curator holds")
		if err := j.Release(ctx, dir); err != nil {
			t.Fatalf("Curator release: %v", err)
		}
		gg := receive(t, "Go's lock after Curator's release", granted, 30*time.Second)
		if gg.err != nil {
			t.Fatalf("Go lock: %v", gg.err)
		}
		if name := goLockNode(t, conn, dir, gg.g.Token()); name != queue[1] || gg.g.Token() <= jZxid {
			t.Fatalf("Go got %s (token %d); want its queued %s, with a token above Curator's czxid %d", name, gg.g.Token(), queue[1], jZxid)
		}

		// While Go holds, Curator's one attempt fails.
		if _, _, err := j.TryAcquire(ctx, dir, 0); !errors.Is(err, integration.ErrCuratorTimedOut) {
			t.Fatalf("Curator TryAcquire(0) while Go holds: %v, want ErrCuratorTimedOut", err)
		}
		if err := gg.g.Unlock(ctx); err != nil {
			t.Fatalf("Go unlock: %v", err)
		}
		curatorWaitChildren(ctx, t, conn, dir, 0)
	})

	t.Run("MixedQueueFIFO", func(t *testing.T) {
		ctx := context.Background()
		dir := curatorLockPath(t)
		type grant struct {
			who     string
			token   int64
			node    string // Curator's; Go's is found by token
			release func() error
			err     error
		}
		grants := make(chan grant, 8)
		goWaiter := func(who string, s *session.Session) {
			lk := newFairlock(t, s, dir)
			go func() {
				g, err := lk.Lock(ctx)
				if err != nil {
					grants <- grant{who: who, err: err}
					return
				}
				grants <- grant{who: who, token: g.Token(), release: func() error { return g.Unlock(ctx) }}
			}()
		}
		javaWaiter := func(who string, c *integration.Curator) {
			go func() {
				node, z, err := c.Acquire(ctx, dir)
				grants <- grant{who: who, token: z, node: node, err: err,
					release: func() error { return c.Release(ctx, dir) }}
			}()
		}

		// The holder: Go, on a session of its own.
		holder, err := newFairlock(t, goSess[0], dir).Lock(ctx)
		if err != nil {
			t.Fatalf("holder lock: %v", err)
		}
		names := map[string]string{"holder": goLockNode(t, conn, dir, holder.Token())}
		seen := map[string]bool{names["holder"]: true}
		// Queue G1, J1, G2, J2, each only once the one before is in the
		// directory, so creation order is known.
		order := []string{"G1", "J1", "G2", "J2"}
		for i, who := range order {
			switch who {
			case "G1":
				goWaiter(who, goSess[1])
			case "J1":
				javaWaiter(who, cs[0])
			case "G2":
				goWaiter(who, goSess[2])
			case "J2":
				javaWaiter(who, cs[1])
			}
			children := curatorWaitChildren(ctx, t, conn, dir, i+2)
			for _, c := range children {
				if !seen[c] {
					seen[c] = true
					names[who] = c
				}
			}
			if names[who] == "" || children[len(children)-1] != names[who] {
				t.Fatalf("after %s joined: children %v, want its node last", who, children)
			}
			checkCuratorNode(t, dir, dir+"/"+names[who])
		}
		select {
		case g := <-grants:
			t.Fatalf("%s granted while the holder holds (err %v)", g.who, g.err)
		default:
		}
		t.Logf("queue in creation order: holder (Go) %s, G1 %s, J1 %s, G2 %s, J2 %s",
			names["holder"], names["G1"], names["J1"], names["G2"], names["J2"])

		last := holder.Token()
		release := func() error { return holder.Unlock(ctx) }
		for i, want := range order {
			if err := release(); err != nil {
				t.Fatalf("release before %s: %v", want, err)
			}
			g := receive(t, "grant to "+want, grants, 30*time.Second)
			if g.err != nil {
				t.Fatalf("%s: %v", g.who, g.err)
			}
			if g.who != want {
				t.Fatalf("grant %d went to %s, want %s (creation order %v)", i+1, g.who, want, order)
			}
			var name string
			if g.node != "" {
				name = checkCuratorNode(t, dir, g.node)
			} else {
				name = goLockNode(t, conn, dir, g.token)
			}
			if name != names[want] || g.token <= last {
				t.Fatalf("%s granted on %s with token %d; want its queued node %s and a token above %d", want, name, g.token, names[want], last)
			}
			if got := curatorWaitChildren(ctx, t, conn, dir, len(order)-i); got[0] != name {
				t.Fatalf("%s holds but the queue head is %s (children %v)", want, got[0], got)
			}
			select {
			case other := <-grants:
				t.Fatalf("%s granted while %s holds (err %v)", other.who, want, other.err)
			default:
			}
			last, release = g.token, g.release
		}
		if err := release(); err != nil {
			t.Fatalf("last release: %v", err)
		}
		curatorWaitChildren(ctx, t, conn, dir, 0)
	})
}
