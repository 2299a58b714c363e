// Package waitq is the queue machinery every waiting recipe shares: Curator's
// LockInternals, written once against the backend seam. Locks, read-write
// locks, semaphores and elections differ only in which children of the
// queue's directory take part (Spec.Member) and in the rule that decides
// whether a participant is granted or which one it waits for (Spec.Decide).
//
// # Joining
//
// A participant joins with one CreateAndList of an ephemeral, sequential,
// protected node <Dir>/_c_<uuid36>-<Name><suffix>: the create and the listing
// that decides the first grant cost the round trips of one seam call, and a
// create whose reply is lost is recovered by the driver from its protected
// prefix. The session's hold epoch (Session.HoldContext) is taken before the
// create: a suspension or loss between the create and the grant ends the wait
// with its cause instead of granting a hold that may already be gone.
//
// The create runs under a context of its own, detached from the caller's
// and never cancelled (the drivers end a call when the connection or the
// session is lost), so that its outcome is always known; Join waits for it
// only while ctx and the hold epoch both last. A caller who gives up, or
// whose epoch ends (a suspension under session.StandardPolicy), while the
// create is in flight returns at once and never leaves a node behind: the
// goroutine that waits for the create's outcome deletes the node if the
// caller has gone. A create that fails with a connection loss (the drivers
// have already recovered a lost reply by the protected prefix) is sent again
// once the session has reconnected, as long as the epoch lasts; a TryJoin
// neither sends on a suspended session nor waits for a reconnect.
//
// # Waiting
//
// A participant that is not granted watches exactly one other node, the one
// Decide names (for a mutex its immediate predecessor), and its own node; it
// never watches the directory, so a release wakes one waiter, not a herd.
// After every wake-up it lists the directory again and decides again; its own
// node must be in every listing (else the wait ends with an error matching
// recipes.ErrWaiterDeleted). The wait also ends when ctx ends (the error wraps
// ctx.Err()), when the hold epoch ends (the error wraps its cause, which
// matches coordkit.ErrSessionLost or coordkit.ErrClosed), or when the session
// ends. A connection loss during the wait is retried once the session has
// reconnected, as long as the epoch lasts (with session.SessionPolicy it lasts
// through a short disconnect).
//
// # Leaving
//
// Every failed or cancelled wait deletes its own node (its name is no other
// node's while it exists, so no version is needed), under a context that
// cannot end (never the caller's cancelled one), bounded by the driver,
// which ends a call when the connection or the session is lost. When the
// delete cannot reach the server, it is retried in the background once the
// session reconnects; that goroutine ends when the delete is done or when
// the session ends (the server then deletes the node itself).
//
// # Order
//
// The members are ordered with backend.SortBySeq after the listing is
// filtered: by sequence number on ZooKeeper, in an order that agrees with
// serial-number arithmetic (backend.SeqLess) while the live members span less
// than 2^31 changes of the directory's child list, so a wrapped counter
// still sorts correctly; by create revision on etcd. (ZooKeeper's sequence
// number is the parent's cversion, which every create and every delete of a
// child moves: a node that joins and leaves costs 2, so the bound is about
// 2^30 nodes coming and going while the oldest member lives, such as
// TryJoins against a long hold. Past it the order, and a mutex's exclusion,
// are wrong; Curator shares the limit.) Sorting the members alone, not the
// whole listing, means that no foreign child (a persistent "job-0000000003"
// made early in the directory's life, say, antipodal to the members after
// the counter wrapped) can change the members' relative order.
package waitq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/internal/detach"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/internal/retry"
	"github.com/coordkit/coordkit/session"
)

// ErrWouldWait is returned by Entry.Wait with block false when the entry is
// not granted at once. The entry has left the queue.
var ErrWouldWait = errors.New("waitq: not granted without waiting")

