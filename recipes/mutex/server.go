package mutex

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/internal/hold"
	"github.com/coordkit/coordkit/recipes/internal/retry"
	"github.com/coordkit/coordkit/recipes/internal/waitq"
	"github.com/coordkit/coordkit/session"
)

// The server side of the lock: the protocol on P/owner and P/queue (see the
// package documentation). Every function here runs on a helper goroutine of
// the path's loop.

// proof is what a release has, besides the node, to tell that P/owner is
// still the node this process created, where versions do not say so
// (ZooKeeper): the stamp of its create (backend.ParentStamps), or, where P
// cannot be stamped, the watch armed with the create. Neither where
// versions identify incarnations (etcd).
type proof struct {
	// stamp, if its Pin is set, is the stamp of our create. Every create of
	// P/owner stamps P, so while the stamp holds nobody else has created
	// P/owner since ours. Its pin must be deleted with the node.
	stamp backend.Stamp
	// watch, if not nil, was armed on P/owner with its create: while it has
	// not fired, the node is still ours and unchanged.
	watch *backend.Watch
}

// none reports whether the proof proves nothing: a release must read first.
func (p proof) none() bool {
	return !p.stamp.Known && (p.watch == nil || p.watch.Fired())
}

func (p proof) stop() {
	if p.watch != nil {
		p.watch.Stop()
	}
}

// acquisition is one hold of P/owner by this process.
type acquisition struct {
	node  backend.Node // P/owner as created: Token, Version
	hold  *hold.Hold
	proof proof // for the release (see removeOwner)
	// tail is closed once the queue node the acquisition used is gone
	// (nil if it did not queue).
	tail chan struct{}
	// Owned by the loop:
	handoffs int  // local handoffs since the acquisition or the last check
	flagged  bool // a check found P/owner marked
}

type server struct {
	sess  *session.Session
	conn  backend.Conn
	reg   *registry // the session's: what the process remembers of path
	path  string
	owner string
	// exact: the backend's versions identify incarnations (etcd), so a
	// delete by version never touches a newer owner node.
	exact bool
	// stamps, where not exact and the Conn has them, stamps P with every
	// create of P/owner (see proof).
	stamps backend.ParentStamps
	log    *zap.Logger
	spawn  func(func()) // runs a goroutine the loop waits for
	spec   *waitq.Spec
}

func newServer(s *session.Session, path string, reg *registry, log *zap.Logger) *server {
	queue := backend.Join(path, QueueName)
	exact := versionsIdentifyIncarnations(s.Conn())
	var stamps backend.ParentStamps
	if !exact {
		stamps, _ = s.Conn().(backend.ParentStamps)
	}
	return &server{
		sess:   s,
		conn:   s.Conn(),
		reg:    reg,
		path:   path,
		owner:  backend.Join(path, OwnerName),
		exact:  exact,
		stamps: stamps,
		log:    log,
		spec: &waitq.Spec{
			Dir:    queue,
			Name:   WaiterName,
			Member: waitq.NamedMember(WaiterName),
			Decide: waitq.Predecessor(1),
			Log:    log,
			// The acquirer runs on a goroutine of its own, and the path's
			// state must stay registered (Snapshot.Finishing) until the
			// create's outcome is known.
			AwaitCreate: true,
		},
	}
}

var ephemeral = backend.CreateOptions{Ephemeral: true}

