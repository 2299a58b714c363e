package memory

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/clock"
)

type connState int

const (
	stateConnected connState = iota
	stateDisconnected
	stateEnded // the terminal event was queued
)

// conn is one session: its client side (state, events, watches) and its
// server side (alive, ephemerals). Mutable fields are guarded by Driver.mu.
type conn struct {
	d      *Driver
	id     string
	ttl    time.Duration
	events *backend.EventQueue
	stats  *Stats

	state      connState
	endErr     error // what calls return once the state is stateEnded
	alive      bool  // the server holds the session
	failNext   bool
	stalled    chan struct{} // closed at Unstall; nil unless stalled (Driver.Stall)
	waiting    int           // calls in begin's wait for stalled (Driver.Stalled)
	timer      clock.Timer   // the server-side timeout while disconnected
	stopTimer  chan struct{} // ends the goroutine that waits for timer
	ephemerals map[string]*node
	watches    map[*watch]struct{} // armed, or fired and held while disconnected
	pins       atomic.Uint64       // numbers the pins of stamped creates
}

var _ backend.Conn = (*conn)(nil)

// protectedLen is the length of "_c_<uuid36>-".
const protectedLen = 40

func (c *conn) SessionID() string                { return c.id }
func (c *conn) Timeout() time.Duration           { return c.ttl }
func (c *conn) Events() <-chan backend.ConnEvent { return c.events.C() }

// unstall releases the calls a Stall holds. It must hold d.mu.
func (c *conn) unstall() {
	if c.stalled != nil {
		close(c.stalled)
		c.stalled = nil
	}
}

// stopServerTimer stops the server-side timeout and ends its goroutine,
// if one runs.
func (c *conn) stopServerTimer() {
	if c.stopTimer != nil {
		c.timer.Stop()
		close(c.stopTimer)
		c.timer, c.stopTimer = nil, nil
	}
}

func wrap(op, path string, err error) error { return fmt.Errorf("memory: %s %s: %w", op, path, err) }

// validate checks a path and node data before anything else.
func validate(path string, data []byte) error {
	if err := backend.ValidatePath(path); err != nil {
		return err
	}
	return backend.ValidateData(data)
}

// begin admits a request to the server: it must hold d.mu. It refuses a done
// ctx and a disconnected or ended session, and counts the request. While the
// session is stalled it waits, with d.mu released, for Unstall or ctx.
func (c *conn) begin(ctx context.Context, op, path string) error {
	for ctx != nil && c.stalled != nil {
		stalled := c.stalled
		c.waiting++
		c.d.mu.Unlock()
		select {
		case <-stalled:
		case <-ctx.Done():
		}
		c.d.mu.Lock()
		c.waiting--
		if ctx.Err() != nil {
			break
		}
	}
	var err error
	switch {
	case ctx == nil:
		err = fmt.Errorf("nil context: %w", coordkit.ErrInvalidArgument)
	case ctx.Err() != nil:
		err = ctx.Err()
	case c.state == stateEnded:
		err = c.endErr
	case c.state == stateDisconnected:
		err = backend.ErrConnectionLoss
	}
	if err != nil {
		return wrap(op, path, err)
	}
	c.stats.Requests++
	c.d.total.Requests++
	return nil
}

// reply returns err as the reply of a write, or ErrConnectionLoss if the
// reply is to be lost (FailNextReply).
func (c *conn) reply(op, path string, err error) error {
	if c.failNext {
		c.failNext = false
		return wrap(op, path, fmt.Errorf("reply lost (FailNextReply): %w", backend.ErrConnectionLoss))
	}
	if err != nil {
		return wrap(op, path, err)
	}
	return nil
}

func (c *conn) Create(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, error) {
	n, _, err := c.create(ctx, "create", path, data, opts, extras{})
	return n, err
}

func (c *conn) CreateAndList(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, []backend.Node, error) {
	return c.create(ctx, "create and list", path, data, opts, extras{list: true})
}

// extras says what a create does besides creating, in the same request:
// list the parent, arm a watch on the new node (*armed), stamp the parent
// and create the pin stamp.Pin (setting stamp.Parent and stamp.Known).
type extras struct {
	list  bool
	armed **watch
	stamp *backend.Stamp
}

// create is the client side of Create, CreateAndList, CreateAndWatch and
// CreateStamped: it picks the protected prefix once, and after a lost reply
// finds the node by it. The extras x are done in the same request (not
// after a lost reply).
func (c *conn) create(ctx context.Context, op, path string, data []byte, opts backend.CreateOptions, x extras) (backend.Node, []backend.Node, error) {
	if err := validate(path, data); err != nil {
		return backend.Node{}, nil, err
	}
	parent, name := backend.Split(path)
	if opts.Protected {
		name = "_c_" + uuid.NewString() + "-" + name
	}
	for {
		n, kids, err := c.createOnce(ctx, op, parent, name, data, opts, x)
		if !opts.Protected || !errors.Is(err, backend.ErrConnectionLoss) {
			return n, kids, err
		}
		n, kids, found, err := c.findProtected(ctx, parent, name, opts.Sequential)
		if found || err != nil {
			return n, kids, err
		}
		// The create did not happen: send it again.
	}
}

