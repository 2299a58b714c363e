package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/zap"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/internal/detach"
)

// conn is one ZooKeeper session: the backend.Conn returned by Driver.Open.
type conn struct {
	d   *Driver
	ttl time.Duration
	log *zap.Logger
	zk  *zk.Conn // set by start, before go-zookeeper's goroutines run

	sid       atomic.Int64 // the session id, set once
	timeoutMs atomic.Int64 // the negotiated timeout, from the auth log line

	expired atomic.Bool // the session is gone: refuse every call
	closing atomic.Bool // Close was called: refuse every call
	// noParentStamp: a create could not write its parent (ACL), so queue
	// joins read their token instead and CreateStamped returns ErrNoStamp
	// (see createOnce).
	noParentStamp atomic.Bool
	// pins numbers the pins of stamped creates (backend.PinPath).
	pins   atomic.Uint64
	noDial atomic.Bool // the dialer refuses: no new TCP connection

	dialCtx    context.Context // cancelled with noDial: aborts a dial in progress
	dialCancel context.CancelFunc
	bgCtx      context.Context // cancelled when the conn is dead (expired or closing)
	bgCancel   context.CancelFunc

	mu           sync.Mutex
	established  bool
	disconnected bool
	closeReply   closeReply    // whether the server answered closeSession (its own lock)
	terminal     bool          // no more state events: a terminal one was sent or Close began
	stateCh      chan struct{} // closed and replaced on every state change
	netConn      net.Conn      // the last TCP connection dialled
	noMoreWork   bool          // wg is being waited on: start no tracked goroutine
	dead         chan struct{} // closed when the session expired or Close began
	authOnce     sync.Once

	sessionUp chan struct{} // closed when the first session is established
	authed    chan struct{} // closed when the auth log line was seen
	zkDone    chan struct{} // go-zookeeper's loop has ended (closed by the drain Close starts)
	zkEvents  <-chan zk.Event
	started   chan struct{} // closed when start has returned: zk and zkEvents are set, or start failed
	closeDone chan struct{} // Close has finished

	// leases holds, per fixed path, the create of it whose outcome is not
	// known yet (see leasePath). Guarded by mu.
	leases map[string]chan struct{}

	wg     sync.WaitGroup // every goroutine of ours that calls go-zookeeper
	runner *detach.Runner // where goTracked runs them; its idle goroutine exits once dead is closed
	events *backend.EventQueue
}

var _ backend.Conn = (*conn)(nil)

func newConn(d *Driver, ttl time.Duration) *conn {
	c := &conn{
		d:         d,
		ttl:       ttl,
		log:       d.opts.log.Named("zookeeper"),
		stateCh:   make(chan struct{}),
		dead:      make(chan struct{}),
		sessionUp: make(chan struct{}),
		authed:    make(chan struct{}),
		zkDone:    make(chan struct{}),
		started:   make(chan struct{}),
		closeDone: make(chan struct{}),
		events:    backend.NewEventQueue(eventBuffer),
	}
	c.dialCtx, c.dialCancel = context.WithCancel(context.Background())
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	c.runner = detach.New(c.dead)
	return c
}

// start creates the go-zookeeper client. Nothing is sent until its loop
// dials.
func (c *conn) start(servers []string) error {
	defer close(c.started)
	zc, ec, err := zk.Connect(servers, c.ttl,
		func(zc *zk.Conn) { c.zk = zc }, // runs inside Connect, before its loop starts
		zk.WithLogger(zkLogger{log: c.log.Named("client"), onAuth: c.onAuth}),
		zk.WithEventCallback(c.onEvent),
		zk.WithDialer(c.dial),
	)
	if err != nil {
		c.dialCancel()
		c.bgCancel()
		return err
	}
	_ = zc // == c.zk; assigning it again here would race with the loop
	// The events are read through the callback. go-zookeeper also offers
	// each one to ec, dropping it when ec's small buffer is full, and
	// closes ec when its loop has ended and it has failed every request
	// and watch. ec is drained only from Close on: a goroutine reading it
	// all along would be woken for every watch notification, for nothing.
	c.zkEvents = ec
	return nil
}

// onAuth receives the id and negotiated timeout of each session go-zookeeper
// establishes (or re-establishes).
func (c *conn) onAuth(id, timeoutMs int64) {
	if timeoutMs > 0 {
		c.timeoutMs.Store(timeoutMs)
	}
	c.authOnce.Do(func() { close(c.authed) })
}