// acquire takes P/owner. With try it makes one attempt and returns
// recipes.ErrLocked if the node exists. Otherwise it creates P/owner
// directly unless queue is set (this process saw contention at its last
// release); if the node exists it queues under P/queue and, once at the head,
// waits for P/owner to go. It returns ctx's error (wrapped) when ctx ends and
// the session's when the session ends; connection losses and suspensions are
// waited out.
//
// Creates run under a context detached from ctx: a create is never abandoned
// in flight (which would leave its node to be cleaned up later), so when
// ctx ends the acquirer still knows what it made and removes it (a queue
// node) or reports it (an owner node, which the loop releases) before it
// returns. acquire therefore runs on a goroutine of its own (the loop's
// helper, or the solo path's when ctx can end: see lockSolo) whenever its
// caller must be able to return at ctx's end while a create waits for the
// server.
func (s *server) acquire(ctx context.Context, try, queue bool) (*acquisition, error) {
	var backoff time.Duration
	dctx := context.WithoutCancel(ctx)
	if !queue {
		for {
			epoch, err := s.usable(ctx, try, &backoff)
			if err != nil {
				return nil, err
			}
			if try && s.sess.State() == session.StateSuspended {
				// The session can still hold (SessionPolicy), but a
				// create now would wait for the reconnect (a ZooKeeper
				// client queues it), and a TryLock does not wait.
				return nil, fmt.Errorf("the session is suspended, nothing sent: %w", backend.ErrConnectionLoss)
			}
			n, p, err := s.createOwner(dctx)
			switch {
			case err == nil:
				if a := s.granted(epoch, n, p); a != nil {
					return a, nil
				}
				if try {
					return nil, epochErr(epoch)
				}
				continue // suspended right after the grant: it is undone, try again
			case errors.Is(err, backend.ErrNodeExists):
				// The node may be our own, left over (see removeLeftover):
				// queueing behind it would deadlock with a process at the
				// head that waits for it to go. Where one may be, remove
				// it and try again.
				var left bool
				var lerr error
				if s.reg.suspect(s.path) {
					left, lerr = s.removeLeftover(ctx)
				}
				switch {
				case lerr != nil && try:
					return nil, s.stopped(ctx, lerr)
				case lerr != nil:
					if err := s.retry(ctx, lerr, &backoff); err != nil {
						return nil, err
					}
					continue
				case left:
					continue
				case try:
					return nil, recipes.ErrLocked
				}
			case errors.Is(err, backend.ErrConnectionLoss) && !try:
				s.reg.setSuspect(s.path, true) // the create's outcome is unknown
				if err := s.await(ctx, &backoff); err != nil {
					return nil, err
				}
				continue
			default:
				s.reg.setSuspect(s.path, true)
				return nil, s.stopped(ctx, err)
			}
			break
		}
	}
	for {
		if _, err := s.usable(ctx, false, &backoff); err != nil {
			return nil, err
		}
		e, err := waitq.Join(dctx, s.sess, s.spec)
		if err == nil {
			if ctx.Err() != nil {
				e.Leave()
				return nil, ctxErr(ctx)
			}
			err = e.Wait(ctx, true)
		}
		if err == nil {
			a, err := s.head(ctx, &backoff)
			if err != nil {
				e.Leave()
				return nil, err
			}
			a.tail = make(chan struct{})
			s.spawn(func() {
				defer close(a.tail)
				e.Leave()
			})
			return a, nil
		}
		// The entry has left the queue. Join again unless ctx or the
		// session ended: a suspension ended the wait (waitq ties it to the
		// hold epoch), or an operator deleted our queue node.
		if err := s.stopped(ctx, err); !retryable(err) {
			return nil, err
		}
		s.log.Debug("queueing again", zap.Error(err))
		if err := s.await(ctx, &backoff); err != nil {
			return nil, err
		}
	}
}

// head waits, at the head of the queue, until this process has created
// P/owner. It marks a holder's node as contended before it waits for it.
func (s *server) head(ctx context.Context, backoff *time.Duration) (*acquisition, error) {
	var marked int64 // the token of the owner node we marked
	// deleted: the watch reported P/owner deleted, so the next step is the
	// create, without reading P/owner first (one round trip less per
	// handoff); if somebody was quicker, the create finds the node and the
	// loop reads and watches it again.
	deleted := false
	for {
		epoch, err := s.usable(ctx, false, backoff)
		if err != nil {
			return nil, err
		}
		var (
			n      backend.Node
			exists bool
			w      *backend.Watch
		)
		if !deleted {
			n, exists, w, err = s.conn.Watch(ctx, s.owner)
			if err != nil {
				if err := s.retry(ctx, err, backoff); err != nil {
					return nil, err
				}
				continue
			}
		}
		if deleted || !exists {
			deleted = false
			if w != nil {
				w.Stop()
			}
			n, p, err := s.createOwner(context.WithoutCancel(ctx))
			switch {
			case err == nil:
				if a := s.granted(epoch, n, p); a != nil {
					return a, nil
				}
			case errors.Is(err, backend.ErrNodeExists):
			default:
				s.reg.setSuspect(s.path, true) // the create's outcome may be unknown
				if err := s.retry(ctx, err, backoff); err != nil {
					return nil, err
				}
			}
			continue
		}
		if n.Owner == s.conn.SessionID() {
			// Ours, left over (see removeLeftover).
			w.Stop()
			if err := s.dropLeftover(ctx, n); err != nil {
				if err := s.retry(ctx, err, backoff); err != nil {
					return nil, err
				}
			}
			continue
		}
		if string(n.Data) != ContendedMark && n.Token != marked {
			w.Stop()
			marked = n.Token
			if _, err := s.conn.Set(ctx, s.owner, []byte(ContendedMark), n.Version); err != nil &&
				!errors.Is(err, backend.ErrNoNode) && !errors.Is(err, backend.ErrBadVersion) {
				if err := s.retry(ctx, err, backoff); err != nil {
					return nil, err
				}
			}
			continue
		}
		select {
		case ev := <-w.C():
			w.Stop()
			if ev.Type == backend.EventLost && (errors.Is(ev.Err, coordkit.ErrSessionLost) || errors.Is(ev.Err, coordkit.ErrClosed)) {
				return nil, ev.Err
			}
			deleted = ev.Type == backend.EventDeleted
		case <-ctx.Done():
			w.Stop()
			return nil, ctxErr(ctx)
		case <-s.sess.Done():
			w.Stop()
			return nil, sessionErr(s.sess)
		}
	}
}

