package memory

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/clock"
)

// Option configures a Driver.
type Option func(*Driver)

// WithClock sets the clock that times sessions out on the server while they
// are disconnected and stamps ConnEvent.At. The default is clock.Real().
func WithClock(c clock.Clock) Option { return func(d *Driver) { d.clock = c } }

// Stats counts what the server did, for one session or the whole Driver.
type Stats struct {
	// Requests counts calls that reached the server: one per Conn call
	// (CreateAndList, CreateAndWatch and CreateStamped are one), plus the
	// Children and Get that a protected create makes to find its node after
	// a lost reply (and the Get of a stamped create). Calls refused
	// before the server (invalid input, done ctx, disconnected, closed) do
	// not count.
	Requests int64
	// WatchEvents counts watch notifications the server sent: each Watch or
	// WatchChildren that fired on a change (not EventLost).
	WatchEvents int64
	// Watches is the number of watches armed now, including those that
	// fired while their session was disconnected and wait for Reconnect.
	Watches int
}

// Driver is an in-memory coordination service and a backend.Driver on it.
// It is safe for concurrent use.
type Driver struct {
	clock  clock.Clock
	done   chan struct{}         // closed by Close; stops every goroutine below
	queues []*backend.EventQueue // every conn's event queue, aborted at Close
	wg     sync.WaitGroup        // server-side timeouts and event pumps

	// mu guards everything below, the nodes, and the mutable fields of
	// every conn and watch.
	mu       sync.Mutex
	closed   bool
	zxid     int64
	lastID   uint64
	nodes    map[string]*node
	dataW    map[string]map[*watch]struct{} // Watch, by path
	childW   map[string]map[*watch]struct{} // WatchChildren, by path
	sessions map[string]*conn               // conns alive on the client or the server side
	stats    map[string]*Stats              // per session, kept after it ends
	total    Stats
}