func (c *conn) createOnce(ctx context.Context, op, parent, name string, data []byte, opts backend.CreateOptions, x extras) (backend.Node, []backend.Node, error) {
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	path := join(parent, name)
	if err := c.begin(ctx, op, path); err != nil {
		return backend.Node{}, nil, err
	}
	n, err := d.create(c, parent, name, data, opts)
	var stamped *node
	if err == nil && x.stamp != nil {
		// The node's parent exists now (create made it if need be); the
		// pin's name is unique to the call.
		_, pinName := backend.Split(x.stamp.Pin)
		if _, err = d.create(c, parent, pinName, nil, backend.CreateOptions{Ephemeral: true}); err == nil {
			stamped, err = d.set(parent, nil, backend.AnyVersion)
		} else {
			d.remove(n) // all or nothing, as a ZooKeeper multi
		}
	}
	if err := c.reply(op, path, err); err != nil {
		return backend.Node{}, nil, err
	}
	var kids []backend.Node
	if x.list {
		kids = d.children(parent)
	}
	snap := n.snapshot()
	if x.armed != nil {
		*x.armed = d.arm(c, snap.Path, false)
	}
	if stamped != nil {
		x.stamp.Parent = backend.Guard{Path: parent, Version: int64(stamped.version)}
		x.stamp.Known = true
	}
	return snap, kids, nil
}

// findProtected looks for the node a protected create made before its reply
// was lost, by the "_c_<uuid>-" prefix of name, with the two requests a real
// driver makes (list the parent, read the node).
func (c *conn) findProtected(ctx context.Context, parent, name string, sequential bool) (backend.Node, []backend.Node, bool, error) {
	kids, err := c.Children(ctx, parent)
	if err != nil {
		return backend.Node{}, nil, false, err
	}
	for _, k := range kids {
		if k.Name == name || sequential && strings.HasPrefix(k.Name, name[:protectedLen]) {
			n, err := c.Get(ctx, k.Path)
			if errors.Is(err, backend.ErrNoNode) {
				break // deleted meanwhile: create again
			}
			return n, kids, err == nil, err
		}
	}
	return backend.Node{}, nil, false, nil
}

// CreateAndWatch implements backend.Conn in one request, as ZooKeeper's
// pipelined create and ExistsW cost one round trip. After a lost reply the
// node found by its protected prefix is watched with a second request.
func (c *conn) CreateAndWatch(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, *backend.Watch, error) {
	var w *watch
	n, _, err := c.create(ctx, "create and watch", path, data, opts, extras{armed: &w})
	if err != nil {
		return backend.Node{}, nil, err
	}
	if w == nil {
		return n, backend.WatchCreated(ctx, c, n), nil
	}
	d := c.d
	return n, backend.NewWatch(w.ch, func() { d.stopWatch(w) }), nil
}

// CreateStamped implements backend.ParentStamps in one request, as
// ZooKeeper's multi does. Under the root it returns backend.ErrNoStamp.
// After a lost reply, a fixed-path ephemeral node owned by the session is
// found as the ZooKeeper driver finds it, with its stamp unknown.
func (c *conn) CreateStamped(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, backend.Stamp, error) {
	if err := validate(path, data); err != nil {
		return backend.Node{}, backend.Stamp{}, err
	}
	if parent, _ := backend.Split(path); parent == "/" {
		return backend.Node{}, backend.Stamp{}, wrap("create stamped", path, backend.ErrNoStamp)
	}
	st := backend.Stamp{Pin: backend.PinPath(path, c.id, c.pins.Add(1))}
	n, _, err := c.create(ctx, "create stamped", path, data, opts, extras{stamp: &st})
	if errors.Is(err, backend.ErrConnectionLoss) && opts.Ephemeral && !opts.Sequential && !opts.Protected {
		if cur, gerr := c.Get(ctx, path); gerr == nil && cur.Owner == c.id {
			return cur, backend.Stamp{Pin: st.Pin}, nil
		}
	}
	if err != nil {
		return backend.Node{}, backend.Stamp{}, err
	}
	return n, st, nil
}