// Spec describes one queue. It must not be changed once in use.
type Spec struct {
	// Dir is the queue's directory; a valid path.
	Dir string
	// Name is the name a participant asks for, such as "lock-". The driver
	// prefixes it with "_c_<uuid36>-" and appends the sequence suffix.
	Name string
	// Data is the content of a participant's node (nil for none).
	Data []byte
	// Member reports whether a child of Dir takes part in the queue.
	// Children it refuses are ignored. named reports whether the backend
	// writes the sequence number into names (see Named). Our own node always
	// takes part. Nil admits every child.
	Member func(n backend.Node, named bool) bool
	// Decide is given the members in queue order and the index of ours in
	// it. It returns -1 if ours is granted, or the index of the member to
	// wait for.
	Decide func(queue []backend.Node, ours int) int
	// Log receives debug lines and warnings. Nil logs nothing.
	Log *zap.Logger
	// Runner runs the create of a Join, so that Join can return at the end
	// of its ctx or of the hold epoch while the create waits for the server
	// (see package detach). Nil starts a goroutine for each create.
	Runner *detach.Runner
	// AwaitCreate makes Join wait for its create's outcome on the caller's
	// goroutine, however long that takes, instead of returning when ctx or
	// the hold epoch ends: for a caller that runs on a goroutine of its own
	// and must know what it made before it returns (the mutex's acquirer,
	// whose process keeps the lock's local state, and reports Finishing,
	// until then).
	AwaitCreate bool
}

// FormatSeq formats a sequence number as ZooKeeper appends it to a name:
// "%010d" of a signed 32-bit number ("0000000042", "-2147483648").
func FormatSeq(seq int64) string { return fmt.Sprintf("%010d", seq) }

// Named reports whether own, a node just created with Sequential for the
// name name, carries its sequence number in its name, as on ZooKeeper (and
// the memory driver, which follows ZooKeeper): the name ends with name
// followed by FormatSeq(own.Seq). On etcd the driver appends
// "<lease hex16>-<n>" and orders by create revision, so names carry no order
// and this reports false.
func Named(own backend.Node, name string) bool {
	return own.Sequential && strings.HasSuffix(own.Name, name+FormatSeq(own.Seq))
}

// NamedMember returns the Member function of Curator's lock recipes: where
// names carry the sequence (ZooKeeper), a child takes part if it is
// sequential and the part of its name after the last occurrence of name is
// exactly its sequence suffix (Curator sorts by that part); where they do
// not (etcd), every direct child takes part, ordered by create revision, as
// etcd's own concurrency recipes treat every key under their prefix.
func NamedMember(name string) func(n backend.Node, named bool) bool {
	return func(n backend.Node, named bool) bool {
		if !named {
			return true
		}
		i := strings.LastIndex(n.Name, name)
		return n.Sequential && i >= 0 && n.Name[i+len(name):] == FormatSeq(n.Seq)
	}
}

// Predecessor returns the Decide function of a queue that admits max
// holders at once (1 for a mutex): the first max members are granted; any
// other waits for the member max places before it (Curator's
// maxLeases rule), so each release wakes exactly one waiter.
func Predecessor(max int) func(queue []backend.Node, ours int) int {
	return func(queue []backend.Node, ours int) int {
		if ours < max {
			return -1
		}
		return ours - max
	}
}

// Entry is one participant's place in a queue, from Join until it is granted
// or leaves. It is not safe for concurrent use.
type Entry struct {
	spec  *Spec
	sess  *session.Session
	conn  backend.Conn
	log   *zap.Logger
	epoch context.Context
	node  backend.Node
	named bool
	kids  []backend.Node // the latest listing of Dir
	queue []backend.Node // the members at the grant
	left  bool
}

// Join creates the participant's node and lists the queue (one
// CreateAndList). The hold epoch is taken from the session before the
// create, and Join returns when ctx or the epoch ends, also while the create
// is in flight (the error wraps ctx.Err(), or the epoch's cause, which
// matches coordkit.ErrSessionLost or coordkit.ErrClosed). On error nothing
// is left behind: a node whose create completed after Join returned is
// deleted by the goroutine that waited for it. A connection loss before the
// node exists is waited out (the session reconnects) as long as the hold
// epoch lasts.
func Join(ctx context.Context, s *session.Session, spec *Spec) (*Entry, error) {
	return join(ctx, s, spec, true)
}

