package etcd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
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
	kv           pb.KVClient // the Driver's (see commit)
	lg           *zap.Logger
	lease        clientv3.LeaseID
	id           string
	ttl          time.Duration
	granted      time.Time // when the grant reply arrived
	suspendAfter time.Duration
	marker       string
	kaCtx        context.Context    // parent of every keepalive subscription
	kaCancel     context.CancelFunc // ends every keepalive subscription
	names        namePool           // keys of sequential creates, recycled after deletes

	// ctx is cancelled, with the terminal error as cause, when the session
	// expires or Close begins: it aborts calls in flight and ends watches.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// bgCtx bounds the best-effort revoke after expiry; Close cancels it.
	bgCtx    context.Context
	bgCancel context.CancelFunc

	events      chan backend.ConnEvent
	abandoned   chan struct{} // closed by abandonEvents: pump drops what is left
	eventsDone  chan struct{} // closed once pump has closed events
	abandonOnce sync.Once
	expireCh    chan error    // reasons to expire, from watchers and calls
	closeCh     chan struct{} // closed by Close for the state loop
	loopDone    chan struct{} // closed when the state loop sent its terminal event
	closed      chan struct{} // closed when Close has finished

	mu           sync.Mutex
	dead         error                // nil while the session lives
	sess         *concurrency.Session // of the current keepalive subscription; set by Open and the state loop
	closeStarted bool
	wg           sync.WaitGroup // marker watcher, watches, lease confirmations, revoke after expiry, orphan deletes
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

