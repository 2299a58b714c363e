// Package backend is the seam between coordkit's recipes and a coordination
// service. It is deliberately narrow: every recipe is written once against
// [Driver] and [Conn], and each driver (backend/zookeeper, backend/etcd,
// backend/memory) maps these calls onto its server. The conformance suite in
// backend/backendtest pins down the contract; every driver passes it.
//
// # Paths
//
// The seam speaks ZooKeeper-style paths on every backend: absolute,
// "/"-separated, no trailing "/" (see [ValidatePath]). On etcd a path is used
// as the key itself and the children of P are the keys directly below "P/", so
// "/a" and "/ab" never collide. Every call validates its paths before any
// network traffic and returns a *coordkit.PathError (errors.Is
// coordkit.ErrInvalidPath) without touching the server.
//
// # Sessions
//
// A [Conn] is one session: a ZooKeeper session or an etcd lease kept alive by
// the driver. Ephemeral nodes live exactly as long as it. Its state changes
// arrive, in order, on [Conn.Events]. A Conn whose session expired stays dead:
// every later call fails with coordkit.ErrSessionLost; open a new Conn.
//
// # Errors
//
// Drivers return the sentinels below and the shared ones of package coordkit
// (ErrSessionLost, ErrClosed, ErrInvalidPath), wrapped with %w, and a
// cancelled or expired ctx as ctx.Err() (wrapped). ErrConnectionLoss means the
// outcome of a write is unknown; the caller decides whether to retry.
package backend

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"time"
)

// Driver opens sessions on one coordination service. A Driver is safe for
// concurrent use. Closing the driver closes every Conn it opened.
type Driver interface {
	// Open establishes a new session whose lease lasts ttl after the server
	// last heard from the client (ZooKeeper session timeout, etcd lease TTL;
	// the server may round it, see Conn.Timeout). Open returns once the
	// session is established, or ctx's error.
	Open(ctx context.Context, ttl time.Duration) (Conn, error)

	// Name is a short name for logs and test names: "zookeeper", "etcd",
	// "memory".
	Name() string

	// Close closes every Conn opened by this driver and releases the
	// driver's own resources. State events of its Conns that nobody has read
	// beyond the Events channel's buffer are dropped (the channel is
	// closed), so that nothing outlives Close waiting for a reader. It is
	// idempotent.
	Close() error
}