// TryJoin is Join for a caller that must not wait (a TryLock): on a session
// that is suspended (and can still hold, as under session.SessionPolicy) it
// returns an error matching backend.ErrConnectionLoss at once, without
// sending anything (a ZooKeeper client would queue the create until the
// reconnect), and a connection loss during the create is returned at once
// instead of being waited out. A create already in flight when the
// connection drops is still waited for, as long as ctx and the epoch last.
func TryJoin(ctx context.Context, s *session.Session, spec *Spec) (*Entry, error) {
	return join(ctx, s, spec, false)
}

func join(ctx context.Context, s *session.Session, spec *Spec, await bool) (*Entry, error) {
	if ctx == nil {
		return nil, fmt.Errorf("waitq: nil context: %w", coordkit.ErrInvalidArgument)
	}
	log := spec.Log
	if log == nil {
		log = zap.NewNop()
	}
	epoch := s.HoldContext()
	if epoch.Err() != nil {
		return nil, epochErr(epoch)
	}
	if ctx.Err() != nil {
		return nil, ctxErr(ctx)
	}
	if !await && s.State() == session.StateSuspended {
		return nil, fmt.Errorf("waitq: join %s: session suspended, nothing sent: %w", spec.Dir, backend.ErrConnectionLoss)
	}
	e := &Entry{spec: spec, sess: s, conn: s.Conn(), log: log, epoch: epoch}
	var (
		n       backend.Node
		kids    []backend.Node
		err     error
		backoff time.Duration
	)
	for {
		n, kids, err = e.create(ctx)
		if err == nil {
			break
		}
		if serr := e.stopped(ctx); serr != nil {
			return nil, serr
		}
		// A connection loss before the node exists (the drivers recover
		// a protected create whose reply was lost): try again once the
		// session is back, as long as the epoch lasts.
		if !await || !errors.Is(err, backend.ErrConnectionLoss) || e.awaitEpoch(ctx, &backoff) != nil {
			if serr := e.stopped(ctx); serr != nil {
				return nil, serr
			}
			return nil, fmt.Errorf("waitq: join %s: %w", spec.Dir, err)
		}
	}
	e.node, e.kids = n, kids
	e.named = Named(n, spec.Name)
	if ctx.Err() != nil {
		e.Leave()
		return nil, ctxErr(ctx)
	}
	log.Debug("joined queue", zap.String("node", n.Path), zap.Int64("token", n.Token), zap.Int("children", len(kids)))
	return e, nil
}

type created struct {
	n    backend.Node
	kids []backend.Node
	err  error
}

// create runs CreateAndList under a context detached from ctx and from the
// epoch: the create is never cut off, so its outcome is always known (the
// drivers end a call when the connection or the session is lost). create
// waits for it only while ctx and the epoch both last: if either ends first
// (the caller gives up, or the session is suspended under
// session.StandardPolicy), create returns at once, with the error of the one
// that ended, and the goroutine that waits for the outcome deletes the node,
// if one was made. (A context that can never end, as the detached one, also
// lets the ZooKeeper driver run the call on that goroutine rather than start
// its own.)
func (e *Entry) create(ctx context.Context) (backend.Node, []backend.Node, error) {
	path := backend.Join(e.spec.Dir, e.spec.Name)
	opts := backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true}
	if e.spec.AwaitCreate {
		return e.conn.CreateAndList(context.WithoutCancel(ctx), path, e.spec.Data, opts)
	}
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(e.epoch, func() { cancel(session.HoldEndReason(e.epoch)) })()
	cctx := context.WithoutCancel(ctx)
	r, ok := detach.Call(wctx, e.spec.Runner, func() created {
		n, kids, err := e.conn.CreateAndList(cctx, path, e.spec.Data, opts)
		return created{n, kids, err}
	}, func(r created) {
		// The caller has gone: undo the create.
		if r.err == nil {
			e.log.Debug("deleting the node of an abandoned join", zap.String("node", r.n.Path))
			removeUntilSessionEnds(e.sess, r.n, e.log)
		}
	})
	if !ok {
		if err := e.stopped(ctx); err != nil {
			return backend.Node{}, nil, err
		}
		return backend.Node{}, nil, ctxErr(wctx)
	}
	return r.n, r.kids, r.err
}

