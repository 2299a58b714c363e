package etcd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
)

// eventBuffer is the capacity of the Events channel. The state loop keeps
// its own unbounded queue in front of it; the buffer only lets the loop end
// without waiting for a reader that is a few events behind.
const eventBuffer = 64

// conn is one etcd lease, kept alive by a concurrency.Session.
type conn struct {
	d            *Driver
	cli          *clientv3.Client
	lg           *zap.Logger
	lease        clientv3.LeaseID
	id           string
	ttl          time.Duration
	granted      time.Time // when the grant reply arrived
	suspendAfter time.Duration
	marker       string
	sess         *concurrency.Session
	kaCancel     context.CancelFunc // stops the session's and our keepalive channels
	seq          atomic.Uint64      // sequential creates so far

	// ctx is cancelled, with the terminal error as cause, when the session
	// expires or Close begins: it aborts calls in flight and ends watches.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// bgCtx bounds the best-effort revoke after expiry; Close cancels it.
	bgCtx    context.Context
	bgCancel context.CancelFunc

	events   chan backend.ConnEvent
	expireCh chan error    // reasons to expire, from watchers and calls
	closeCh  chan struct{} // closed by Close for the state loop
	loopDone chan struct{} // closed when the state loop sent its terminal event
	closed   chan struct{} // closed when Close has finished

	mu           sync.Mutex
	dead         error // nil while the session lives
	closeStarted bool
	wg           sync.WaitGroup // marker watcher, watches, revoke after expiry
}

var _ backend.Conn = (*conn)(nil)

// SessionID is the lease ID in lower-case hex.
func (c *conn) SessionID() string { return c.id }

// Timeout is the lease TTL the server granted.
func (c *conn) Timeout() time.Duration { return c.ttl }

// Events delivers the session's state changes; see the package doc.
func (c *conn) Events() <-chan backend.ConnEvent { return c.events }

func (c *conn) String() string { return "etcd session " + c.id }

func (c *conn) deadErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

// signalExpired asks the state loop to expire the session.
func (c *conn) signalExpired(err error) {
	select {
	case c.expireCh <- err:
	default: // a reason is already pending
	}
}

// run is the state loop: it owns the session's state, the suspend timer and
// the event queue. It ends once the terminal event is queued, after handing
// the queue to the Events channel (see pump).
func (c *conn) run(ka <-chan *clientv3.LeaseKeepAliveResponse) {
	var queue []backend.ConnEvent
	emit := func(s backend.ConnState, err error) {
		queue = append(queue, backend.ConnEvent{State: s, Err: err, At: time.Now()})
	}
	// One timer: while connected it fires suspendAfter after the last
	// keepalive reply (StateDisconnected); while disconnected, a TTL after
	// it, when the server has certainly expired the lease unless a leader
	// change extended it, and etcd's client stops refreshing it anyway
	// (StateExpired).
	lastReply := c.granted
	timer := time.NewTimer(time.Until(lastReply.Add(c.suspendAfter)))
	defer timer.Stop()
	sessDone := c.sess.Done()
	disconnected := false
	emit(backend.StateConnected, nil)

	expire := func(reason error) bool {
		lost := fmt.Errorf("etcd: session %s: %w: %w", c.id, coordkit.ErrSessionLost, reason)
		c.mu.Lock()
		if c.closeStarted || c.dead != nil {
			c.mu.Unlock()
			return false // Close is under way: it sends StateClosed.
		}
		c.dead = lost
		c.wg.Add(1)
		c.mu.Unlock()
		c.cancel(lost)
		c.lg.Info("etcd session expired", zap.Error(reason))
		emit(backend.StateExpired, lost)
		go c.cleanupAfterExpiry()
		return true
	}

	for {
		var out chan<- backend.ConnEvent
		var head backend.ConnEvent
		if len(queue) > 0 {
			out, head = c.events, queue[0]
		}
		terminal := false
		select {
		case out <- head:
			queue = queue[1:]
		case r, ok := <-ka:
			switch {
			case !ok:
				ka = nil
				terminal = expire(errors.New("lease keepalive ended (lease not found, or no reply within its TTL)"))
			case r.TTL <= 0:
				terminal = expire(rpctypes.ErrLeaseNotFound)
			default:
				lastReply = time.Now()
				timer.Reset(c.suspendAfter)
				if disconnected {
					disconnected = false
					c.lg.Info("etcd session reconnected")
					emit(backend.StateReconnected, nil)
				}
			}
		case <-timer.C:
			if disconnected {
				terminal = expire(fmt.Errorf("no keepalive reply within the lease TTL %v", c.ttl))
				break
			}
			disconnected = true
			err := fmt.Errorf("etcd: session %s: no keepalive reply for %v", c.id, c.suspendAfter)
			c.lg.Info("etcd session disconnected", zap.Error(err))
			emit(backend.StateDisconnected, err)
			timer.Reset(time.Until(lastReply.Add(c.ttl)))
		case <-sessDone:
			sessDone = nil
			terminal = expire(errors.New("lease keepalive ended"))
		case err := <-c.expireCh:
			terminal = expire(err)
		case <-c.closeCh:
			emit(backend.StateClosed, nil)
			terminal = true
		}
		if terminal {
			close(c.loopDone)
			c.pump(queue)
			return
		}
	}
}