// Conn is one session on the coordination service. All methods are safe for
// concurrent use. Every method that talks to the server takes a context and
// returns ctx's error (wrapped) when it is done first; a write cut off that
// way may still have been applied.
type Conn interface {
	// SessionID identifies the session: the ZooKeeper session id or the etcd
	// lease id, in lower-case hex. Node.Owner of an ephemeral node created
	// on this Conn equals it.
	SessionID() string

	// Timeout is the session timeout in force: the negotiated ZooKeeper
	// session timeout, or the etcd lease TTL granted by the server.
	Timeout() time.Duration

	// Events delivers the session's state changes in order. The driver
	// buffers them without bound, so a slow reader delays but never loses
	// them, until Driver.Close, which drops what nobody has read beyond the
	// channel's buffer. The channel is closed right after the terminal event
	// (StateExpired or StateClosed), which is always delivered unless
	// Driver.Close dropped it.
	Events() <-chan ConnEvent

	// Create creates a node and returns it with its Seq and Token. For a
	// non-sequential path this costs one round trip (ZooKeeper: a multi of
	// the create and a setData of the new node, whose Stat carries the
	// czxid; etcd: one Txn). A sequential create on ZooKeeper needs one more
	// round trip for the token (an Exists of the new node); queue recipes
	// use CreateAndList, which needs none. Missing parents are created
	// first (ZooKeeper: as container nodes, which the server removes once
	// empty; etcd: nothing to do).
	// With Sequential the server appends a creation-ordered suffix to the
	// last path element; with Protected the last element is prefixed with
	// "_c_<uuid>-" (Curator's protected mode) and a create whose reply was
	// lost is recovered by finding that node instead of leaving an orphan.
	// Returns ErrNodeExists if a non-sequential path exists.
	Create(ctx context.Context, path string, data []byte, opts CreateOptions) (Node, error)

	// CreateAndList creates a node as Create does and lists the children of
	// its parent as Children does, as seen after the create: the listing
	// always contains the new node. This is how queue recipes join a queue.
	// It costs one round trip: on etcd one Txn; on ZooKeeper the create
	// with the listing sent right behind it (the server answers a session's
	// requests in order), and a sequential node's create is a multi with an
	// empty setData of the parent, whose mzxid is the new node's czxid: a
	// queue's directory holds no data. (Should the listing have been
	// answered first, or the parent not be writable, the driver lists again
	// or reads the token: one more round trip.)
	CreateAndList(ctx context.Context, path string, data []byte, opts CreateOptions) (Node, []Node, error)

	// CreateAndWatch creates a node as Create does and arms a one-shot
	// watch on it, as Watch right after the create would: the watch fires
	// when this incarnation of the node is changed or deleted, or can no
	// longer be delivered. The node is never lost to the watch: if the
	// create succeeded but the watch could not be armed, or the node was
	// already changed or gone by then, the watch has fired already
	// (EventLost with the reason, EventChanged, EventDeleted). This is how a
	// holder learns, without a read at release, that its node is still the
	// one it created.
	//
	// On ZooKeeper the watch of a non-sequential node costs no round trip
	// of latency: its ExistsW is sent right behind the create, before the
	// create's reply, and the server answers a session's requests in order.
	// (Should it have been answered first, the driver arms it again: one more
	// round trip.) Elsewhere, and for sequential nodes, it is a Create and a
	// Watch (see CreateThenWatch).
	CreateAndWatch(ctx context.Context, path string, data []byte, opts CreateOptions) (Node, *Watch, error)

	// Get reads one node. Returns ErrNoNode if it does not exist.
	Get(ctx context.Context, path string) (Node, error)

	// Children lists the direct children of parent in creation order (see
	// Node.Seq; on ZooKeeper, children without a sequence suffix come last,
	// by name). Only Name, Path, Seq and Sequential are set on the returned
	// nodes, and Token where the listing carries it (etcd; 0 on ZooKeeper
	// and in the memory driver):
	// a node name can be used again after its node is deleted (the etcd
	// driver recycles its sequential names), so a caller that watches a
	// listed node compares Token, where set, to tell incarnations apart. A
	// parent that does not exist has no children: it is not an error.
	Children(ctx context.Context, parent string) ([]Node, error)

	// Set replaces a node's data if its Version equals version (AnyVersion
	// skips the check). Returns ErrNoNode or ErrBadVersion.
	Set(ctx context.Context, path string, data []byte, version int64) (Node, error)

	// Delete removes a node if its Version equals version (AnyVersion skips
	// the check). Returns ErrNoNode, ErrBadVersion, or ErrNotEmpty for a
	// ZooKeeper node that has children.
	Delete(ctx context.Context, path string, version int64) error

	// GuardedSet writes data to path only if every guard holds, atomically
	// on the server (ZooKeeper multi with check ops, etcd Txn compares).
	// When a guard fails nothing is written and the error is ErrGuardFailed
	// (wrapping ErrNoNode or ErrBadVersion when the driver can tell which).
	// The node at path must exist (ErrNoNode) and its version is checked as
	// in Set (ErrBadVersion).
	GuardedSet(ctx context.Context, guards []Guard, path string, data []byte, version int64) (Node, error)

	// Watch reads the node at path and arms a one-shot watch on it, in a way
	// that misses no change made after the read (ZooKeeper GetW/ExistsW; etcd
	// a watch at the current revision opened with the read, the two settled
	// on one revision: see package backend/etcd). exists reports whether the
	// node existed at the read. The watch fires once: when the node is
	// created, changed or deleted, or when it can no longer be delivered.
	Watch(ctx context.Context, path string) (node Node, exists bool, w *Watch, err error)

	// WatchChildren lists parent's children as Children does and arms a
	// one-shot watch that fires when a child is added or removed (not when
	// a child's data changes).
	WatchChildren(ctx context.Context, parent string) ([]Node, *Watch, error)

	// Close ends the session: its ephemeral nodes are deleted at once
	// (ZooKeeper closeSession; etcd lease revoke), bounded by ctx. It is
	// idempotent. Afterwards every call returns coordkit.ErrClosed, and
	// Events ends with StateClosed (unless it had already ended with
	// StateExpired). The Conn is closed locally whatever happens; if the
	// server may not have been told (the client is cut off, ctx ended
	// first), the first Close returns ErrConnectionLoss or ctx's error,
	// never nil, and the server may keep the session, and its ephemeral
	// nodes, until the session times out. Later calls return nil.
	Close(ctx context.Context) error
}

