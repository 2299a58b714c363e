package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/go-zookeeper/zk"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
)

// maxWatchAttempts bounds the GetW/ExistsW (or ChildrenW/ExistsW) loop of a
// node that keeps appearing and disappearing between the two reads.
const maxWatchAttempts = 5

// errWatchStopped is the Err of the EventLost a Watch delivers when it is
// stopped before anything happened.
var errWatchStopped = errors.New("zookeeper: watch stopped")

// Watch implements backend.Conn. It reads the node with GetW; if the node
// does not exist it arms ExistsW instead, which fires when the node is
// created. If ExistsW finds the node (created between the two reads) it
// starts over, a few times; then it reads the node without a watch and
// relies on ExistsW's watch, armed before that read, so no change is missed.
func (c *conn) Watch(ctx context.Context, path string) (backend.Node, bool, *backend.Watch, error) {
	const op = "watch"
	if err := c.pre(ctx, op, path); err != nil {
		return backend.Node{}, false, nil, err
	}
	type getw struct {
		data []byte
		st   *zk.Stat
		ch   <-chan zk.Event
	}
	type existsw struct {
		ok bool
		ch <-chan zk.Event
	}
	for attempt := 1; ; attempt++ {
		g, err := do(ctx, c, func(z *zk.Conn) (getw, error) {
			data, st, ch, err := z.GetW(path)
			return getw{data, st, ch}, err
		}, nil)
		if err == nil {
			return nodeOf(path, g.data, g.st), true, c.newWatch(path, g.ch, false), nil
		}
		if !errors.Is(err, zk.ErrNoNode) {
			return backend.Node{}, false, nil, c.wrap(op, path, err)
		}
		e, err := do(ctx, c, func(z *zk.Conn) (existsw, error) {
			ok, _, ch, err := z.ExistsW(path)
			return existsw{ok, ch}, err
		}, nil)
		if err != nil {
			return backend.Node{}, false, nil, c.wrap(op, path, err)
		}
		if !e.ok {
			return backend.Node{}, false, c.newWatch(path, e.ch, false), nil
		}
		if attempt < maxWatchAttempts {
			continue // created in between: read it with GetW (ExistsW's watch is left to go-zookeeper)
		}
		n, err := c.get(ctx, path)
		if errors.Is(err, zk.ErrNoNode) {
			return backend.Node{}, false, c.newWatch(path, e.ch, false), nil
		}
		if err != nil {
			return backend.Node{}, false, nil, c.wrap(op, path, err)
		}
		return n, true, c.newWatch(path, e.ch, false), nil
	}
}

// WatchChildren implements backend.Conn with ChildrenW. If the parent does
// not exist, the listing is empty and the watch is an ExistsW on the parent:
// it fires EventChildren when the parent is created. A child watch also
// fires EventChildren if the parent is deleted (ZooKeeper consumes child
// watches on deletion; an empty container parent is deleted by the server).
func (c *conn) WatchChildren(ctx context.Context, parent string) ([]backend.Node, *backend.Watch, error) {
	const op = "watch children"
	if err := c.pre(ctx, op, parent); err != nil {
		return nil, nil, err
	}
	type childrenw struct {
		kids []string
		ch   <-chan zk.Event
	}
	type existsw struct {
		ok bool
		ch <-chan zk.Event
	}
	for attempt := 1; ; attempt++ {
		r, err := do(ctx, c, func(z *zk.Conn) (childrenw, error) {
			kids, _, ch, err := z.ChildrenW(parent)
			return childrenw{kids, ch}, err
		}, nil)
		if err == nil {
			return childNodes(parent, r.kids), c.newWatch(parent, r.ch, true), nil
		}
		if !errors.Is(err, zk.ErrNoNode) {
			return nil, nil, c.wrap(op, parent, err)
		}
		e, err := do(ctx, c, func(z *zk.Conn) (existsw, error) {
			ok, _, ch, err := z.ExistsW(parent)
			return existsw{ok, ch}, err
		}, nil)
		if err != nil {
			return nil, nil, c.wrap(op, parent, err)
		}
		if !e.ok {
			return []backend.Node{}, c.newWatch(parent, e.ch, true), nil
		}
		if attempt >= maxWatchAttempts {
			return nil, nil, c.wrap(op, parent, fmt.Errorf("parent created and deleted %d times during the read: %w", attempt, backend.ErrConnectionLoss))
		}
	}
}

// newWatch wraps a go-zookeeper watch channel. Its goroutine ends when the
// event arrives, when Stop is called, or when the conn dies; go-zookeeper
// keeps its own (buffered) channel until the server fires the watch or the
// connection is closed, since it cannot remove a watch.
func (c *conn) newWatch(path string, zch <-chan zk.Event, children bool) *backend.Watch {
	out := make(chan backend.WatchEvent, 1)
	stop := make(chan struct{})
	var once sync.Once
	stopFn := func() { once.Do(func() { close(stop) }) }
	started := c.goTracked(func() {
		select {
		case ev, ok := <-zch:
			out <- c.translate(path, ev, ok, children)
		case <-stop:
			out <- backend.WatchEvent{Type: backend.EventLost, Path: path, Err: errWatchStopped}
		case <-c.dead:
			out <- backend.WatchEvent{Type: backend.EventLost, Path: path, Err: c.lostErr(nil)}
		}
	})
	if !started {
		out <- backend.WatchEvent{Type: backend.EventLost, Path: path, Err: coordkit.ErrClosed}
	}
	return backend.NewWatch(out, stopFn)
}

// translate maps a go-zookeeper watch event.
func (c *conn) translate(path string, ev zk.Event, ok bool, children bool) backend.WatchEvent {
	if !ok {
		return backend.WatchEvent{Type: backend.EventLost, Path: path, Err: c.lostErr(zk.ErrClosing)}
	}
	switch ev.Type {
	case zk.EventNodeCreated:
		if children {
			return backend.WatchEvent{Type: backend.EventChildren, Path: path}
		}
		return backend.WatchEvent{Type: backend.EventCreated, Path: path}
	case zk.EventNodeDataChanged:
		return backend.WatchEvent{Type: backend.EventChanged, Path: path}
	case zk.EventNodeDeleted:
		if children {
			return backend.WatchEvent{Type: backend.EventChildren, Path: path}
		}
		return backend.WatchEvent{Type: backend.EventDeleted, Path: path}
	case zk.EventNodeChildrenChanged:
		return backend.WatchEvent{Type: backend.EventChildren, Path: path}
	}
	return backend.WatchEvent{Type: backend.EventLost, Path: path, Err: c.lostErr(ev.Err)}
}

// lostErr says why a watch can no longer be delivered.
func (c *conn) lostErr(cause error) error {
	switch {
	case c.closing.Load():
		return coordkit.ErrClosed
	case c.expired.Load(), errors.Is(cause, zk.ErrSessionExpired):
		if cause != nil {
			return fmt.Errorf("%w: %w", coordkit.ErrSessionLost, cause)
		}
		return coordkit.ErrSessionLost
	case cause == nil, errors.Is(cause, zk.ErrClosing):
		return coordkit.ErrClosed
	}
	return fmt.Errorf("%w: %w", backend.ErrConnectionLoss, cause)
}