// onEvent is go-zookeeper's event callback. go-zookeeper calls it
// synchronously (for session states, from its connection loop, before it
// acts on the new state), so it must not block; it only updates state and
// queues events.
func (c *conn) onEvent(ev zk.Event) {
	if ev.Type != zk.EventSession {
		return // watch events go to each watch's own channel
	}
	now := time.Now()
	switch ev.State {
	case zk.StateExpired:
		c.expire(fmt.Errorf("%w: %w", coordkit.ErrSessionLost, zk.ErrSessionExpired), now)

	case zk.StateHasSession:
		sid := c.zk.SessionID()
		c.mu.Lock()
		switch {
		case c.terminal:
		case !c.established:
			c.established = true
			c.sid.Store(sid)
			close(c.sessionUp)
			c.changedLocked()
			c.events.Push(backend.ConnEvent{State: backend.StateConnected, At: now})
		case sid != c.sid.Load():
			// Cannot happen while the dialer refuses to reconnect after
			// expiry; if it ever did, the old session is gone all the same.
			c.mu.Unlock()
			c.expire(fmt.Errorf("%w: session %s replaced by %s", coordkit.ErrSessionLost,
				formatSessionID(c.sid.Load()), formatSessionID(sid)), now)
			return
		case c.disconnected:
			c.disconnected = false
			c.changedLocked()
			c.events.Push(backend.ConnEvent{State: backend.StateReconnected, At: now})
			c.log.Info("reconnected", zap.String("session", c.SessionID()), zap.String("server", ev.Server))
		}
		c.mu.Unlock()

	case zk.StateDisconnected:
		c.mu.Lock()
		if c.established && !c.disconnected && !c.terminal {
			c.disconnected = true
			c.changedLocked()
			err := fmt.Errorf("zookeeper: disconnected from %s: %w", ev.Server, backend.ErrConnectionLoss)
			c.events.Push(backend.ConnEvent{State: backend.StateDisconnected, Err: err, At: now})
			c.log.Info("disconnected", zap.String("session", c.SessionID()), zap.String("server", ev.Server))
		}
		c.mu.Unlock()
	}
}

// expire ends the session for good. It runs synchronously in go-zookeeper's
// loop before that loop can dial again, so the dialer refuses the reconnect
// that would otherwise open a brand-new session and run queued requests on
// it.
func (c *conn) expire(why error, now time.Time) {
	c.expired.Store(true)
	c.stopDial()
	c.mu.Lock()
	if c.terminal {
		c.mu.Unlock()
		return
	}
	c.terminal = true
	c.changedLocked()
	c.markDeadLocked()
	c.events.Push(backend.ConnEvent{State: backend.StateExpired, Err: why, At: now})
	c.mu.Unlock()
	c.log.Warn("session expired", zap.String("session", c.SessionID()), zap.Error(why))
	c.closeZK()
}

// stopDial makes the dialer refuse from now on and aborts a dial in
// progress.
func (c *conn) stopDial() {
	c.noDial.Store(true)
	c.dialCancel()
}

// killNetConn closes the current TCP connection, so go-zookeeper's loop
// stops waiting on an unresponsive server.
func (c *conn) killNetConn() {
	c.mu.Lock()
	nc := c.netConn
	c.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
}

func (c *conn) changedLocked() {
	close(c.stateCh)
	c.stateCh = make(chan struct{})
}

func (c *conn) markDeadLocked() {
	select {
	case <-c.dead:
	default:
		close(c.dead)
		c.bgCancel()
	}
}

// closeZK calls go-zookeeper's Close on a goroutine the Driver waits for,
// and returns a channel closed when it returns. go-zookeeper's Close sends
// closeSession and waits for its answer, or for a second if its loop ended
// before sending it; the caller need not wait that second, but no goroutine
// outlives Driver.Close.
func (c *conn) closeZK() <-chan struct{} {
	done := make(chan struct{})
	c.d.bgAdd(1)
	go func() {
		defer c.d.bgAdd(-1)
		if c.zk != nil { // nil if start failed
			c.zk.Close()
		}
		close(done)
	}()
	return done
}

// abort tears down a conn whose Open failed: at once, without waiting for
// closeSession to be delivered.
func (c *conn) abort() {
	c.stopDial()
	c.killNetConn()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = c.Close(ctx)
}