// CreateOptions select the kind of node Create makes.
type CreateOptions struct {
	// Ephemeral ties the node to the session: the server deletes it when
	// the session ends (ZooKeeper ephemeral node; etcd key attached to the
	// session's lease).
	Ephemeral bool
	// Sequential asks the server for a creation-ordered name: ZooKeeper
	// appends its 10-digit sequence number; etcd appends a suffix unique to
	// the session and orders by create revision.
	Sequential bool
	// Protected prefixes the name with "_c_<uuid36>-", as Curator's
	// protected mode does, so that a create whose reply is lost can find
	// its own node.
	Protected bool
}

// IncarnationVersions is implemented by Conns whose Node.Version also tells
// the incarnations of a path apart: a Set or Delete by a version taken from
// one incarnation can never apply to a later node created at the same path.
// etcd's versions (mod revisions, unique cluster-wide) do; ZooKeeper's data
// versions restart at 0 with every create, so a recipe that must not touch
// a newer node at a reused path reads and compares Node.Token first.
type IncarnationVersions interface {
	// VersionsIdentifyIncarnations reports whether a node's Version is
	// never shared by two incarnations of the same path.
	VersionsIdentifyIncarnations() bool
}

// ParentStamps is implemented by Conns that can stamp a node's parent in
// the transaction that creates the node, and later delete the node only if
// the stamp still holds. It lets a recipe delete a fixed-path node exactly
// (never a later node created at the same path by somebody else) with one
// request and no read, on a backend whose versions restart with every
// create (ZooKeeper; see IncarnationVersions).
//
// A stamped create writes the parent (an empty setData at any version), so
// the parent's version moves with every stamped create under it. It also
// creates a pin: an ephemeral sibling with a name unique to the call, which
// keeps the parent (a container) from being reaped, and whose presence
// proves that the parent has not been deleted and made again since (which
// would restart its version). A stamped delete checks the parent's version
// and removes the pin and the node, all in one transaction. So if the node
// was deleted by somebody else and created again with a stamp, the stamped
// delete fails and deletes nothing.
//
// The guarantee holds if every create at the path is stamped. The ZooKeeper
// and memory drivers implement it; etcd needs no stamp.
type ParentStamps interface {
	// CreateStamped creates path as Create does and, in the same
	// transaction, stamps its parent and creates the pin. It returns the
	// new node and its stamp. If the create succeeded but its reply was lost
	// (the driver found the node afterwards) the stamp's Version is unknown
	// (Stamp.Known is false): DeleteStamped then fails with
	// ErrGuardFailed, and the pin, if any, must still be removed (Unpin).
	//
	// It returns ErrNoStamp, having created nothing, when the parent cannot
	// be stamped (the root, or a parent the session may not write); the
	// caller then creates without a stamp.
	CreateStamped(ctx context.Context, path string, data []byte, opts CreateOptions) (Node, Stamp, error)

	// DeleteStamped deletes path (if its version is version; AnyVersion
	// skips the check) and the stamp's pin, atomically, if the parent still
	// has the stamp's version and the pin is still there. When the stamp no
	// longer holds, nothing is deleted and the error is ErrGuardFailed;
	// otherwise the errors are Delete's (nothing deleted either).
	DeleteStamped(ctx context.Context, path string, version int64, s Stamp) error

	// Unpin deletes the stamp's pin if it is still there, for a release
	// whose DeleteStamped failed. A pin not deleted goes with the session.
	Unpin(ctx context.Context, s Stamp) error
}

// Stamp is what ParentStamps.CreateStamped returns for the deletion of the
// node it created.
type Stamp struct {
	// Parent holds while the parent keeps the version the create's stamp
	// gave it.
	Parent Guard
	// Pin is the path of the pin created with the node.
	Pin string
	// Known reports whether Parent is known (false after a lost reply).
	Known bool
}

// PinPath returns the path of the pin of a stamped create of path (see
// ParentStamps): a sibling named after the node, the session and a number
// the session uses once.
func PinPath(path, sessionID string, n uint64) string {
	return path + "-pin-" + sessionID + "-" + strconv.FormatUint(n, 10)
}

