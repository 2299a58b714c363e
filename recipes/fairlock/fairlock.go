package fairlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/internal/detach"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/internal/hold"
	"github.com/coordkit/coordkit/recipes/internal/lockpath"
	"github.com/coordkit/coordkit/recipes/internal/retry"
	"github.com/coordkit/coordkit/recipes/internal/waitq"
	"github.com/coordkit/coordkit/session"
)

// NodeName is the name every lock node asks for, as in Curator's
// InterProcessMutex (LOCK_NAME): the driver makes it
// "_c_<uuid36>-lock-<sequence>".
const NodeName = "lock-"

// longestNode is the longest path suffix a Lock adds below its path:
// "/_c_<uuid36>-lock-" and the longest sequence suffix.
const longestNode = len("/") + lockpath.ProtectedPrefix + len(NodeName) + lockpath.SequenceSuffix

// Option configures a Lock.
type Option func(*options)

type options struct {
	log *zap.Logger
}

// WithLogger sets the logger for queue and grant events (debug) and
// clean-up failures (warn). Default: no logging.
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// Lock is a fair lock on one path. It holds no state between calls: any
// number of goroutines may call Lock and TryLock on it at once, and each
// call queues its own node. Create it with New.
type Lock struct {
	sess   *session.Session
	path   string
	log    *zap.Logger
	spec   *waitq.Spec
	locker *locker // what Locker returns
}

// New returns the lock at path on the session's backend. It validates path
// and s before any network call: an invalid path, one too long for the
// nodes below it, or one with an element after the first that is a name
// the locks use for their own nodes (owner, queue, owner-pin-*, _c_*: such a
// lock would sit on, or below, another lock's node) returns an error matching coordkit.ErrInvalidPath, a
// nil session one matching coordkit.ErrInvalidArgument. New itself makes
// no network call; the lock's directory is created (as a container on
// ZooKeeper) by the first Lock.
func New(s *session.Session, path string, opts ...Option) (*Lock, error) {
	if s == nil {
		return nil, fmt.Errorf("fairlock: nil session: %w", coordkit.ErrInvalidArgument)
	}
	if err := lockpath.Check(path, longestNode); err != nil {
		return nil, fmt.Errorf("fairlock: %w", err)
	}
	o := options{log: zap.NewNop()}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	log := o.log.With(zap.String("lock", path))
	l := &Lock{
		sess: s,
		path: path,
		log:  log,
		spec: &waitq.Spec{
			Dir:    path,
			Name:   NodeName,
			Member: waitq.NamedMember(NodeName),
			Decide: waitq.Predecessor(1),
			Log:    log,
			Runner: detach.From(s.Context()),
		},
	}
	l.locker = &locker{l: l}
	return l, nil
}

// Path returns the lock's path.
func (l *Lock) Path() string { return l.path }

// Lock queues for the lock and returns once it is granted, in FIFO order.
// It returns an error, and leaves no node behind, when ctx ends (wrapping
// ctx.Err()), when the session can no longer hold (suspended under
// session.StandardPolicy, lost or closed: the error matches
// coordkit.ErrSessionLost or coordkit.ErrClosed), or when its node is
// deleted by someone else while it waits (recipes.ErrWaiterDeleted). A nil
// ctx returns an error matching coordkit.ErrInvalidArgument.
func (l *Lock) Lock(ctx context.Context) (*Guard, error) {
	return l.acquire(ctx, true)
}

// TryLock takes the lock if nobody holds it or waits for it, and otherwise
// returns recipes.ErrLocked without waiting. Either way it costs one
// CreateAndList; when the lock is taken, it deletes its node again before it
// returns (one more round trip), leaving nothing behind. It does not wait
// for a reconnect either: on a suspended session (under
// session.SessionPolicy, which lets a Lock wait for the reconnect) it
// returns an error matching backend.ErrConnectionLoss at once, without
// sending anything, and so it does when its create fails with a connection
// loss. (A create already sent when the connection drops is waited for, as
// in Lock: under session.SessionPolicy until the reconnect, or until the
// session is lost.) Other errors are as for Lock.
func (l *Lock) TryLock(ctx context.Context) (*Guard, error) {
	return l.acquire(ctx, false)
}