// removeLeftover reads P/owner after a create found it there and, if it
// belongs to this session, deletes that incarnation. The session may have
// left one (the registry then suspects it): a create whose outcome is
// unknown (its reply was lost: the etcd driver returns a connection loss
// for a fixed-path create then, where the ZooKeeper driver finds the node
// by its owner) or a delete that failed. It is not held: this process holds
// nothing while it acquires (its acquisitions are serialised). It reports
// whether it removed one; once it knows, the suspicion is cleared.
func (s *server) removeLeftover(ctx context.Context) (bool, error) {
	n, err := s.conn.Get(ctx, s.owner)
	switch {
	case errors.Is(err, backend.ErrNoNode):
		s.reg.setSuspect(s.path, false)
		return false, nil
	case err != nil:
		return false, err
	case n.Owner != s.conn.SessionID():
		s.reg.setSuspect(s.path, false)
		return false, nil
	}
	if err := s.dropLeftover(ctx, n); err != nil {
		return false, err
	}
	return true, nil
}

// clearLeftover removes the owner node of this session that an attempt which
// gave up may have left (the registry suspects one: a create whose reply was
// lost, from a TryLock's one shot or from a Lock whose ctx ended before the
// outcome was known). Nobody holds such a node, yet it would keep every other
// process waiting for as long as the session lives. It retries after
// connection losses until it knows, or the session ends (which takes the node
// with it). Its caller keeps the path's state registered meanwhile, so that
// no acquisition of this process runs beside it: removeLeftover deletes any
// owner node of this session.
func (s *server) clearLeftover() {
	var backoff time.Duration
	for s.sess.Err() == nil && s.reg.suspect(s.path) {
		ctx, cancel := context.WithTimeout(s.sess.Context(), s.sess.Timeout())
		_, err := s.removeLeftover(ctx)
		cancel()
		switch {
		case err == nil, sessionEnded(err):
			return
		case !retryable(err):
			// The next acquisition of the path reads P/owner first.
			s.log.Warn("could not remove a left-over owner node of this session", zap.Error(err))
			return
		}
		if retry.Wait(s.sess.Context(), s.sess, &backoff) != nil {
			return // the session ended
		}
	}
}

// mayHaveLeftover reports whether an attempt that failed may have left an
// owner node of this live session (see clearLeftover).
func (s *server) mayHaveLeftover() bool {
	return s.sess.Err() == nil && s.reg.suspect(s.path)
}

// dropLeftover deletes n, an owner node of this session that no acquisition
// holds (see removeLeftover), and the pins next to it, and clears the
// suspicion.
func (s *server) dropLeftover(ctx context.Context, n backend.Node) error {
	s.log.Debug("removing a left-over owner node of this session", zap.Int64("token", n.Token))
	if err := s.deleteIncarnation(ctx, n, proof{}, nil); err != nil {
		return err
	}
	s.removeOwnPins(ctx)
	s.reg.setSuspect(s.path, false)
	return nil
}