// run is the state loop: it owns the session's state, the suspend timer,
// the keepalive subscription and the event queue. It ends once the terminal
// event is queued, after handing the queue to the Events channel (see pump).
func (c *conn) run(ka keepalive) {
	var queue []backend.ConnEvent
	emit := func(s backend.ConnState, err error) {
		queue = append(queue, backend.ConnEvent{State: s, Err: err, At: time.Now()})
	}
	// One timer: while connected it fires suspendAfter after the last
	// keepalive reply (StateDisconnected); while disconnected, a TTL after
	// it, when the server has certainly expired the lease unless a leader
	// change extended it (StateExpired). Confirmations never move it.
	lastReply := c.granted
	timer := time.NewTimer(time.Until(lastReply.Add(c.suspendAfter)))
	defer timer.Stop()
	kaCh, sessDone := ka.ch, ka.sess.Done()
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

	// etcd's client ends a keepalive subscription when the server answers
	// with TTL <= 0, but also when a new subscription's first reply takes
	// longer than the client's DialTimeout+1s, whatever the TTL, and a
	// member that shuts down has been seen to answer TTL <= 0 for a lease
	// that survives its restart. So an ended subscription is only a reason
	// to ask the server (confirmLease); meanwhile the timer keeps governing.
	checks := make(chan leaseCheck, 1)
	confirming := false
	confirms := 0 // confirmations since the last keepalive reply
	confirm := func(why string) {
		kaCh, sessDone = nil, nil
		if confirming || c.ctx.Err() != nil {
			return // already asking, or Close (or expiry) ended the keepalive
		}
		confirming = true
		deadline := lastReply.Add(c.ttl)
		c.lg.Info("etcd lease keepalive ended; asking the server whether the lease lives",
			zap.String("reason", why), zap.Int("confirmation", confirms+1), zap.Time("expires-by", deadline))
		c.wg.Add(1)
		go c.confirmLease(deadline, confirms, checks)
		confirms++
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
		case r, ok := <-kaCh:
			switch {
			case !ok:
				confirm("keepalive channel closed")
			case r.TTL <= 0:
				confirm(fmt.Sprintf("keepalive reply with TTL %d", r.TTL))
			default:
				lastReply = time.Now()
				confirms = 0
				timer.Reset(c.suspendAfter)
				if disconnected {
					disconnected = false
					c.lg.Info("etcd session reconnected")
					emit(backend.StateReconnected, nil)
				}
			}
		case <-sessDone:
			confirm("concurrency session ended")
		case chk := <-checks:
			confirming = false
			if chk.gone != nil {
				terminal = expire(chk.gone)
				break
			}
			next, err := c.resubscribe(ka)
			if err != nil {
				terminal = expire(fmt.Errorf("restart lease keepalive: %w", err))
				break
			}
			c.lg.Info("etcd lease alive on the server; keepalive restarted", zap.Int64("ttl-left-s", chk.ttl))
			ka = next
			kaCh, sessDone = ka.ch, ka.sess.Done()
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

// keepalive is one subscription to the client's keepalives of the lease:
// the state loop's channel and a concurrency.Session on the lease, fed by
// the same lessor entry and ended together by stop.
type keepalive struct {
	ch     <-chan *clientv3.LeaseKeepAliveResponse
	sess   *concurrency.Session
	cancel context.CancelFunc
}

// subscribe starts a keepalive subscription to the lease, below c.kaCtx.
// The client sends a keepalive at once for a lease it was not keeping
// alive, and fans every reply out to each of its channels.
func (c *conn) subscribe() (keepalive, error) {
	ctx, cancel := context.WithCancel(c.kaCtx)
	sess, err := concurrency.NewSession(c.cli, concurrency.WithLease(c.lease),
		concurrency.WithTTL(int(c.ttl/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		cancel()
		return keepalive{}, err
	}
	ch, err := c.cli.KeepAlive(ctx, c.lease)
	if err != nil {
		cancel()
		sess.Orphan()
		return keepalive{}, err
	}
	return keepalive{ch: ch, sess: sess, cancel: cancel}, nil
}

func (k keepalive) stop() {
	k.cancel()
	k.sess.Orphan()
}

// resubscribe replaces the ended subscription old with a new one and
// publishes its session. If Close has begun it keeps old: Close ends it.
func (c *conn) resubscribe(old keepalive) (keepalive, error) {
	next, err := c.subscribe()
	if err != nil {
		return old, err
	}
	c.mu.Lock()
	if c.closeStarted || c.dead != nil {
		c.mu.Unlock()
		next.stop()
		return old, nil
	}
	c.sess = next.sess
	c.mu.Unlock()
	old.stop()
	return next, nil
}

// leaseCheck is the outcome of confirmLease.
type leaseCheck struct {
	gone error // why the lease is gone; nil if the server still has it
	ttl  int64 // seconds left on the server, when it has the lease
}

// leaseState is what a TimeToLive answer says about a lease.
type leaseState int

const (
	leaseUnknown leaseState = iota // no answer: ask again
	leaseAlive
	leaseGone
)

// judgeTimeToLive reads a TimeToLive answer. The server reports a lease it
// does not have as TTL -1 (the error "lease not found" is read the same
// way), and the time left in whole seconds rounded down, so TTL 0 is a
// lease with under a second left, still alive. Any other error leaves the
// question open.
func judgeTimeToLive(resp *clientv3.LeaseTimeToLiveResponse, err error) leaseState {
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return leaseGone
	case err != nil || resp == nil:
		return leaseUnknown
	case resp.TTL < 0:
		return leaseGone
	default:
		return leaseAlive
	}
}

// Confirmation pacing: each TimeToLive is cut off after confirmAttemptTimeout
// (a request sent into a dead connection would otherwise wait for the whole
// deadline), and unanswered ones are repeated after confirmBackoff.
const (
	confirmAttemptTimeout = 2 * time.Second
	confirmBackoffMin     = 250 * time.Millisecond
	confirmBackoffMax     = 2 * time.Second
)

// confirmBackoff paces the questions about the lease: none for the first,
// then 250ms doubling up to 2s.
var confirmBackoff = backend.Backoff{Min: confirmBackoffMin, Max: confirmBackoffMax}

// confirmLease asks the server whether the lease still exists, until it
// gets an answer, and sends the answer on out. It gives up silently at
// deadline (the state loop expires the session then) or when the session
// ends. attempt counts the questions asked since the last keepalive reply,
// which sets the first pause.
func (c *conn) confirmLease(deadline time.Time, attempt int, out chan<- leaseCheck) {
	defer c.wg.Done()
	ctx, cancel := context.WithDeadline(c.ctx, deadline)
	defer cancel()
	start := time.Now()
	var err error
	for n := attempt; backend.Sleep(ctx, confirmBackoff.Pause(n)); n++ {
		var chk leaseCheck
		if cerr := c.cli.Ctx().Err(); cerr != nil {
			chk.gone = fmt.Errorf("etcd client closed: %w", cerr)
		} else {
			var state leaseState
			state, chk.ttl, err = c.askLease(ctx)
			switch state {
			case leaseGone:
				chk.gone = fmt.Errorf("lease keepalive ended and the server no longer has the lease: %w", rpctypes.ErrLeaseNotFound)
			case leaseUnknown:
				c.lg.Debug("lease confirmation unanswered", zap.Error(err), zap.Duration("next-in", confirmBackoff.Pause(n+1)))
				continue
			}
		}
		c.lg.Debug("lease confirmed", zap.Bool("alive", chk.gone == nil), zap.Int64("ttl-left-s", chk.ttl), zap.Duration("after", time.Since(start)))
		out <- chk // the state loop has one confirmation at a time, and room for its answer
		return
	}
	c.lg.Debug("lease confirmation given up", zap.NamedError("last-error", err), zap.NamedError("cause", context.Cause(ctx)),
		zap.Duration("after", time.Since(start)))
}

// askLease asks the server once, within confirmAttemptTimeout, whether it
// still has the lease, and how many seconds it has left. A "no" is believed
// only if the session marker, which is attached to the lease and deleted
// with it, is gone too: a member that is not the leader, or no longer
// believes it is, forwards lease requests to the leader over HTTP and
// reads any 404 as "lease not found", and a single member that shuts down
// has been seen to answer a keepalive that way for a lease that survived.
func (c *conn) askLease(ctx context.Context) (leaseState, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, confirmAttemptTimeout)
	defer cancel()
	resp, err := c.cli.TimeToLive(ctx, c.lease)
	switch state := judgeTimeToLive(resp, err); state {
	case leaseAlive:
		return state, resp.TTL, nil
	case leaseUnknown:
		return state, 0, err
	}
	get, err := c.cli.Get(ctx, c.marker)
	if err != nil {
		return leaseUnknown, 0, fmt.Errorf("the server says the lease is gone; reading the session marker: %w", err)
	}
	if len(get.Kvs) > 0 && get.Kvs[0].Lease == int64(c.lease) {
		return leaseUnknown, 0, fmt.Errorf("the server says the lease is gone, but the session marker %s is still attached to it at revision %d",
			c.marker, get.Header.Revision)
	}
	return leaseGone, 0, nil
}

// pump delivers the events left after the terminal one and closes the
// channel. Unless the reader is more than eventBuffer events behind, this
// finishes at once; otherwise it waits for the reader, never dropping,
// until Driver.Close abandons the events nobody has read (abandonEvents).
func (c *conn) pump(queue []backend.ConnEvent) {
	defer close(c.eventsDone)
	defer close(c.events)
	for _, ev := range queue {
		select {
		case c.events <- ev:
		case <-c.abandoned:
			return
		}
	}
}

// eventsDelivered reports whether Events is closed: every event was taken,
// or abandoned.
func (c *conn) eventsDelivered() bool {
	select {
	case <-c.eventsDone:
		return true
	default:
		return false
	}
}

// abandonEvents makes pump drop the events nobody has read (Driver.Close).
func (c *conn) abandonEvents() { c.abandonOnce.Do(func() { close(c.abandoned) }) }

// cleanupAfterExpiry stops refreshing the lease and revokes it, best effort,
// so that the ephemeral keys of a session we have declared lost go at once.
func (c *conn) cleanupAfterExpiry() {
	defer c.wg.Done()
	c.mu.Lock()
	sess := c.sess
	c.mu.Unlock()
	sess.Orphan()
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
			if !backend.Sleep(c.ctx, min(time.Duration(attempt+1)*100*time.Millisecond, time.Second)) {
				return
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
// within its TTL. Close is idempotent: a later call waits for the first,
// bounded by its ctx, and returns nil.
func (c *conn) Close(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	c.mu.Lock()
	if c.closeStarted {
		// Only the first Close reports whether the server was told; a
		// later one waits for it, bounded by its ctx, and returns nil.
		c.mu.Unlock()
		select {
		case <-c.closed:
		case <-ctx.Done():
		}
		return nil
	}
	c.closeStarted = true
	wasAlive := c.dead == nil
	c.dead = fmt.Errorf("etcd: session %s: %w", c.id, coordkit.ErrClosed)
	sess := c.sess
	c.mu.Unlock()
	c.cancel(coordkit.ErrClosed)

	var err error
	if wasAlive {
		sess.Orphan()
		c.kaCancel()
		if _, rerr := c.cli.Revoke(ctx, c.lease); rerr != nil && !errors.Is(rerr, rpctypes.ErrLeaseNotFound) {
			if cerr := ctx.Err(); cerr != nil {
				rerr = cerr
			} else if isUnavailable(rerr) {
				rerr = fmt.Errorf("%w: %w", backend.ErrConnectionLoss, rerr)
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

// goBackground runs f on a goroutine that Close waits for (c.wg); f must
// return once c.ctx is done. Once the session has expired or Close has
// begun it reports false without running f.
func (c *conn) goBackground(f func()) bool {
	c.mu.Lock()
	if c.closeStarted || c.dead != nil {
		c.mu.Unlock()
		return false
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
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
