package mutex

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/internal/detach"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/internal/lockpath"
	"github.com/coordkit/coordkit/session"
)

// Names of the nodes below a lock's path (see the package documentation).
const (
	// OwnerName is the holder's node: P/owner.
	OwnerName = "owner"
	// QueueName is the directory of waiting processes: P/queue.
	QueueName = "queue"
	// WaiterName is the name each waiting process asks for in P/queue;
	// the driver makes it "_c_<uuid36>-waiter-<sequence>".
	WaiterName = "waiter-"
	// ContendedMark is the data a waiting process writes into P/owner to
	// tell the holder that somebody waits.
	ContendedMark = "contended"
)

// DefaultMaxLocalHandoffs is how many times in a row a process passes the
// lock from one of its goroutines to the next before it checks whether
// another process waits.
const DefaultMaxLocalHandoffs = 16

// longestQueueNode is the longest path suffix the Mutex adds below its path:
// "/queue/_c_<uuid36>-waiter-" and the longest sequence suffix (etcd's
// "<16 hex>-<20 digits>").
const longestQueueNode = len("/queue/") + lockpath.ProtectedPrefix + len(WaiterName) + lockpath.SequenceSuffix

// Option configures a Mutex.
type Option func(*options)

type options struct {
	maxHandoffs int
	log         *zap.Logger
}

// WithMaxLocalHandoffs sets how many times in a row the lock may pass
// between goroutines of this process without a server round trip; after n
// handoffs the process reads the owner node to learn whether another process
// waits, and if one does, releases the lock (see "Fairness bound" in the
// package documentation). n = 0 checks at every handoff. Default
// DefaultMaxLocalHandoffs. A negative n makes New fail with
// coordkit.ErrInvalidArgument. When Mutexes with different bounds share a
// session and path, the bound of the Mutex whose Guard is unlocked applies.
func WithMaxLocalHandoffs(n int) Option { return func(o *options) { o.maxHandoffs = n } }

// WithLogger sets the logger for acquisitions and releases (debug) and
// clean-up failures (warn). Default: no logging.
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// Mutex is a lock on one path. It holds no state of its own: all Mutexes on
// one session and path share the process's acquisition (see the package
// documentation). It is safe for concurrent use. Create it with New.
type Mutex struct {
	sess   *session.Session
	path   string
	opts   options
	log    *zap.Logger
	locker *locker
	// srv is the server side of the lock, which every state of the path
	// made for this Mutex copies (see newPathState).
	srv *server
	// runner, the session's, runs the acquisitions of Lock calls that must
	// be able to return before their attempt is done (see lockSolo).
	runner *detach.Runner
	// reg, the session's, holds the state of every path its Mutexes use.
	reg *registry
}

// New returns the lock at path on the session's backend. It validates its
// arguments before any network call: an invalid path, one too long for the
// nodes below it, or one with an element after the first that is a name
// the locks use for their own nodes (owner, queue, owner-pin-*, _c_*: such a
// lock would sit on, or below, another lock's node) returns an error matching coordkit.ErrInvalidPath; a
// nil session or a negative WithMaxLocalHandoffs one matching
// coordkit.ErrInvalidArgument. New makes no network call.
func New(s *session.Session, path string, opts ...Option) (*Mutex, error) {
	if s == nil {
		return nil, fmt.Errorf("mutex: nil session: %w", coordkit.ErrInvalidArgument)
	}
	if err := lockpath.Check(path, longestQueueNode); err != nil {
		return nil, fmt.Errorf("mutex: %w", err)
	}
	o := options{maxHandoffs: DefaultMaxLocalHandoffs, log: zap.NewNop()}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.maxHandoffs < 0 {
		return nil, fmt.Errorf("mutex: WithMaxLocalHandoffs(%d) must not be negative: %w", o.maxHandoffs, coordkit.ErrInvalidArgument)
	}
	m := &Mutex{sess: s, path: path, opts: o, log: o.log.With(zap.String("mutex", path))}
	m.runner = detach.From(s.Context())
	m.reg = registryOf(s)
	m.srv = newServer(s, path, m.reg, m.log)
	m.locker = &locker{m: m}
	return m, nil
}

// Path returns the lock's path.
func (m *Mutex) Path() string { return m.path }

// Lock returns once this goroutine holds the lock: at once by local handoff
// if another goroutine of the process holds it, else when the process has
// taken it on the server. Waiting goroutines of one process are served in
// FIFO order.
//
// Lock returns an error, and leaves nothing behind, when ctx ends (the error
// wraps ctx.Err(); if the lock was granted at that very moment it is released
// again), when the session is lost or closed (matching coordkit.ErrSessionLost
// or coordkit.ErrClosed), or on an unexpected server error. While the session
// is suspended Lock keeps waiting. A nil ctx returns an error matching
// coordkit.ErrInvalidArgument.
//
// Lock returns when ctx ends even if the server does not answer. A request
// in flight then is not abandoned: the process finishes the attempt in the
// background and removes what it made (or releases the lock, should the
// attempt get it) once the server answers, or the session ends. Until then
// Inspect reports it as Finishing, a TryLock of the process on the path
// returns recipes.ErrLocked, and its Lock waits for it.
func (m *Mutex) Lock(ctx context.Context) (*Guard, error) { return m.lock(ctx, false) }