func (l *Lock) acquire(ctx context.Context, block bool) (*Guard, error) {
	op := "lock"
	if !block {
		op = "try lock"
	}
	if ctx == nil {
		return nil, fmt.Errorf("fairlock: %s %s: nil context: %w", op, l.path, coordkit.ErrInvalidArgument)
	}
	join := waitq.Join
	if !block {
		join = waitq.TryJoin
	}
	e, err := join(ctx, l.sess, l.spec)
	if err != nil {
		return nil, fmt.Errorf("fairlock: %s %s: %w", op, l.path, err)
	}
	if err := e.Wait(ctx, block); err != nil {
		if errors.Is(err, waitq.ErrWouldWait) {
			return nil, fmt.Errorf("fairlock: %s %s: %w", op, l.path, recipes.ErrLocked)
		}
		return nil, fmt.Errorf("fairlock: %s %s: %w", op, l.path, err)
	}
	n := e.Node()
	l.log.Debug("granted", zap.String("node", n.Path), zap.Int64("token", n.Token))
	return &Guard{lock: l, node: n, hold: hold.Start(l.sess, e.Epoch(), n, n.Token)}, nil
}

// Locker returns a sync.Locker on the lock, for code that needs one. Its
// Lock calls l.Lock with context.Background(); on a suspended session (which
// fails a Lock under session.StandardPolicy) it waits for the reconnect and
// queues again, and it panics if the Lock fails otherwise (the session was
// lost or closed, its node was deleted), as etcd's concurrency.NewLocker
// does. Its Unlock releases the oldest Guard its Lock took (Guard.Unlock
// with context.Background()). It panics if it holds none, or if the server
// refuses the delete; never because of the connection or the session: a
// hold that was lost, a session that ended (the node went with it), and a
// release not confirmed because the connection is down (the node is deleted
// once it is back, or with the session) all return normally. Every call
// returns the same Locker. Prefer Lock and Guard, which report errors and
// loss.
func (l *Lock) Locker() sync.Locker { return l.locker }

type locker struct {
	l    *Lock
	mu   sync.Mutex
	held []*Guard // normally at most one; more only if a hold was lost
}

func (k *locker) Lock() {
	var backoff time.Duration
	for {
		g, err := k.l.Lock(context.Background())
		if err == nil {
			k.hold(g)
			return
		}
		if k.l.sess.Err() != nil || !errors.Is(err, coordkit.ErrSessionLost) {
			panic(err)
		}
		// Suspended: the session may come back; a sync.Locker cannot
		// report the error, so wait for it and queue again.
		if werr := retry.Wait(context.Background(), k.l.sess, &backoff); werr != nil {
			panic(werr)
		}
	}
}

func (k *locker) hold(g *Guard) {
	k.mu.Lock()
	k.held = append(k.held, g)
	k.mu.Unlock()
}

func (k *locker) Unlock() {
	k.mu.Lock()
	if len(k.held) == 0 {
		k.mu.Unlock()
		panic("fairlock: Unlock of an unlocked Locker")
	}
	g := k.held[0]
	k.held = k.held[1:]
	k.mu.Unlock()
	// Guard.Unlock returns nil once the session has ended; the session
	// errors are tolerated here too, so that no path through a loss of the
	// session can panic.
	if err := g.Unlock(context.Background()); err != nil && !unconfirmed(err) &&
		!errors.Is(err, coordkit.ErrSessionLost) && !errors.Is(err, coordkit.ErrClosed) {
		panic(err)
	}
}

// unconfirmed reports whether err says that a delete did not reach the
// server, or that its outcome is unknown: it is retried in the background,
// or made by the server when the session ends.
func unconfirmed(err error) bool {
	return errors.Is(err, backend.ErrConnectionLoss) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled)
}

// Guard is one grant of the lock. It implements recipes.Held. It is safe for
// concurrent use.
type Guard struct {
	lock     *Lock
	node     backend.Node
	hold     *hold.Hold
	released atomic.Bool
}