// Node returns the participant's node, with its Token and Version from the
// create.
func (e *Entry) Node() backend.Node { return e.node }

// Epoch returns the session's hold epoch taken before the create: start the
// grant's hold with it.
func (e *Entry) Epoch() context.Context { return e.epoch }

// Named reports whether the backend writes sequence numbers into names (see
// the package function Named).
func (e *Entry) Named() bool { return e.named }

// Queue returns the members in queue order as of the listing that granted
// the entry.
func (e *Entry) Queue() []backend.Node { return e.queue }

// members filters the latest listing, sorts the members into queue order
// and finds our node among them (-1 if it is missing). The sort comes after
// the filter: the listing's own order can be wrong for the members when it
// holds foreign sequential children (a sort of a set spanning 2^31 or more
// is not ordered by SeqLess), and the members' order must depend on the
// members only (see backend.SortBySeq).
func (e *Entry) members() ([]backend.Node, int) {
	queue := make([]backend.Node, 0, len(e.kids))
	for _, k := range e.kids {
		if k.Path == e.node.Path || e.spec.Member == nil || e.spec.Member(k, e.named) {
			queue = append(queue, k)
		}
	}
	backend.SortBySeq(queue)
	for i, k := range queue {
		if k.Path == e.node.Path {
			return queue, i
		}
	}
	return queue, -1
}

// Wait returns nil once the entry is granted. With block false it does not
// wait: if the entry is not granted by the listing of Join, it leaves and
// returns ErrWouldWait. On any error the entry has left the queue (its node
// is deleted, or will be by the background retry or by the server).
func (e *Entry) Wait(ctx context.Context, block bool) error {
	if ctx == nil {
		e.Leave()
		return fmt.Errorf("waitq: nil context: %w", coordkit.ErrInvalidArgument)
	}
	err := e.wait(ctx, block)
	if err != nil && !errors.Is(err, recipes.ErrWaiterDeleted) {
		e.Leave()
	}
	return err
}

func (e *Entry) wait(ctx context.Context, block bool) error {
	// wctx bounds every call of the wait: it ends with ctx or with the
	// epoch (whose end covers the session's).
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopEpoch := context.AfterFunc(e.epoch, func() { cancel(session.HoldEndReason(e.epoch)) })
	defer stopEpoch()

	var self *backend.Watch // our own node: fires if it is deleted
	defer func() {
		if self != nil {
			self.Stop()
		}
	}()
	var backoff time.Duration
	listed := true
	for {
		if err := e.stopped(ctx); err != nil {
			return err
		}
		if !listed {
			kids, err := e.conn.Children(wctx, e.spec.Dir)
			if err != nil {
				if err := e.retry(ctx, wctx, err, &backoff); err != nil {
					return err
				}
				continue
			}
			e.kids, listed = kids, true
		}
		queue, ours := e.members()
		if ours < 0 {
			return e.gone()
		}
		w := e.spec.Decide(queue, ours)
		if w < 0 {
			// The listing shows us granted. The epoch must still be the
			// one taken before the create.
			if err := e.stopped(ctx); err != nil {
				return err
			}
			e.queue = queue
			return nil
		}
		if !block {
			return ErrWouldWait
		}
		if self == nil {
			cur, exists, sw, err := e.conn.Watch(wctx, e.node.Path)
			if err != nil {
				if err := e.retry(ctx, wctx, err, &backoff); err != nil {
					return err
				}
				listed = false
				continue
			}
			if !exists || cur.Token != e.node.Token {
				sw.Stop()
				return e.gone()
			}
			self = sw
		}
		pred := queue[w]
		cur, exists, pw, err := e.conn.Watch(wctx, pred.Path)
		if err != nil {
			if err := e.retry(ctx, wctx, err, &backoff); err != nil {
				return err
			}
			listed = false
			continue
		}
		listed = false
		if !exists || (pred.Token != 0 && cur.Token != pred.Token) {
			// Gone since the listing (or its name reused by a newer node,
			// which queues behind us): list again at once.
			pw.Stop()
			continue
		}
		e.log.Debug("waiting", zap.String("node", e.node.Path), zap.String("for", pred.Path), zap.Int("position", ours))
		select {
		case ev := <-pw.C():
			if ev.Type == backend.EventLost {
				if err := e.lostWatch(ctx, wctx, ev, &backoff); err != nil {
					pw.Stop()
					return err
				}
			}
		case ev := <-self.C():
			self.Stop()
			self = nil
			switch ev.Type {
			case backend.EventDeleted:
				pw.Stop()
				return e.gone()
			case backend.EventLost:
				if err := e.lostWatch(ctx, wctx, ev, &backoff); err != nil {
					pw.Stop()
					return err
				}
			}
			// Changed: re-arm and list again.
		case <-wctx.Done():
		}
		pw.Stop()
	}
}