// New returns an empty store.
func New(opts ...Option) *Driver {
	d := &Driver{
		clock:    clock.Real(),
		done:     make(chan struct{}),
		nodes:    map[string]*node{"/": {path: "/", children: map[string]*node{}}},
		dataW:    map[string]map[*watch]struct{}{},
		childW:   map[string]map[*watch]struct{}{},
		sessions: map[string]*conn{},
		stats:    map[string]*Stats{},
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Name returns "memory".
func (d *Driver) Name() string { return "memory" }

// Open starts a session with timeout ttl and returns it connected. It fails
// with coordkit.ErrInvalidArgument for ttl <= 0 and coordkit.ErrClosed after
// Close.
func (d *Driver) Open(ctx context.Context, ttl time.Duration) (backend.Conn, error) {
	if ctx == nil {
		return nil, fmt.Errorf("memory: open: nil context: %w", coordkit.ErrInvalidArgument)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("memory: open: session timeout %v: %w", ttl, coordkit.ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: open: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("memory: open: %w", coordkit.ErrClosed)
	}
	d.lastID++
	d.zxid++ // createSession is a transaction
	c := &conn{
		d:          d,
		id:         strconv.FormatUint(0x100000000000000|d.lastID, 16),
		ttl:        ttl,
		events:     backend.NewEventQueue(eventBuffer),
		alive:      true,
		ephemerals: map[string]*node{},
		watches:    map[*watch]struct{}{},
		stats:      &Stats{},
	}
	d.sessions[c.id] = c
	d.queues = append(d.queues, c.events)
	d.stats[c.id] = c.stats
	d.pushEvent(c, backend.StateConnected, nil)
	return c, nil
}

// Close closes every Conn (each receives StateClosed) and stops the
// Driver's goroutines. Events a reader has not taken by then are dropped
// and the channels closed. It is idempotent.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	for _, c := range d.sessions {
		if c.state != stateEnded {
			d.end(c, backend.StateClosed)
		}
		c.alive = false
		c.stopServerTimer()
	}
	clear(d.sessions)
	close(d.done)
	queues := d.queues
	d.queues = nil
	d.mu.Unlock()
	// Nobody reads the events of a closed driver's conns any more: drop
	// what is left and stop the pumps.
	for _, q := range queues {
		q.Abort()
	}
	d.wg.Wait()
	return nil
}

// Disconnect cuts the session's connection: the Conn reports
// StateDisconnected and its calls fail fast with backend.ErrConnectionLoss.
// Its watches stay armed; one that fires meanwhile is delivered after
// Reconnect. The server expires the session when the Driver's clock passes
// now + the session timeout, unless Reconnect comes first; the Conn learns
// of that only at Reconnect, as a ZooKeeper client does. It fails if no
// connected session has that id.
func (d *Driver) Disconnect(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.sessions[id]
	if c == nil || c.state != stateConnected {
		return fmt.Errorf("memory: disconnect: no connected session %q", id)
	}
	c.state = stateDisconnected
	d.pushEvent(c, backend.StateDisconnected, backend.ErrConnectionLoss)
	if c.alive {
		d.startServerTimer(c)
	}
	return nil
}

// Reconnect restores a disconnected session's connection: the Conn reports
// StateReconnected and receives the watch events held back, or, if the
// server expired the session meanwhile, StateExpired (its watches end with
// EventLost). It fails if no disconnected session has that id.
func (d *Driver) Reconnect(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.sessions[id]
	if c == nil || c.state != stateDisconnected {
		return fmt.Errorf("memory: reconnect: no disconnected session %q", id)
	}
	c.stopServerTimer()
	if !c.alive {
		d.end(c, backend.StateExpired)
		delete(d.sessions, id)
		return nil
	}
	c.state = stateConnected
	d.pushEvent(c, backend.StateReconnected, nil)
	for w := range c.watches {
		if w.held != nil {
			w.ch <- *w.held
			w.held = nil
			delete(c.watches, w)
		}
	}
	return nil
}

// Expire ends the session on the server now: its ephemeral nodes are
// deleted and watches fire. A connected Conn receives StateExpired at once; a
// disconnected one only at Reconnect. It also works on a session whose Conn
// was closed while disconnected (the server still holds it). It fails if the
// server holds no session with that id.
func (d *Driver) Expire(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.sessions[id]
	if c == nil || !c.alive {
		return fmt.Errorf("memory: expire: no live session %q", id)
	}
	d.expire(c)
	return nil
}

// FailNextReply makes the next write of the session (Create, CreateAndList,
// CreateStamped, Set, Delete, DeleteStamped, GuardedSet) lose its reply:
// the server applies it, whatever its outcome, and the caller gets
// backend.ErrConnectionLoss. A protected create recovers its node from the
// parent's listing, as the real drivers do, and so does a stamped create of
// a fixed-path ephemeral node (by its owner, with the stamp unknown); any
// other create leaves its node behind. It fails if no open Conn has
// that id.
func (d *Driver) FailNextReply(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.sessions[id]
	if c == nil || c.state == stateEnded {
		return fmt.Errorf("memory: fail next reply: no open session %q", id)
	}
	c.failNext = true
	return nil
}

// Stall makes the server stop answering the session, as a paused server or
// a network that holds packets would: from now on its calls wait, and they
// reach the server, in turn, at Unstall. A call whose ctx ends while it waits
// returns ctx's error and never reaches the server. The Conn's state does
// not change (a silence shorter than the client's timeouts); a session that
// ends meanwhile releases its waiting calls, which then fail as after the
// end. It fails if no connected session has that id.
func (d *Driver) Stall(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.sessions[id]
	if c == nil || c.state != stateConnected {
		return fmt.Errorf("memory: stall: no connected session %q", id)
	}
	if c.stalled == nil {
		c.stalled = make(chan struct{})
	}
	return nil
}

// Unstall ends a Stall: the waiting calls reach the server. It fails if the
// session is not stalled.
func (d *Driver) Unstall(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.sessions[id]
	if c == nil || c.stalled == nil {
		return fmt.Errorf("memory: unstall: no stalled session %q", id)
	}
	c.unstall()
	return nil
}

// Stalled returns how many calls of the session are waiting behind a Stall
// now. A call counts from when it starts to wait; it stops counting at
// Unstall and at the session's end (which release it), or once it has given
// up because its ctx ended. It lets a test wait until a call has reached the
// stalled server, rather than sleep. It is 0 for an unknown id and for a
// session that is not stalled.
func (d *Driver) Stalled(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.sessions[id]; c != nil && c.stalled != nil {
		return c.waiting
	}
	return 0
}

// SetNextSequence sets the number the next sequential child of parent gets
// (ZooKeeper's parent cversion), creating parent and its ancestors as
// container nodes if they are missing. Later children count up from n and
// wrap from 2147483647 to -2147483648.
func (d *Driver) SetNextSequence(parent string, n int32) error {
	if err := backend.ValidatePath(parent); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("memory: set next sequence: %w", coordkit.ErrClosed)
	}
	p, err := d.ensure(parent)
	if err != nil {
		return fmt.Errorf("memory: set next sequence %s: %w", parent, err)
	}
	p.cversion = n
	return nil
}