// SessionID returns the session id in lower-case hex, formatted as Node.Owner.
func (c *conn) SessionID() string { return formatSessionID(c.sid.Load()) }

// Timeout returns the session timeout the server negotiated.
func (c *conn) Timeout() time.Duration {
	if ms := c.timeoutMs.Load(); ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return c.ttl
}

// Events returns the session's state changes.
func (c *conn) Events() <-chan backend.ConnEvent { return c.events.C() }

// Close ends the session: go-zookeeper sends closeSession, so the server
// deletes the ephemeral nodes at once.
func (c *conn) Close(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	<-c.started // at once: start only builds the client (Driver.Close may come during an Open)
	c.mu.Lock()
	if c.closing.Load() {
		c.mu.Unlock()
		select {
		case <-c.closeDone:
		case <-ctx.Done():
		}
		return nil
	}
	c.closing.Store(true)
	wasTerminal := c.terminal
	established := c.established
	c.terminal = true
	c.changedLocked()
	c.markDeadLocked()
	c.mu.Unlock()

	zkClosed := c.closeZK()
	go func() {
		if c.zkEvents != nil { // nil if start failed: no client, no loop
			for range c.zkEvents {
			}
		}
		close(c.zkDone)
	}()
	var err error
	select {
	case <-c.zkDone:
	case <-ctx.Done():
		err = ctx.Err()
		c.stopDial()
		c.killNetConn()
		<-c.zkDone
	}
	c.stopDial()
	if err == nil {
		// Normally at once: closeSession was answered, or failed when the
		// loop ended.
		select {
		case <-zkClosed:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	c.mu.Lock()
	c.noMoreWork = true
	c.mu.Unlock()
	c.wg.Wait()

	c.mu.Lock()
	if !wasTerminal {
		c.events.Push(backend.ConnEvent{State: backend.StateClosed, At: time.Now()})
	}
	// Only the server's answer to closeSession (see closeReply) proves the
	// session ended on the server. (A session found expired meanwhile is
	// gone all the same; one never established has nothing to end.)
	if err == nil && !wasTerminal && established && !c.expired.Load() && !c.closeReply.Answered() {
		err = fmt.Errorf("closeSession not answered, the server may keep the session until it times out: %w", backend.ErrConnectionLoss)
	}
	c.mu.Unlock()
	c.d.forget(c)
	close(c.closeDone)
	c.log.Info("session closed", zap.String("session", c.SessionID()))
	if err != nil {
		return fmt.Errorf("zookeeper: close: %w", err)
	}
	return nil
}

// usable reports why no call may be made any more: coordkit.ErrClosed after
// Close, coordkit.ErrSessionLost after expiry.
func (c *conn) usable() error {
	if c.closing.Load() {
		return coordkit.ErrClosed
	}
	if c.expired.Load() {
		return coordkit.ErrSessionLost
	}
	return nil
}

// waitConnected waits until the session is connected (not between
// StateDisconnected and StateReconnected), or ends.
func (c *conn) waitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		ch, disconnected := c.stateCh, c.disconnected
		c.mu.Unlock()
		if err := c.usable(); err != nil {
			return err
		}
		if !disconnected {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// goTracked runs f on a goroutine that Close waits for (until f returns).
// The goroutine is the conn's idle one when there is one (see package
// detach): a call under a context that can end, which runs here, then pays
// neither a goroutine's start nor its stack's growth. It reports false,
// without running f, once Close is waiting.
func (c *conn) goTracked(f func()) bool {
	c.mu.Lock()
	if c.noMoreWork {
		c.mu.Unlock()
		return false
	}
	c.wg.Add(1)
	c.mu.Unlock()
	c.runner.Go(func() {
		defer c.wg.Done()
		f()
	})
	return true
}

// leasePath waits until no other create of path by this Conn is
// unresolved, and makes the caller's the one: until release is called,
// other creates of path wait here. A create of a fixed path (not protected,
// not sequential) holds the lease from before it is sent until its outcome
// is known, also when a background goroutine has to find that out
// (cleanupPending, abandonedCreate): those tell the create's node from
// others by its path and owner alone, so a later create of the same path by
// this Conn must not run meanwhile, or they would take its node for the
// first one's and delete it. It returns ctx's error if ctx ends first, and
// the Conn's if the Conn dies.
func (c *conn) leasePath(ctx context.Context, path string) (release func(), err error) {
	c.mu.Lock()
	for {
		held := c.leases[path]
		if held == nil {
			break
		}
		c.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.bgCtx.Done():
			if err := c.usable(); err != nil {
				return nil, err
			}
			return nil, coordkit.ErrClosed
		}
		c.mu.Lock()
	}
	if c.leases == nil {
		c.leases = map[string]chan struct{}{}
	}
	mine := make(chan struct{})
	c.leases[path] = mine
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			delete(c.leases, path)
			c.mu.Unlock()
			close(mine)
		})
	}, nil
}