// UnpinByDelete implements ParentStamps.Unpin on c with a Delete of the
// pin at any version; a pin already gone is not an error.
func UnpinByDelete(ctx context.Context, c Conn, s Stamp) error {
	if s.Pin == "" {
		return nil
	}
	if err := c.Delete(ctx, s.Pin, AnyVersion); err != nil && !errors.Is(err, ErrNoNode) {
		return err
	}
	return nil
}

// CreateThenWatch implements Conn.CreateAndWatch on c with a Create and then
// a Watch of the new node, for drivers that have nothing faster. See
// Conn.CreateAndWatch for what the watch reports.
func CreateThenWatch(ctx context.Context, c Conn, path string, data []byte, opts CreateOptions) (Node, *Watch, error) {
	n, err := c.Create(ctx, path, data, opts)
	if err != nil {
		return Node{}, nil, err
	}
	return n, WatchCreated(ctx, c, n), nil
}

// WatchCreated arms a watch on n, a node c has just created, that fires
// when that incarnation is changed or deleted. A watch that cannot be armed,
// or finds the node changed or gone, is returned fired (see
// Conn.CreateAndWatch).
func WatchCreated(ctx context.Context, c Conn, n Node) *Watch {
	cur, exists, w, err := c.Watch(ctx, n.Path)
	switch {
	case err != nil:
		return FiredWatch(WatchEvent{Type: EventLost, Path: n.Path, Err: err})
	case !exists || (n.Token != 0 && cur.Token != n.Token):
		w.Stop()
		return FiredWatch(WatchEvent{Type: EventDeleted, Path: n.Path})
	case n.Token != 0 && cur.Version != n.Version:
		w.Stop()
		return FiredWatch(WatchEvent{Type: EventChanged, Path: n.Path})
	}
	return w
}

// FiredWatch returns a Watch that has delivered ev already.
func FiredWatch(ev WatchEvent) *Watch {
	c := make(chan WatchEvent, 1)
	c <- ev
	return NewWatch(c, nil)
}

// Fired reports, without waiting, whether the event has arrived, for a
// holder that checks its watch now and then instead of receiving from C.
// The first call that finds the event receives it (C then never delivers
// it); every later call reports true. An event already received from C is
// not seen: use one or the other.
func (w *Watch) Fired() bool {
	if w.fired {
		return true
	}
	select {
	case <-w.c:
		w.fired = true
	default:
	}
	return w.fired
}

// AnyVersion passed as a version to Set, Delete or GuardedSet skips the
// version check.
const AnyVersion int64 = -1

// Node is a snapshot of one node as the server reported it.
type Node struct {
	// Path is the full path, including any protected prefix and sequence
	// suffix the server assigned.
	Path string
	// Name is the last element of Path.
	Name string
	// Data is the node's content (nil from Children).
	Data []byte
	// Seq orders siblings by creation: on ZooKeeper the sequence suffix as
	// the signed 32-bit number the server wrote (negative after the parent's
	// counter wrapped); on etcd the key's create revision. Compare siblings
	// with SeqLess and sort them with SortBySeq, never with <.
	Seq int64
	// Sequential reports whether Seq is meaningful: false for a ZooKeeper
	// node whose name has no sequence suffix.
	Sequential bool
	// Token is the fencing token of this incarnation of the node: the
	// ZooKeeper czxid or the etcd create revision. It grows with every node
	// created anywhere in the cluster, so a later grant has a larger token.
	// In a listing (Children, WatchChildren, CreateAndList's), set on etcd
	// only: 0 on ZooKeeper and in the memory driver.
	Token int64
	// Version is an opaque stamp of the node's current data: pass it back
	// to Set, Delete or a Guard to make the write conditional. (ZooKeeper
	// data version; etcd mod revision.)
	Version int64
	// Owner is the SessionID of the session an ephemeral node belongs to,
	// "" for a persistent node.
	Owner string
}

// Guard is one condition of a GuardedSet.
//
// The node at Path must exist; if Token is non-zero, it must be the same
// incarnation (etcd compares the create revision; ZooKeeper cannot compare
// czxid in a multi, so it checks Version, and a guard there is exact only for
// a path that is never re-created, such as a sequential or protected node);
// if Version is not AnyVersion, its Version must equal it.
type Guard struct {
	// Path is the node the guard checks.
	Path string
	// Token, if non-zero, is the incarnation the node must be (Node.Token;
	// ZooKeeper cannot compare it, see above).
	Token int64
	// Version, if not AnyVersion, is the version the node must have.
	Version int64
}