// Stats returns the counts for the whole Driver.
func (d *Driver) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.total
	for _, c := range d.sessions {
		s.Watches += len(c.watches)
	}
	return s
}

// SessionStats returns the counts for one session, also after it ended;
// zero for an unknown id.
func (d *Driver) SessionStats(id string) Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.stats[id]
	if !ok {
		return Stats{}
	}
	out := *s
	if c := d.sessions[id]; c != nil {
		out.Watches = len(c.watches)
	}
	return out
}

// pushEvent queues a state event on c's channel.
func (d *Driver) pushEvent(c *conn, st backend.ConnState, err error) {
	c.events.Push(backend.ConnEvent{State: st, Err: err, At: d.clock.Now()})
}

// end moves c's client side to its terminal state: later calls fail, every
// watch ends with EventLost, and the terminal event is queued.
func (d *Driver) end(c *conn, st backend.ConnState) {
	var err, evErr error
	if st == backend.StateExpired {
		err = coordkit.ErrSessionLost
		evErr = fmt.Errorf("memory: session %s expired: %w", c.id, coordkit.ErrSessionLost)
	} else {
		err = coordkit.ErrClosed
	}
	c.state, c.endErr = stateEnded, err
	c.unstall()
	for w := range c.watches {
		d.unarm(w)
		w.held = nil
		w.ch <- backend.WatchEvent{Type: backend.EventLost, Path: w.path, Err: err}
	}
	clear(c.watches)
	d.pushEvent(c, st, evErr)
}

// expire ends c's session on the server.
func (d *Driver) expire(c *conn) {
	c.stopServerTimer()
	if c.state == stateConnected {
		d.end(c, backend.StateExpired)
	}
	d.endSession(c)
	if c.state == stateEnded {
		delete(d.sessions, c.id)
	}
}

// endSession ends c's session on the server: it deletes its ephemeral
// nodes in creation order.
func (d *Driver) endSession(c *conn) {
	c.alive = false
	d.zxid++ // closeSession is a transaction
	for len(c.ephemerals) > 0 {
		var first *node
		for _, n := range c.ephemerals {
			if first == nil || n.czxid < first.czxid {
				first = n
			}
		}
		d.remove(first)
	}
}

// startServerTimer arms the server's session timeout for a disconnected c.
// The goroutine that waits for it is owned by the Driver: it ends when the
// timer fires, at stopServerTimer, or at Close.
func (d *Driver) startServerTimer(c *conn) {
	t := d.clock.NewTimer(c.ttl)
	stop := make(chan struct{})
	c.timer, c.stopTimer = t, stop
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		select {
		case <-t.C():
			d.mu.Lock()
			defer d.mu.Unlock()
			select {
			case <-stop: // reconnected, expired or closed first
			default:
				d.expire(c)
			}
		case <-stop:
		}
	}()
}