// removeOwnPins deletes, best effort, the pins this session's stamped
// creates of P/owner left next to it (backend.PinPath), after a left-over
// owner node of the session was removed: their acquisitions are over (this
// process holds nothing while it acquires), and a pin keeps P from being
// reaped until the session ends, which removes any pin left here.
func (s *server) removeOwnPins(ctx context.Context) {
	if s.stamps == nil {
		return
	}
	_, prefix := backend.Split(strings.TrimSuffix(backend.PinPath(s.owner, s.conn.SessionID(), 0), "0"))
	kids, err := s.conn.Children(ctx, s.path)
	if err != nil {
		return
	}
	for _, k := range kids {
		if strings.HasPrefix(k.Name, prefix) {
			if err := s.conn.Delete(ctx, k.Path, backend.AnyVersion); err != nil && !errors.Is(err, backend.ErrNoNode) {
				s.log.Debug("could not delete a left-over pin", zap.String("pin", k.Path), zap.Error(err))
			}
		}
	}
}

// createOwner creates P/owner, with the proof its release will use (see
// proof): where versions do not identify incarnations (ZooKeeper) the
// create stamps P in the same transaction (backend.ParentStamps), or, where
// P cannot be stamped, arms a watch on the new node pipelined with the
// create (backend.Conn.CreateAndWatch).
func (s *server) createOwner(ctx context.Context) (backend.Node, proof, error) {
	if s.exact {
		n, err := s.conn.Create(ctx, s.owner, nil, ephemeral)
		return n, proof{}, err
	}
	if s.stamps != nil {
		n, st, err := s.stamps.CreateStamped(ctx, s.owner, nil, ephemeral)
		if !errors.Is(err, backend.ErrNoStamp) {
			return n, proof{stamp: st}, err
		}
	}
	n, w, err := s.conn.CreateAndWatch(ctx, s.owner, nil, ephemeral)
	return n, proof{watch: w}, err
}

// granted turns a created owner node into an acquisition, unless the hold
// epoch taken before the create has ended since: then the node is deleted
// and granted returns nil.
func (s *server) granted(epoch context.Context, n backend.Node, p proof) *acquisition {
	if epoch.Err() == nil {
		s.log.Debug("acquired", zap.Int64("token", n.Token))
		return &acquisition{node: n, proof: p, hold: hold.Start(s.sess, epoch, n, n.Token)}
	}
	// Suspended (or worse) since: undo the create, retrying through the
	// suspension until it is done or the session ends (the node then goes
	// with it). A node left behind would block the other processes for as
	// long as the session lives: the head of the queue waits for it.
	_ = s.removeOwner(nil, n, p, nil)
	p.stop()
	return nil
}

// check reports whether another process has marked the held owner node (or
// it is no longer ours): the lock should then go back to the server.
func (s *server) check(a *acquisition) bool {
	ctx, cancel := context.WithTimeout(a.hold.Context(), s.sess.Timeout())
	defer cancel()
	n, err := s.conn.Get(ctx, s.owner)
	if err != nil || n.Token != a.node.Token {
		return true
	}
	return string(n.Data) == ContendedMark
}

// release ends the acquisition's hold and deletes its owner node if it is
// still there, retrying after connection losses until it is done or the
// session ends. It reports whether another process had marked the node.
//
// With within not nil, release gives up when within ends before it is done
// and returns errInterrupted: the caller then calls release again (with nil)
// in the background to finish it. This lets a caller run the release on its
// own goroutine, bounded by its context, without starting a goroutine
// unless that context ends.
func (s *server) release(within context.Context, a *acquisition) (contended bool, err error) {
	// End the hold before the delete, so that its node watch (if armed)
	// does not take our own delete for a loss. End is quick: a watch call
	// in flight runs under the hold's context, which End cancels first.
	// Every Guard of the acquisition has ended with its own cause already.
	// (A second release finds it ended.)
	a.hold.End(recipes.ErrReleased)
	contended = a.flagged
	err = s.removeOwner(within, a.node, a.proof, &contended)
	if errors.Is(err, errInterrupted) {
		a.flagged = contended // what this attempt learnt, for the next
		return contended, err
	}
	a.proof.stop()
	if a.tail != nil {
		if within == nil {
			<-a.tail
		} else {
			select {
			case <-a.tail:
			case <-within.Done():
				a.flagged = contended
				return contended, errInterrupted
			}
		}
	}
	s.log.Debug("released", zap.Int64("token", a.node.Token), zap.Bool("contended", contended), zap.Error(err))
	return contended, err
}