// retry decides what to do after a failed call of the wait: nil to go on
// (after a connection loss, once the session looks connected again), or the
// error that ends the wait.
func (e *Entry) retry(ctx, wctx context.Context, err error, backoff *time.Duration) error {
	if serr := e.stopped(ctx); serr != nil {
		return serr
	}
	if !errors.Is(err, backend.ErrConnectionLoss) {
		return fmt.Errorf("waitq: wait in %s: %w", e.spec.Dir, err)
	}
	if retry.Wait(wctx, e.sess, backoff) != nil {
		if serr := e.stopped(ctx); serr != nil {
			return serr
		}
		return fmt.Errorf("waitq: wait in %s: %w", e.spec.Dir, err)
	}
	return nil
}

// awaitEpoch is retry.Wait bounded by ctx and the epoch.
func (e *Entry) awaitEpoch(ctx context.Context, backoff *time.Duration) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.epoch, cancel)()
	return retry.Wait(wctx, e.sess, backoff)
}

// lostWatch handles a watch that can no longer deliver: the end of the
// session ends the wait; anything else (an etcd watch cancelled by a leader
// change or a compaction, say) is retried like a connection loss.
func (e *Entry) lostWatch(ctx, wctx context.Context, ev backend.WatchEvent, backoff *time.Duration) error {
	if serr := e.stopped(ctx); serr != nil {
		return serr
	}
	if errors.Is(ev.Err, coordkit.ErrSessionLost) || errors.Is(ev.Err, coordkit.ErrClosed) {
		return fmt.Errorf("waitq: wait in %s: %w", e.spec.Dir, ev.Err)
	}
	e.log.Debug("watch lost, listing again", zap.String("node", e.node.Path), zap.Error(ev.Err))
	return e.retry(ctx, wctx, fmt.Errorf("watch lost (%w): %w", ev.Err, backend.ErrConnectionLoss), backoff)
}

// stopped returns the error that ends the wait, if any: ctx's first, then
// the epoch's.
func (e *Entry) stopped(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctxErr(ctx)
	}
	if e.epoch.Err() != nil {
		return epochErr(e.epoch)
	}
	return nil
}

// gone is the error for our own node missing from the queue: the session's
// end if that is why, else someone deleted it.
func (e *Entry) gone() error {
	e.left = true
	if e.epoch.Err() != nil {
		return epochErr(e.epoch)
	}
	return fmt.Errorf("waitq: our node %s was deleted while waiting: %w", e.node.Path, recipes.ErrWaiterDeleted)
}

// Leave deletes the entry's node (see Remove, whose first attempt here runs
// under a context that cannot end). If the server cannot be reached the
// delete is retried in the background once the session reconnects; if the
// session has ended, the server deletes the node (it is ephemeral). Leave
// is idempotent.
func (e *Entry) Leave() {
	if e.left {
		return
	}
	e.left = true
	Remove(context.Background(), e.sess, e.node, e.log)
}