// DeleteStamped implements backend.ParentStamps.
func (c *conn) DeleteStamped(ctx context.Context, path string, version int64, st backend.Stamp) error {
	const op = "delete stamped"
	if err := backend.ValidatePath(path); err != nil {
		return err
	}
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := c.begin(ctx, op, path); err != nil {
		return err
	}
	var err error
	pin := d.nodes[st.Pin]
	switch {
	case !st.Known:
		err = fmt.Errorf("%w: the stamp is unknown", backend.ErrGuardFailed)
	case pin == nil:
		err = fmt.Errorf("%w: pin %s: %w", backend.ErrGuardFailed, st.Pin, backend.ErrNoNode)
	default:
		err = d.checkGuards([]backend.Guard{st.Parent})
	}
	if err == nil {
		err = d.removable(path, version)
	}
	if err == nil {
		d.remove(pin)
		d.remove(d.nodes[path])
	}
	return c.reply(op, path, err)
}

// Unpin implements backend.ParentStamps.
func (c *conn) Unpin(ctx context.Context, st backend.Stamp) error {
	return backend.UnpinByDelete(ctx, c, st)
}

func (c *conn) Get(ctx context.Context, path string) (backend.Node, error) {
	if err := backend.ValidatePath(path); err != nil {
		return backend.Node{}, err
	}
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := c.begin(ctx, "get", path); err != nil {
		return backend.Node{}, err
	}
	n := d.nodes[path]
	if n == nil {
		return backend.Node{}, wrap("get", path, backend.ErrNoNode)
	}
	return n.snapshot(), nil
}

func (c *conn) Children(ctx context.Context, parent string) ([]backend.Node, error) {
	if err := backend.ValidatePath(parent); err != nil {
		return nil, err
	}
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := c.begin(ctx, "children", parent); err != nil {
		return nil, err
	}
	return d.children(parent), nil
}

func (c *conn) Set(ctx context.Context, path string, data []byte, version int64) (backend.Node, error) {
	return c.GuardedSet(ctx, nil, path, data, version)
}

func (c *conn) GuardedSet(ctx context.Context, guards []backend.Guard, path string, data []byte, version int64) (backend.Node, error) {
	op := "set"
	if guards != nil {
		op = "guarded set"
	}
	if err := validate(path, data); err != nil {
		return backend.Node{}, err
	}
	for _, g := range guards {
		if err := backend.ValidatePath(g.Path); err != nil {
			return backend.Node{}, err
		}
	}
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := c.begin(ctx, op, path); err != nil {
		return backend.Node{}, err
	}
	err := d.checkGuards(guards)
	var n *node
	if err == nil {
		n, err = d.set(path, data, version)
	}
	if err := c.reply(op, path, err); err != nil {
		return backend.Node{}, err
	}
	return n.snapshot(), nil
}

func (c *conn) Delete(ctx context.Context, path string, version int64) error {
	if err := backend.ValidatePath(path); err != nil {
		return err
	}

	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := c.begin(ctx, "delete", path); err != nil {
		return err
	}
	err := d.removable(path, version)
	if err == nil {
		d.remove(d.nodes[path])
	}
	return c.reply("delete", path, err)
}

var _ backend.ParentStamps = (*conn)(nil)

func (c *conn) Watch(ctx context.Context, path string) (backend.Node, bool, *backend.Watch, error) {
	if err := backend.ValidatePath(path); err != nil {
		return backend.Node{}, false, nil, err
	}
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := c.begin(ctx, "watch", path); err != nil {
		return backend.Node{}, false, nil, err
	}
	w := d.arm(c, path, false)
	var snap backend.Node
	n := d.nodes[path]
	if n != nil {
		snap = n.snapshot()
	}
	return snap, n != nil, backend.NewWatch(w.ch, func() { d.stopWatch(w) }), nil
}

func (c *conn) WatchChildren(ctx context.Context, parent string) ([]backend.Node, *backend.Watch, error) {
	if err := backend.ValidatePath(parent); err != nil {
		return nil, nil, err
	}
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := c.begin(ctx, "watch children", parent); err != nil {
		return nil, nil, err
	}
	w := d.arm(c, parent, true)
	return d.children(parent), backend.NewWatch(w.ch, func() { d.stopWatch(w) }), nil
}

// Close ends the session at once whatever ctx says: its ephemeral nodes are
// deleted, its watches end with EventLost (coordkit.ErrClosed) and Events
// ends with StateClosed. A Conn that is disconnected cannot reach the server:
// it is closed locally, the server keeps the session until it times out (or
// Expire), and Close returns backend.ErrConnectionLoss. Closing again, or
// after the session expired, returns nil.
func (c *conn) Close(ctx context.Context) error {
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	switch c.state {
	case stateEnded:
		c.endErr = coordkit.ErrClosed
		return nil
	case stateDisconnected:
		d.end(c, backend.StateClosed)
		if !c.alive {
			delete(d.sessions, c.id)
		}
		return wrap("close", c.id, fmt.Errorf("closed while disconnected, the server keeps the session until it expires: %w", backend.ErrConnectionLoss))
	}
	d.end(c, backend.StateClosed)
	d.endSession(c)
	delete(d.sessions, c.id)
	return nil
}