// errInterrupted: a release bounded by a context (see release) stopped
// because that context ended; it must be finished by another release.
var errInterrupted = errors.New("mutex: release interrupted")

// removeOwner deletes exactly the incarnation n of the owner node, retrying
// after connection losses until it is done or the session ends (the server
// then deletes it). p is the proof of its create. It sets *marked if it
// found the node marked. With within not nil it stops, returning
// errInterrupted, once within ends.
func (s *server) removeOwner(within context.Context, n backend.Node, p proof, marked *bool) error {
	var backoff time.Duration
	for {
		if s.sess.Err() != nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(s.sess.Context(), s.sess.Timeout())
		stop := func() bool { return false }
		if within != nil {
			stop = context.AfterFunc(within, cancel)
		}
		err := s.deleteIncarnation(ctx, n, p, marked)
		stop()
		cancel()
		if err != nil && within != nil && within.Err() != nil && s.sess.Err() == nil {
			return errInterrupted
		}
		switch {
		case err == nil, s.sess.Err() != nil, sessionEnded(err):
			// Deleted, or the session is gone and its ephemeral node with
			// it (the connection can know before the session does).
			return nil
		case !retryable(err):
			s.log.Warn("could not delete the owner node", zap.Int64("token", n.Token), zap.Error(err))
			s.reg.setSuspect(s.path, true)
			return err
		}
		wait := s.sess.Context()
		if within != nil {
			wait = within
		}
		if err := retry.Wait(wait, s.sess, &backoff); err != nil {
			if within != nil && s.sess.Err() == nil {
				return errInterrupted
			}
			return nil // the session ended
		}
	}
}

// deleteIncarnation deletes exactly the incarnation n of an owner node
// (deleteOwnerIncarnation), and the pin of its stamp if any, and sets
// *marked (if not nil) when a waiter had marked it.
//
// Where the backend's versions identify an incarnation (etcd: the mod
// revision is unique cluster-wide) the delete by n's version comes first:
// one round trip. On ZooKeeper every P/owner starts at the same data
// version, so a delete by version alone could remove a newer owner node of
// another process if ours was deleted by someone else (an operator)
// meanwhile. There the proof p of our create decides (see proof):
//   - with a stamp, the delete is stamped (backend.ParentStamps: one multi
//     that checks P's version and deletes the pin and P/owner), one round
//     trip. It deletes nothing if anyone created P/owner since ours, and
//     the release then reads. If only the node's version moved (a waiter's
//     mark), the stamp still proves the node ours: it is deleted at any
//     version, stamped, with no read;
//   - with a watch armed at the create that has not fired, the delete by
//     version comes first, one round trip;
//   - otherwise (the watch fired: our node was marked, changed or deleted;
//     the stamp is unknown after a lost reply, or failed), the release
//     reads P/owner first and deletes it only if its czxid is our token, by
//     the version it read (and then removes the pin, if any).
//
// A stamped delete is exact. Without a stamp one window is left, about a
// round trip long: an operator deletes our node and another process creates
// a new one just before our delete, before the watch's notification (or
// after our read) reaches us.
func (s *server) deleteIncarnation(ctx context.Context, n backend.Node, p proof, marked *bool) error {
	readFirst := !s.exact && p.none()
	var stamp *backend.Stamp
	if s.stamps != nil && p.stamp.Known {
		stamp = &p.stamp
	}
	unpinned, err := deleteOwnerIncarnation(ctx, s.conn, n, stamp, readFirst, marked)
	if err == nil && !unpinned && p.stamp.Pin != "" {
		err = s.stamps.Unpin(ctx, p.stamp)
	}
	return err
}