var _ recipes.Held = (*Guard)(nil)

// Done is closed when the hold ends or may have ended: Unlock, the session's
// error policy, the session lost or closed, or the node deleted or replaced
// by someone else.
func (g *Guard) Done() <-chan struct{} { g.hold.Watch(); return g.hold.Done() }

// Err is nil while the hold lasts; afterwards why it ended:
// recipes.ErrReleased after Unlock, else an error matching recipes.ErrLost
// and the reason (coordkit.ErrSessionLost, coordkit.ErrClosed,
// recipes.ErrNodeDeleted).
func (g *Guard) Err() error { g.hold.Watch(); return g.hold.Err() }

// Context is cancelled when Done is closed; its context.Cause is Err. Run
// the guarded work under it.
func (g *Guard) Context() context.Context { g.hold.Watch(); return g.hold.Context() }

// Token is the grant's fencing token: the ZooKeeper czxid or etcd create
// revision of the lock node, from the create that queued it. Tokens strictly
// increase from one holder of the path to the next.
func (g *Guard) Token() int64 { return g.hold.Token() }

// SessionID is the id of the session that holds the lock (its Conn's
// SessionID): fence.Set uses it to tell the holder's own connection.
func (g *Guard) SessionID() string { return g.hold.SessionID() }

// Fence returns the condition that holds exactly while the guard's lock node
// exists (the incarnation with its token; a write to the node's data does not
// fail it), for backend.Conn.GuardedSet on data kept in the same backend.
func (g *Guard) Fence() backend.Guard { return g.hold.Fence() }

// Fences returns Fence alone: the lock node's protected, sequential name is
// no other node's while it exists, so on ZooKeeper its existence says it is
// this grant's node, and on etcd its create revision (the token) does.
func (g *Guard) Fences() []backend.Guard { return []backend.Guard{g.Fence()} }

// Unlock releases the lock: it ends the hold (Err becomes
// recipes.ErrReleased) and deletes exactly the guard's node (its protected,
// sequential name is no other node's while it exists). ctx bounds the
// delete; if ctx is already done (the guard's own Context, say) the delete
// runs under a context that cannot end, bounded by the driver, which ends a
// call when the connection or the session is lost. A second Unlock returns
// recipes.ErrReleased; a nil ctx returns an error matching
// coordkit.ErrInvalidArgument and releases nothing.
//
// If the hold had already been lost (Err matches recipes.ErrLost), Unlock
// still deletes the node if it is there, and returns nil. If the session
// has ended, also when the driver reports that (the server expired the
// session, say) before the session and the Guard have noticed, the node went
// with it and Unlock returns nil, as for a lost hold. If the delete
// cannot reach the server, it is retried in the background once the session
// reconnects (the server deletes the node anyway when the session ends);
// Unlock then returns an error (matching backend.ErrConnectionLoss, or
// wrapping ctx's error) if the hold was still live, nil if it had been lost.
func (g *Guard) Unlock(ctx context.Context) error {
	if ctx == nil {
		return fmt.Errorf("fairlock: unlock %s: nil context: %w", g.lock.path, coordkit.ErrInvalidArgument)
	}
	if !g.released.CompareAndSwap(false, true) {
		return fmt.Errorf("fairlock: unlock %s: %w", g.lock.path, recipes.ErrReleased)
	}
	live := g.hold.End(recipes.ErrReleased)
	gone, err := waitq.Remove(ctx, g.lock.sess, g.node, g.lock.log)
	if gone || !live {
		g.lock.log.Debug("released", zap.String("node", g.node.Path), zap.Bool("was_live", live), zap.Bool("deleted", gone))
		return nil
	}
	if unconfirmed(err) {
		return fmt.Errorf("fairlock: unlock %s: not confirmed; the node is deleted once the session reconnects, or by the server when the session ends: %w", g.lock.path, err)
	}
	return fmt.Errorf("fairlock: unlock %s: %w", g.lock.path, err)
}
