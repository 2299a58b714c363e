// Package hold tracks the liveness of one grant for every recipe: it
// implements the state behind recipes.Held over the session's hold context
// and, on demand, a watch on the holder's node.
package hold

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/internal/retry"
	"github.com/coordkit/coordkit/session"
)

// Hold is one grant. It ends, with a cause, when the session's hold context
// ends (the session's error policy), when End is called, or, once Watch has
// been called, when the holder's node is deleted or replaced. It is safe for
// concurrent use.
//
// The session half costs nothing per grant: no goroutine, no request (the
// hold's context is a child of the session's hold context, so it ends in
// the same call that ends the session's). The node half costs a read and a
// watch on the server and a goroutine, so it starts only when someone asks
// for it: recipes call Watch from their Guards' Done, Err and Context. A
// grant whose holder never asks how it is doing (the uncontended
// lock-work-unlock cycle) therefore costs exactly its create and its
// delete.
type Hold struct {
	sess   *session.Session
	conn   backend.Conn
	node   backend.Node
	token  int64
	epoch  context.Context
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	watched bool          // the monitor has been started
	ended   bool          // End has been called
	stopped chan struct{} // closed when the monitor goroutine exits
	backoff time.Duration // owned by the monitor
}

// Start begins tracking a grant decided on node. epoch is the session's
// HoldContext, taken before the request that decided the grant, so that a
// suspension in between is not missed. Start makes no request and starts no
// goroutine; see Watch.
func Start(s *session.Session, epoch context.Context, node backend.Node, token int64) *Hold {
	// A child of epoch: when the session's policy ends epoch, the context
	// package cancels ctx in the same call, before that call returns, with
	// epoch's cause (which matches recipes.ErrLost, see
	// session.HoldContext).
	ctx, cancel := context.WithCancelCause(epoch)
	return &Hold{sess: s, conn: s.Conn(), node: node, token: token, epoch: epoch, ctx: ctx, cancel: cancel,
		stopped: make(chan struct{})}
}

// Watch starts watching the holder's node, once: from then on the hold also
// ends with recipes.ErrNodeDeleted when the node is deleted or replaced.
// A node already gone when the watch is armed ends it too. Watch returns at
// once (the read and the watch run in the background) and does nothing
// after the hold has ended.
func (h *Hold) Watch() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watched || h.ended || h.ctx.Err() != nil {
		return
	}
	h.watched = true
	go h.monitor()
}

// monitor ends the hold when the node goes away. It is the only goroutine of
// a Hold and exits when the hold ends.
func (h *Hold) monitor() {
	defer close(h.stopped)
	for {
		if h.ctx.Err() != nil {
			return
		}
		n, exists, w, err := h.conn.Watch(h.ctx, h.node.Path)
		if errors.Is(err, backend.ErrConnectionLoss) {
			// Not a loss by itself: the session's policy decides. Wait for
			// the connection to come back (or the epoch to end) and re-arm.
			if !h.awaitReconnect() {
				return
			}
			continue
		}
		if err != nil {
			if h.ctx.Err() == nil {
				h.cancel(lost(err))
			}
			return
		}
		if !exists || n.Token != h.node.Token {
			w.Stop()
			h.cancel(recipes.ErrNodeDeleted)
			return
		}
		select {
		case ev := <-w.C():
			w.Stop()
			if ev.Type == backend.EventLost {
				if h.ctx.Err() != nil {
					return
				}
				if terminal(ev.Err) {
					h.cancel(lost(ev.Err))
					return
				}
				// The watch broke but the session did not end (etcd: no
				// leader during an election; a dropped stream): as for a
				// connection loss, the session's policy decides. Re-arm
				// once the connection looks usable.
				if !h.awaitReconnect() {
					return
				}
			}
			// Created/changed/deleted: re-read and re-arm.
		case <-h.ctx.Done(): // released, or ended with the epoch
			w.Stop()
			return
		}
	}
}

// awaitReconnect runs after a watch failed with connection loss (or broke
// on a live session). It waits (see package retry) until it is worth
// re-arming the watch, and reports whether to. h.ctx bounds the wait: it
// ends with the hold and with the epoch; a session that ends first ends the
// hold as lost here.
func (h *Hold) awaitReconnect() bool {
	if err := retry.Wait(h.ctx, h.sess, &h.backoff); err != nil {
		if h.ctx.Err() == nil {
			h.cancel(lost(err))
		}
		return false
	}
	return true
}

// terminal reports whether a watch's EventLost error means the session is
// gone (lost or closed), as opposed to a broken watch on a live session.
func terminal(err error) bool {
	return errors.Is(err, coordkit.ErrSessionLost) || errors.Is(err, coordkit.ErrClosed)
}

// lost wraps a cause so that it matches both recipes.ErrLost and the cause.
func lost(cause error) error {
	if cause == nil {
		return recipes.ErrLost
	}
	if errors.Is(cause, recipes.ErrLost) {
		return cause
	}
	return fmt.Errorf("%w: %w", recipes.ErrLost, cause)
}

// Node returns the node the grant was decided on.
func (h *Hold) Node() backend.Node { return h.node }

// Token returns the grant's fencing token.
func (h *Hold) Token() int64 { return h.token }

// Done is closed when the hold ends. It does not start the node watch.
func (h *Hold) Done() <-chan struct{} { return h.ctx.Done() }

// Context is cancelled when the hold ends; its cause is Err. It does not
// start the node watch.
func (h *Hold) Context() context.Context { return h.ctx }

// Err is nil while the hold lasts, then why it ended. It does not start the
// node watch.
func (h *Hold) Err() error {
	if h.ctx.Err() == nil {
		if h.epoch.Err() == nil {
			return nil
		}
		// epoch has ended and the context package is cancelling its
		// children, h.ctx among them, right now: end it here with the same
		// cause (a no-op if that got there first), so that Err, and the
		// Err of contexts derived from h.ctx, never lag epoch.
		h.cancel(context.Cause(h.epoch))
	}
	return context.Cause(h.ctx)
}

// End ends the hold with cause (recipes.ErrReleased on a release) unless it
// has already ended, and waits for the monitor to exit. It reports whether
// this call ended it.
func (h *Hold) End(cause error) bool {
	h.mu.Lock()
	first := !h.ended
	h.ended = true
	endedIt := first && h.Err() == nil
	if first {
		h.cancel(cause) // a no-op if the epoch got there first
	}
	watched := h.watched
	h.mu.Unlock()
	if watched {
		<-h.stopped
	}
	return endedIt
}

// SessionID is the id of the session that holds (its Conn's SessionID).
func (h *Hold) SessionID() string { return h.conn.SessionID() }

// Fence returns the guard that holds while the grant's node exists, at any
// data version: the incarnation with the grant's token (compared where the
// backend can: etcd, memory; on ZooKeeper the node's unique name says it).
// A write to the node's data does not end the hold (the monitor compares the
// token only), so it must not fail the fence either.
func (h *Hold) Fence() backend.Guard {
	return backend.Guard{Path: h.node.Path, Token: h.node.Token, Version: backend.AnyVersion}
}