// deleteOwnerIncarnation deletes n if the node at n.Path is still that
// incarnation (same Token); a node already gone, or replaced, is not an
// error. It deletes by n's version first, and after a version mismatch
// (someone wrote to the node) reads the node, compares its Token and deletes
// by the version it read. With readFirst it reads and compares before the
// first delete too: for a fixed path on a backend whose versions restart
// with every create (ZooKeeper; see backend.IncarnationVersions), where a
// delete by n's version could remove a newer node created at the path after
// n was deleted by someone else. With stamp (c is then a
// backend.ParentStamps) every delete is stamped; once the stamp fails the
// node is read and compared first, and deleted by version alone. unpinned
// reports that a stamped delete removed the stamp's pin. changed, if not
// nil, is set when the node's version had moved on since n. It gives up
// after a few writes that keep racing it, returning the last error.
func deleteOwnerIncarnation(ctx context.Context, c backend.Conn, n backend.Node, stamp *backend.Stamp, readFirst bool, changed *bool) (unpinned bool, err error) {
	version := n.Version
	read := readFirst
	for attempt := 0; ; attempt++ {
		if read {
			cur, err := c.Get(ctx, n.Path)
			switch {
			case errors.Is(err, backend.ErrNoNode):
				return false, nil
			case err != nil:
				return false, err
			case cur.Token != n.Token:
				return false, nil // replaced: ours is gone
			}
			if changed != nil && cur.Version != n.Version {
				*changed = true
			}
			version = cur.Version
		}
		if stamp != nil {
			err = c.(backend.ParentStamps).DeleteStamped(ctx, n.Path, version, *stamp)
		} else {
			err = c.Delete(ctx, n.Path, version)
		}
		switch {
		case err == nil:
			return stamp != nil, nil
		case errors.Is(err, backend.ErrGuardFailed):
			// Somebody created P/owner since ours, or P or our pin is
			// gone: only a read can tell whether the node is ours.
			stamp = nil
		case errors.Is(err, backend.ErrNoNode):
			return false, nil
		case !errors.Is(err, backend.ErrBadVersion):
			return false, err
		default:
			if changed != nil {
				*changed = true
			}
			if stamp != nil && attempt < 3 {
				// The stamp holds, so the node is still ours: only its
				// data changed (a waiter's mark). No read needed.
				version = backend.AnyVersion
				continue
			}
		}
		if attempt >= 3 {
			return false, err
		}
		read = true
	}
}

// versionsIdentifyIncarnations reports whether c's node versions tell the
// incarnations of a path apart (see backend.IncarnationVersions).
func versionsIdentifyIncarnations(c backend.Conn) bool {
	v, ok := c.(backend.IncarnationVersions)
	return ok && v.VersionsIdentifyIncarnations()
}

// usable returns the session's hold epoch once the session can hold: at once
// while it is connected, else after it reconnects. With noWait it does not
// wait but returns the reason. It returns an error when ctx or the session
// ends.
func (s *server) usable(ctx context.Context, noWait bool, backoff *time.Duration) (context.Context, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, ctxErr(ctx)
		}
		if err := s.sess.Err(); err != nil {
			return nil, err
		}
		epoch := s.sess.HoldContext()
		if epoch.Err() == nil {
			return epoch, nil
		}
		if noWait {
			return nil, epochErr(epoch)
		}
		if err := s.await(ctx, backoff); err != nil {
			return nil, err
		}
	}
}

// retry decides what to do after a failed call: nil to try again (after a
// connection loss, once the session looks connected), else the error that
// ends the acquisition.
func (s *server) retry(ctx context.Context, err error, backoff *time.Duration) error {
	if err := s.stopped(ctx, err); !retryable(err) {
		return err
	}
	return s.await(ctx, backoff)
}

// await waits until it is worth trying again (see package retry), bounded
// by ctx.
func (s *server) await(ctx context.Context, backoff *time.Duration) error {
	if err := retry.Wait(ctx, s.sess, backoff); err != nil {
		return s.stopped(ctx, err)
	}
	return nil
}

// stopped returns the error that ends the acquisition: ctx's if it ended,
// the session's if it ended, else err.
func (s *server) stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctxErr(ctx)
	}
	if serr := s.sess.Err(); serr != nil {
		return serr
	}
	return err
}

// sessionEnded reports whether err says the session is lost or closed.
func sessionEnded(err error) bool {
	return errors.Is(err, coordkit.ErrSessionLost) || errors.Is(err, coordkit.ErrClosed)
}

// retryable reports whether an acquisition or release may succeed by trying
// again on the same session. Callers rule out the end of their own context
// and of the session first (see stopped).
func retryable(err error) bool {
	return errors.Is(err, backend.ErrConnectionLoss) || errors.Is(err, recipes.ErrWaiterDeleted) ||
		errors.Is(err, session.ErrSuspended) || errors.Is(err, context.DeadlineExceeded)
}

// epochErr is the error for a hold epoch that has ended: it wraps why (not
// recipes.ErrLost: a call that gets no hold lost nothing).
func epochErr(epoch context.Context) error {
	return fmt.Errorf("the session can hold nothing now: %w", session.HoldEndReason(epoch))
}