type result[T any] struct {
	v   T
	err error
}

// do runs f, which makes blocking go-zookeeper calls, on a tracked goroutine
// and returns its result, or ctx's error if ctx is done first. go-zookeeper
// has no context; its calls return when the server answers, when the
// connection breaks, or when the client is closed, so the goroutine never
// outlives Close. If ctx wins, abandoned (when not nil) receives the result
// once it arrives, on that goroutine, to undo what the call did. A ctx
// that can never be done (context.Background) runs f on the caller's
// goroutine: no goroutine to start and no hop back.
func do[T any](ctx context.Context, c *conn, f func(z *zk.Conn) (T, error), abandoned func(T, error)) (T, error) {
	v, _, err := doAbandonable(ctx, c, f, abandoned)
	return v, err
}

// doAbandonable is do, and also reports whether the call was abandoned: ctx
// ended first, and abandoned (if not nil) will receive the result.
func doAbandonable[T any](ctx context.Context, c *conn, f func(z *zk.Conn) (T, error), abandoned func(T, error)) (T, bool, error) {
	var zero T
	if err := c.usable(); err != nil {
		return zero, false, err
	}
	if err := ctx.Err(); err != nil {
		return zero, false, err
	}
	if ctx.Done() == nil {
		v, err := f(c.zk)
		return v, false, err
	}
	ch := make(chan result[T], 1)
	var claimed atomic.Bool
	if !c.goTracked(func() {
		v, err := f(c.zk)
		if claimed.CompareAndSwap(false, true) {
			ch <- result[T]{v, err}
			return
		}
		if abandoned != nil {
			abandoned(v, err)
		}
	}) {
		return zero, false, coordkit.ErrClosed
	}
	select {
	case r := <-ch:
		return r.v, false, r.err
	case <-ctx.Done():
		if claimed.CompareAndSwap(false, true) {
			return zero, true, ctx.Err()
		}
		r := <-ch
		return r.v, false, r.err
	}
}

// isTransport reports whether err means the connection broke (or was never
// there) with the request in flight.
func isTransport(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false // context.DeadlineExceeded is a net.Error too
	}
	var ne net.Error
	return errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrNoServer) ||
		errors.Is(err, zk.ErrSessionMoved) || errors.As(err, &ne) || errors.Is(err, errNoRedial)
}

// isConnLoss reports whether err is a connection loss on a live session: the
// outcome is unknown and the session may carry on.
func (c *conn) isConnLoss(err error) bool {
	return isTransport(err) && c.usable() == nil
}

// wrap maps a go-zookeeper error onto the seam's errors and adds the
// operation and path.
func (c *conn) wrap(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var sentinel error
	switch {
	case errors.Is(err, zk.ErrNoNode):
		sentinel = backend.ErrNoNode
	case errors.Is(err, zk.ErrNodeExists):
		sentinel = backend.ErrNodeExists
	case errors.Is(err, zk.ErrBadVersion):
		sentinel = backend.ErrBadVersion
	case errors.Is(err, zk.ErrNotEmpty):
		sentinel = backend.ErrNotEmpty
	case errors.Is(err, zk.ErrSessionExpired):
		sentinel = coordkit.ErrSessionLost
	case errors.Is(err, zk.ErrNoChildrenForEphemerals):
		sentinel = coordkit.ErrInvalidArgument
	case errors.Is(err, zk.ErrClosing), isTransport(err):
		switch {
		case c.closing.Load():
			sentinel = coordkit.ErrClosed
		case c.expired.Load():
			sentinel = coordkit.ErrSessionLost
		case errors.Is(err, zk.ErrClosing):
			sentinel = coordkit.ErrClosed
		default:
			sentinel = backend.ErrConnectionLoss
		}
	default:
		// ctx errors, errors already mapped, and unexpected server errors.
		return fmt.Errorf("zookeeper: %s %s: %w", op, path, err)
	}
	return fmt.Errorf("zookeeper: %s %s: %w (%w)", op, path, sentinel, err)
}
