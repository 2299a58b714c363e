// Package hold tracks the liveness of one grant for every recipe: it
// implements recipes.Held over the session's hold context and a watch on the
// holder's node.
package hold

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/session"
)

// Hold is one grant. It ends, with a cause, when the session's hold context
// ends (the session's error policy), when the holder's node is deleted or
// replaced, or when End is called. It is safe for concurrent use.
type Hold struct {
	sess   *session.Session
	conn   backend.Conn
	node   backend.Node
	token  int64
	ctx    context.Context
	cancel context.CancelCauseFunc

	endOnce sync.Once
	stopped chan struct{} // closed when the monitor goroutine exits
	backoff time.Duration // owned by the monitor
}

// Start begins tracking a grant decided on node. epoch is the session's
// HoldContext, taken before the request that decided the grant, so that a
// suspension in between is not missed. The node is watched in the
// background: Start does not wait for the watch to be armed, so the grant
// costs no extra round trip of latency.
func Start(s *session.Session, epoch context.Context, node backend.Node, token int64) *Hold {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(epoch))
	h := &Hold{sess: s, conn: s.Conn(), node: node, token: token, ctx: ctx, cancel: cancel, stopped: make(chan struct{})}
	go h.monitor(epoch)
	return h
}

// monitor ends the hold when the epoch ends or the node goes away. It is the
// only goroutine of a Hold and exits when the hold ends.
func (h *Hold) monitor(epoch context.Context) {
	defer close(h.stopped)
	for {
		if err := epoch.Err(); err != nil {
			h.cancel(lost(context.Cause(epoch)))
			return
		}
		n, exists, w, err := h.conn.Watch(h.ctx, h.node.Path)
		if errors.Is(err, backend.ErrConnectionLoss) {
			// Not a loss by itself: the session's policy decides. Wait for
			// the connection to come back (or the epoch to end) and re-arm.
			if !h.awaitReconnect(epoch) {
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
				if h.ctx.Err() == nil {
					h.cancel(lost(ev.Err))
				}
				return
			}
			// Created/changed/deleted: re-read and re-arm.
		case <-epoch.Done():
			w.Stop()
			h.cancel(lost(context.Cause(epoch)))
			return
		case <-h.ctx.Done():
			w.Stop()
			return
		}
	}
}

// awaitReconnect runs after a watch failed with connection loss. It waits
// until the session is connected again, the epoch ends (then it ends the
// hold) or the hold ends, and reports whether to re-arm the watch. If the
// session still looks connected (it has not processed the disconnect yet, or
// the loss was a single broken call), it waits for the next state change or
// a backoff that doubles from 50ms to 1s, whichever comes first.
func (h *Hold) awaitReconnect(epoch context.Context) bool {
	changes, stop := h.sess.Changes()
	defer stop()
	if h.backoff == 0 {
		h.backoff = 50 * time.Millisecond
	}
	for {
		var retry <-chan time.Time
		timer := (*time.Timer)(nil)
		if st := h.sess.State(); st == session.StateConnected || st == session.StateReconnected {
			timer = time.NewTimer(h.backoff)
			retry = timer.C
			h.backoff = min(2*h.backoff, time.Second)
		}
		stopTimer := func() {
			if timer != nil {
				timer.Stop()
			}
		}
		select {
		case c := <-changes:
			stopTimer()
			if c.State == session.StateReconnected {
				h.backoff = 0
				return true
			}
		case <-retry:
			return true
		case <-epoch.Done():
			stopTimer()
			h.cancel(lost(context.Cause(epoch)))
			return false
		case <-h.ctx.Done():
			stopTimer()
			return false
		}
	}
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

// Done is closed when the hold ends.
func (h *Hold) Done() <-chan struct{} { return h.ctx.Done() }

// Context is cancelled when the hold ends; its cause is Err.
func (h *Hold) Context() context.Context { return h.ctx }

// Err is nil while the hold lasts, then why it ended.
func (h *Hold) Err() error {
	if h.ctx.Err() == nil {
		return nil
	}
	return context.Cause(h.ctx)
}

// End ends the hold with cause (recipes.ErrReleased on a release) unless it
// has already ended, and waits for the monitor to exit. It reports whether
// this call ended it.
func (h *Hold) End(cause error) bool {
	ended := false
	h.endOnce.Do(func() {
		ended = h.ctx.Err() == nil
		h.cancel(cause)
	})
	<-h.stopped
	return ended
}

// Fence returns the guard that holds while the grant's node is unchanged.
func (h *Hold) Fence() backend.Guard { return backend.GuardOf(h.node) }