// GuardOf returns the guard that holds exactly while n is unchanged.
func GuardOf(n Node) Guard { return Guard{Path: n.Path, Token: n.Token, Version: n.Version} }

// SeqLess reports whether a sibling with sequence a was created before one
// with sequence b. ZooKeeper's per-parent counter is a signed 32-bit number
// that wraps from 2147483647 to -2147483648, so values are compared with
// serial-number arithmetic (RFC 1982): correct as long as the live siblings
// span less than 2^31. The counter is the parent's cversion, which moves on
// every create and every delete of a child, so that is 2^31 changes of the
// child list (about 2^30 nodes created and deleted) between the oldest and
// the newest, not 2^31 creations. etcd revisions are 64-bit and never wrap.
// SeqLess is not transitive over values spanning 2^31 or more: sort siblings
// with SortBySeq, never with SeqLess.
func SeqLess(a, b int64) bool {
	if a >= -1<<31 && a < 1<<31 && b >= -1<<31 && b < 1<<31 {
		return int32(uint32(a)-uint32(b)) < 0
	}
	return a < b
}

// SortBySeq sorts sibling nodes into creation order, as Conn.Children lists
// them: sequential nodes first, then the others by name. Ties (equal Seq) are
// broken by Name, and the sort is stable.
//
// The order of the sequential nodes is a total order (unlike SeqLess, which
// is not transitive over values spanning 2^31 or more, so a sort by it can
// misplace any node, also between two that SeqLess orders correctly). It
// agrees with SeqLess on every pair whenever the sequential nodes span less
// than 2^31 (on ZooKeeper: fewer than 2^31 changes of the parent's child
// list, creates and deletes both, between the oldest and the newest; see
// SeqLess); beyond that it is still a deterministic total order:
//
//   - If every Seq fits in int32 (ZooKeeper's counter), the values are placed
//     on the 2^32 circle and read starting just after the largest gap between
//     consecutive distinct values, that is by uint32(seq)-uint32(start) where
//     start is the value after the gap. Among equal largest gaps the one
//     whose start is the smallest signed value wins, so the order depends on
//     the set of values only, never on the input order.
//   - Otherwise (etcd's 64-bit revisions, which never wrap) by plain <.
//
// The guarantee is about the set sorted: a subset that spans less than 2^31
// inside a set that does not (a queue's nodes among foreign siblings) can be
// split by the largest gap. Filter first, then sort the subset on its own.
func SortBySeq(nodes []Node) {
	var (
		vals  []int64
		fit32 = true
	)
	for _, n := range nodes {
		if n.Sequential {
			vals = append(vals, n.Seq)
			if n.Seq < -1<<31 || n.Seq >= 1<<31 {
				fit32 = false
			}
		}
	}
	key := func(seq int64) int64 { return seq }
	if fit32 && len(vals) > 0 {
		sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
		// The gap ending at vals[0] wraps around the circle; the others end
		// at vals[i] and start at vals[i-1]. The first largest one wins.
		start, best := vals[0], int64(1<<32)-(vals[len(vals)-1]-vals[0])
		for i := 1; i < len(vals); i++ {
			if g := vals[i] - vals[i-1]; g > best {
				start, best = vals[i], g
			}
		}
		key = func(seq int64) int64 { return int64(uint32(seq) - uint32(start)) }
	}
	sort.SliceStable(nodes, func(i, j int) bool {
		a, b := nodes[i], nodes[j]
		if a.Sequential != b.Sequential {
			return a.Sequential
		}
		if a.Sequential && a.Seq != b.Seq {
			return key(a.Seq) < key(b.Seq)
		}
		return a.Name < b.Name
	})
}

// ConnState is a state of a Conn as its driver sees it. The session package
// maps these onto the user-facing states (Disconnected → Suspended, Expired →
// Lost) and adds its local timer.
type ConnState int

const (
	// StateConnected: the session is established. Sent once, first.
	StateConnected ConnState = iota + 1
	// StateDisconnected: the client lost contact with the server (ZooKeeper
	// disconnected; etcd keepalives stalled). The session may still be alive
	// on the server, or not.
	StateDisconnected
	// StateReconnected: contact is back and the same session is alive.
	StateReconnected
	// StateExpired: the server ended the session (ZooKeeper expiry, etcd
	// lease not found or revoked), or the client knows it has ended (etcd
	// keepalive deadline passed). Terminal.
	StateExpired
	// StateClosed: Close was called. Terminal.
	StateClosed
)