// Remove deletes n, a queue node created on s (see Delete). The first
// attempt is bounded by ctx if it is live, and in any case by the drivers,
// which end a call when the connection or the session is lost; it is
// skipped while the session is suspended. If
// that attempt cannot tell whether the node is gone (connection loss, ctx
// ended), Remove goes on in the background, retrying once the session
// reconnects, until the delete is done or the session ends (the server then
// deletes the node, which is ephemeral). A delete that fails because the
// session has ended (an error matching coordkit.ErrSessionLost or
// coordkit.ErrClosed, which the driver can return before the session has
// processed the end) counts as done: the node went with the session. Remove
// reports whether the node is known to be gone when it returns, and the
// first attempt's error, if any (nil when it is gone).
func Remove(ctx context.Context, s *session.Session, n backend.Node, log *zap.Logger) (gone bool, err error) {
	if log == nil {
		log = zap.NewNop()
	}
	if s.Err() != nil {
		return true, nil // the session's ephemeral nodes went with it
	}
	if s.State() == session.StateSuspended {
		err = fmt.Errorf("session suspended: %w", backend.ErrConnectionLoss)
	} else {
		if ctx == nil || ctx.Err() != nil {
			// A context that can never end also lets the ZooKeeper
			// driver make the call on this goroutine.
			ctx = context.Background()
		}
		err = Delete(ctx, s.Conn(), n)
		if errors.Is(err, backend.ErrConnectionLoss) && ctx.Err() == nil && s.State() != session.StateSuspended {
			// A single broken call (a lost reply): try once more at once;
			// a retry that finds the node gone is a success.
			err = Delete(ctx, s.Conn(), n)
		}
		if err == nil || sessionEnded(err) || s.Err() != nil {
			// Deleted, or gone with the session: the driver can report the
			// session's end (expired on the server, closed) before the
			// session's loop has processed it.
			return true, nil
		}
		if !retryable(err) {
			log.Warn("could not delete queue node", zap.String("node", n.Path), zap.Error(err))
			return false, err
		}
	}
	log.Debug("deleting queue node in the background", zap.String("node", n.Path), zap.Error(err))
	go removeUntilSessionEnds(s, n, log)
	return false, err
}

// removeUntilSessionEnds deletes n, retrying after connection losses until
// it is done or the session ends.
func removeUntilSessionEnds(s *session.Session, n backend.Node, log *zap.Logger) {
	var backoff time.Duration
	for {
		if s.Err() != nil {
			return
		}
		ctx, cancel := context.WithTimeout(s.Context(), s.Timeout())
		err := Delete(ctx, s.Conn(), n)
		cancel()
		if err == nil || sessionEnded(err) {
			return
		}
		if !retryable(err) {
			if s.Err() == nil {
				log.Warn("could not delete queue node", zap.String("node", n.Path), zap.Error(err))
			}
			return
		}
		if retry.Wait(s.Context(), s, &backoff) != nil {
			return
		}
	}
}

// sessionEnded reports whether err says the session has ended, which
// deletes its ephemeral nodes.
func sessionEnded(err error) bool {
	return errors.Is(err, coordkit.ErrSessionLost) || errors.Is(err, coordkit.ErrClosed)
}

// retryable reports whether a delete may succeed later on the same session.
func retryable(err error) bool {
	return errors.Is(err, backend.ErrConnectionLoss) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled)
}

// Delete deletes n, a queue node; a node already gone is not an error.
// Queue nodes have protected, sequential names that no other node takes
// while they exist (ZooKeeper never reuses a sequence number below a
// parent; the etcd driver hands a name out again only after a delete of it
// whose outcome it knows, never after one whose reply was lost), so the
// delete needs no version: on etcd it is a plain DeleteRange, as
// concurrency.Mutex's Unlock, without the compare of a Txn.
func Delete(ctx context.Context, c backend.Conn, n backend.Node) error {
	err := c.Delete(ctx, n.Path, backend.AnyVersion)
	if errors.Is(err, backend.ErrNoNode) {
		return nil
	}
	return err
}

// ctxErr wraps ctx's error, with its cause when that says more.
func ctxErr(ctx context.Context) error {
	err := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("waitq: %w: %w", err, cause)
	}
	return fmt.Errorf("waitq: %w", err)
}

// epochErr is the error for a hold epoch that ended: it wraps why
// (matching coordkit.ErrSessionLost or coordkit.ErrClosed; not
// recipes.ErrLost: a call that gets no hold lost nothing).
func epochErr(epoch context.Context) error {
	return fmt.Errorf("waitq: the session can no longer hold: %w", session.HoldEndReason(epoch))
}