// TryLock takes the lock only if it is free: it returns recipes.ErrLocked at
// once, without a round trip, if a goroutine of this process holds, waits
// for, or is releasing the lock (or an earlier call's attempt is still
// finishing: see Lock), and after one create of the owner node if another
// process holds it. (If this session may have left an owner node of its own
// behind, after a lost reply or a failed delete, the create that finds the
// node is followed by a read, and by the node's removal and one more create
// if it is the session's own.) It never queues. Unlike Lock, it does not
// wait through a suspension: on a suspended session (under StandardPolicy)
// it returns at once an error matching session.ErrSuspended, which also
// matches coordkit.ErrSessionLost although the session may come back (check
// its State before giving it up); under SessionPolicy, which lets a
// suspended session hold, it returns at once an error matching
// backend.ErrConnectionLoss, without sending anything. (On ZooKeeper a
// create already sent when the connection drops is waited for, bounded by
// ctx: until the reconnect tells its outcome, or the session ends.) Like
// every error of Lock and TryLock, it never matches recipes.ErrLost: a call
// that got no hold lost nothing. Other errors are as for Lock.
func (m *Mutex) TryLock(ctx context.Context) (*Guard, error) { return m.lock(ctx, true) }

func (m *Mutex) lock(ctx context.Context, try bool) (*Guard, error) {
	op := "lock"
	if try {
		op = "try lock"
	}
	if ctx == nil {
		return nil, fmt.Errorf("mutex: %s %s: nil context: %w", op, m.path, coordkit.ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mutex: %s %s: %w", op, m.path, ctxErr(ctx))
	}
	if err := m.sess.Err(); err != nil {
		return nil, fmt.Errorf("mutex: %s %s: %w", op, m.path, err)
	}
	if p := attachSolo(m); p != nil {
		return p.lockSolo(ctx, m, try, op)
	}
	p := attach(m)
	r := &request{m: m, try: try, reply: make(chan result, 1)}
	select {
	case p.reqs <- r:
	case <-p.exited:
		return nil, fmt.Errorf("mutex: %s %s: %w", op, m.path, sessionErr(m.sess))
	}
	select {
	case res := <-r.reply:
		if res.err != nil {
			return nil, fmt.Errorf("mutex: %s %s: %w", op, m.path, res.err)
		}
		return res.g, nil
	case <-ctx.Done():
		c := cancelMsg{req: r, ack: make(chan struct{})}
		select {
		case p.cancels <- c:
			<-c.ack
		case <-p.exited:
		}
		return nil, fmt.Errorf("mutex: %s %s: %w", op, m.path, ctxErr(ctx))
	}
}

// Locker returns a sync.Locker on the lock, for code that needs one. Its Lock
// calls m.Lock with context.Background() and panics if that fails (the
// session was lost or closed), as etcd's concurrency.NewLocker does; its
// Unlock releases the Guard its Lock took and panics if there is none or the
// release fails. Every call returns the same Locker. Prefer Lock and Guard,
// which report errors and loss.
func (m *Mutex) Locker() sync.Locker { return m.locker }

type locker struct {
	m *Mutex
	g atomic.Pointer[Guard] // the lock excludes Lockers, so there is at most one
}

func (l *locker) Lock() {
	g, err := l.m.Lock(context.Background())
	if err != nil {
		panic(err)
	}
	l.g.Store(g)
}

func (l *locker) Unlock() {
	g := l.g.Swap(nil)
	if g == nil {
		panic("mutex: Unlock of an unlocked Locker")
	}
	if err := g.Unlock(context.Background()); err != nil {
		panic(err)
	}
}

// Guard is one goroutine's hold of the lock. It implements recipes.Held. It
// is safe for concurrent use.
type Guard struct {
	p        *pathState
	m        *Mutex
	acq      *acquisition
	ctx      context.Context
	cancel   context.CancelCauseFunc
	released atomic.Bool
	solo     bool // granted on the solo path (see solo.go)
}

var _ recipes.Held = (*Guard)(nil)

// Done is closed when this goroutine's hold ends or may have ended: Unlock,
// or the loss of the process's acquisition (see "Loss" in the package
// documentation).
func (g *Guard) Done() <-chan struct{} { g.acq.hold.Watch(); return g.ctx.Done() }

// Err is nil while the hold lasts; afterwards why it ended:
// recipes.ErrReleased after Unlock, else an error matching recipes.ErrLost
// and the reason (coordkit.ErrSessionLost, coordkit.ErrClosed,
// recipes.ErrNodeDeleted).
func (g *Guard) Err() error {
	g.acq.hold.Watch()
	if g.ctx.Err() == nil && g.acq.hold.Err() == nil {
		return nil
	}
	// A hold whose session epoch is ending is ended by hold.Err itself
	// (the session's cancellation may still be under way), and g.ctx with
	// it: it derives from the hold's context.
	return context.Cause(g.ctx)
}

// Context is cancelled when Done is closed; its context.Cause is Err. Run
// the guarded work under it.
func (g *Guard) Context() context.Context { g.acq.hold.Watch(); return g.ctx }

// Token is the fencing token of the process's acquisition: the ZooKeeper
// czxid or etcd create revision of the owner node. Goroutines that got the
// lock by local handoff share it; the next acquisition, by any session, has a
// larger one.
func (g *Guard) Token() int64 { return g.acq.node.Token }

// SessionID is the id of the session that holds the lock (its Conn's
// SessionID): fence.Set uses it to tell the holder's own connection.
func (g *Guard) SessionID() string { return g.acq.hold.SessionID() }

// Fence returns the condition for guarded writes to data kept in the same
// backend (backend.Conn.GuardedSet, or fence.Set): the owner node exists
// and, where the backend can compare it (etcd, memory), is the incarnation
// with this token. See "Fencing tokens" in the package documentation for
// what ZooKeeper can check.
func (g *Guard) Fence() backend.Guard {
	return backend.Guard{Path: g.acq.node.Path, Token: g.acq.node.Token, Version: backend.AnyVersion}
}

// Fences returns the conditions that together hold exactly while this
// acquisition is current (see "Fencing tokens" in the package
// documentation): Fence, and on ZooKeeper also the lock's directory at the
// version this acquisition's create stamped it with and the pin created
// with the owner node.
func (g *Guard) Fences() []backend.Guard {
	fs := []backend.Guard{g.Fence()}
	if st := g.acq.proof.stamp; st.Known && st.Pin != "" {
		fs = append(fs, st.Parent, backend.Guard{Path: st.Pin, Version: backend.AnyVersion})
	}
	return fs
}

// Unlock releases this goroutine's hold: Err becomes recipes.ErrReleased
// and the lock passes to the next waiting goroutine of the process, or, if
// none waits (or the bound of WithMaxLocalHandoffs is reached and another
// process waits), is released on the server. At the bound Unlock first
// asks the server whether another process waits (one round trip) and
// returns with the answer if none does. When the lock is released on the
// server, Unlock returns once the owner node is deleted. ctx bounds these
// waits (if ctx is already done, the session timeout does) but not the work:
// when ctx ends first, Unlock returns an error wrapping ctx's, and the check
// and the release go on (retried after a connection loss until done or the
// session ends; the release completes before this process acquires the lock
// again). The Guard is released either way.
//
// If the hold had already been lost (Err matches recipes.ErrLost), Unlock
// still deletes the owner node if it is still there and returns nil. A
// second Unlock returns recipes.ErrReleased; a nil ctx returns an error
// matching coordkit.ErrInvalidArgument and releases nothing.
func (g *Guard) Unlock(ctx context.Context) error {
	if ctx == nil {
		return fmt.Errorf("mutex: unlock %s: nil context: %w", g.m.path, coordkit.ErrInvalidArgument)
	}
	if !g.released.CompareAndSwap(false, true) {
		return fmt.Errorf("mutex: unlock %s: %w", g.m.path, recipes.ErrReleased)
	}
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), g.m.sess.Timeout())
		defer cancel()
	}
	if g.solo {
		if done, err := g.unlockSolo(ctx); done {
			if err != nil {
				return fmt.Errorf("mutex: unlock %s: %w", g.m.path, err)
			}
			return nil
		}
		// Handed over to the loop: unlock through it.
	}
	u := unlockMsg{g: g, reply: make(chan error, 1)}
	select {
	case g.p.unlocks <- u:
	case <-g.p.exited:
		// The session ended and took the lock with it. Err says
		// released, as after any Unlock (a no-op if the loss ended g).
		g.cancel(recipes.ErrReleased)
		return nil
	}
	select {
	case err := <-u.reply:
		if err != nil {
			return fmt.Errorf("mutex: unlock %s: %w", g.m.path, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mutex: unlock %s: not done yet (the release, or at the handoff bound the check for other processes, goes on): %w", g.m.path, ctxErr(ctx))
	case <-g.p.exited:
		g.cancel(recipes.ErrReleased)
		return nil
	}
}

// ctxErr wraps ctx's error, with its cause when that says more.
func ctxErr(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("%w: %w", err, cause)
	}
	return err
}

// sessionErr is the session's terminal error, or coordkit.ErrClosed if it
// has not been recorded yet.
func sessionErr(s *session.Session) error {
	if err := s.Err(); err != nil {
		return err
	}
	return coordkit.ErrClosed
}