// String returns the state's name.
func (s ConnState) String() string {
	switch s {
	case StateConnected:
		return "Connected"
	case StateDisconnected:
		return "Disconnected"
	case StateReconnected:
		return "Reconnected"
	case StateExpired:
		return "Expired"
	case StateClosed:
		return "Closed"
	}
	return "ConnState(" + strconv.Itoa(int(s)) + ")"
}

// Terminal reports whether no event follows s.
func (s ConnState) Terminal() bool { return s == StateExpired || s == StateClosed }

// ConnEvent is one state change of a Conn.
type ConnEvent struct {
	// State is the Conn's new state.
	State ConnState
	// Err says why, for StateDisconnected and StateExpired (may be nil).
	Err error
	// At is when the driver observed the change (monotonic clock reading).
	At time.Time
}

// EventType says what a Watch saw.
type EventType int

const (
	// EventCreated: the watched node was created.
	EventCreated EventType = iota + 1
	// EventChanged: the watched node's data changed.
	EventChanged
	// EventDeleted: the watched node was deleted.
	EventDeleted
	// EventChildren: a child of the watched parent was added or removed.
	EventChildren
	// EventLost: the watch can no longer be delivered; Err says why
	// (coordkit.ErrSessionLost, coordkit.ErrClosed, or the watch was
	// stopped).
	EventLost
)

// String returns the event type's name.
func (t EventType) String() string {
	switch t {
	case EventCreated:
		return "Created"
	case EventChanged:
		return "Changed"
	case EventDeleted:
		return "Deleted"
	case EventChildren:
		return "Children"
	case EventLost:
		return "Lost"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// WatchEvent is what a Watch delivers.
type WatchEvent struct {
	// Type says what happened.
	Type EventType
	// Path is the watched path (the parent, for WatchChildren).
	Path string
	Err  error // set for EventLost
}

// Watch is a one-shot watch armed by Conn.Watch, Conn.WatchChildren or
// Conn.CreateAndWatch.
type Watch struct {
	c     <-chan WatchEvent
	stop  func()
	fired bool // Fired received the event
}

// NewWatch is for drivers: c must receive exactly one event and stop must
// release the watch's resources and be safe to call more than once and after
// the event.
func NewWatch(c <-chan WatchEvent, stop func()) *Watch { return &Watch{c: c, stop: stop} }

// C receives exactly one event. After Stop it may never receive.
func (w *Watch) C() <-chan WatchEvent { return w.c }

// Stop releases the watch. Safe to call more than once and after the event.
func (w *Watch) Stop() {
	if w.stop != nil {
		w.stop()
	}
}

// Sentinel errors of the seam. Drivers wrap them with %w.
var (
	// ErrNoNode: the node does not exist.
	ErrNoNode = errors.New("backend: node does not exist")
	// ErrNodeExists: a node already exists at that path.
	ErrNodeExists = errors.New("backend: node already exists")
	// ErrBadVersion: the node's version is not the one given.
	ErrBadVersion = errors.New("backend: version mismatch")
	// ErrNotEmpty: the node has children and cannot be deleted.
	ErrNotEmpty = errors.New("backend: node has children")
	// ErrGuardFailed: a guard of a GuardedSet did not hold; nothing was
	// written.
	ErrGuardFailed = errors.New("backend: guard failed")
	// ErrConnectionLoss: the connection broke with the request in flight;
	// a write may or may not have been applied. The session may live on.
	// Conn.Close returns it too when the server may not have been told:
	// the session and its ephemeral nodes may live on until it times out.
	ErrConnectionLoss = errors.New("backend: connection loss, outcome unknown")
	// ErrDataTooLarge: the data exceeds MaxDataSize.
	ErrDataTooLarge = errors.New("backend: data too large")
	// ErrNoStamp: ParentStamps.CreateStamped cannot write the parent;
	// nothing was created.
	ErrNoStamp = errors.New("backend: parent cannot be stamped")
)

// MaxDataSize is the largest node data the seam accepts: below ZooKeeper's
// default jute.maxbuffer (1 MiB) and etcd's default request limit (1.5 MiB),
// leaving room for the request envelope.
const MaxDataSize = 1000 * 1024