// pump delivers the events left after the terminal one and closes the
// channel. Unless the reader is more than eventBuffer events behind, this
// finishes at once; otherwise it waits for the reader, never dropping.
func (c *conn) pump(queue []backend.ConnEvent) {
	for _, ev := range queue {
		c.events <- ev
	}
	close(c.events)
}

// cleanupAfterExpiry stops refreshing the lease and revokes it, best effort,
// so that the ephemeral keys of a session we have declared lost go at once.
func (c *conn) cleanupAfterExpiry() {
	defer c.wg.Done()
	c.sess.Orphan()
	c.kaCancel()
	ctx, cancel := context.WithTimeout(c.bgCtx, c.ttl)
	defer cancel()
	if _, err := c.cli.Revoke(ctx, c.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		c.lg.Debug("revoke after expiry failed", zap.Error(err))
	}
}

// watchMarker watches the session marker key; its deletion means the lease
// is gone on the server.
func (c *conn) watchMarker(rev int64) {
	defer c.wg.Done()
	for attempt := 0; ; attempt++ {
		for resp := range c.cli.Watch(c.ctx, c.marker, clientv3.WithRev(rev)) {
			if resp.Err() != nil {
				c.lg.Debug("session marker watch ended", zap.Error(resp.Err()))
				break
			}
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					c.signalExpired(fmt.Errorf("session marker %s deleted at revision %d (lease revoked or expired)",
						c.marker, ev.Kv.ModRevision))
					return
				}
			}
		}
		if c.ctx.Err() != nil {
			return
		}
		if err := c.cli.Ctx().Err(); err != nil {
			c.signalExpired(fmt.Errorf("etcd client closed: %w", err))
			return
		}
		// The watch was compacted or cancelled: read the marker again and
		// watch on from there.
		resp, err := c.cli.Get(c.ctx, c.marker)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			if c.cli.Ctx().Err() != nil {
				c.signalExpired(fmt.Errorf("etcd client closed: %w", err))
				return
			}
			c.lg.Debug("reading session marker failed", zap.Error(err))
			t := time.NewTimer(min(time.Duration(attempt+1)*100*time.Millisecond, time.Second))
			select {
			case <-c.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		if len(resp.Kvs) == 0 {
			c.signalExpired(fmt.Errorf("session marker %s is gone (lease revoked or expired)", c.marker))
			return
		}
		rev = resp.Header.Revision + 1
		attempt = -1
	}
}

// Close revokes the lease, bounded by ctx, which deletes the session's
// ephemeral keys and its marker, then ends the session's goroutines and
// sends StateClosed. A revoke cut off by ctx leaves the lease to expire
// within its TTL. Close is idempotent.
func (c *conn) Close(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	c.mu.Lock()
	if c.closeStarted {
		c.mu.Unlock()
		select {
		case <-c.closed:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("etcd: close session %s: %w", c.id, ctx.Err())
		}
	}
	c.closeStarted = true
	wasAlive := c.dead == nil
	c.dead = fmt.Errorf("etcd: session %s: %w", c.id, coordkit.ErrClosed)
	c.mu.Unlock()
	c.cancel(coordkit.ErrClosed)

	var err error
	if wasAlive {
		c.sess.Orphan()
		c.kaCancel()
		if _, rerr := c.cli.Revoke(ctx, c.lease); rerr != nil && !errors.Is(rerr, rpctypes.ErrLeaseNotFound) {
			if cerr := ctx.Err(); cerr != nil {
				rerr = cerr
			}
			err = fmt.Errorf("etcd: close session %s: revoke lease (it expires within %v): %w", c.id, c.ttl, rerr)
		}
	}
	close(c.closeCh)
	<-c.loopDone

	waited := make(chan struct{})
	go func() { c.wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		c.bgCancel()
		<-waited
	}
	c.bgCancel()
	c.d.forget(c)
	c.lg.Debug("etcd session closed")
	close(c.closed)
	return err
}

// begin starts a call: it fails if the session is gone and returns a context
// that is also cancelled when the session ends.
func (c *conn) begin(ctx context.Context, op, path string) (context.Context, context.CancelFunc, error) {
	if ctx == nil {
		return nil, nil, fmt.Errorf("etcd: %s %q: nil context: %w", op, path, coordkit.ErrInvalidArgument)
	}
	if dead := c.deadErr(); dead != nil {
		return nil, nil, fmt.Errorf("etcd: %s %q: %w", op, path, dead)
	}
	octx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	return octx, func() { stop(); cancel() }, nil
}

// fail maps an error of the etcd client to the seam's errors.
func (c *conn) fail(ctx context.Context, op, path string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("etcd: %s %q: %w", op, path, cerr)
	}
	if dead := c.deadErr(); dead != nil {
		return fmt.Errorf("etcd: %s %q: %w", op, path, dead)
	}
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		c.signalExpired(err)
		return fmt.Errorf("etcd: %s %q: %w: %w", op, path, coordkit.ErrSessionLost, err)
	}
	if isUnavailable(err) {
		return fmt.Errorf("etcd: %s %q: %w: %w", op, path, backend.ErrConnectionLoss, err)
	}
	return fmt.Errorf("etcd: %s %q: %w", op, path, err)
}

// isUnavailable reports whether err says the request may not have reached
// the server, or its outcome is unknown (gRPC Unavailable: connection lost,
// no leader, request timed out).
func isUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, clientv3.ErrNoAvailableEndpoints) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable
	}
	return status.Code(err) == codes.Unavailable
}
