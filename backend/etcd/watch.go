package etcd

import (
	"context"
	"errors"
	"fmt"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordkit/coordkit/backend"
)

// errWatchStopped is the Err of the EventLost a stopped watch delivers.
var errWatchStopped = errors.New("etcd: watch stopped")

// Watch reads the node at path and watches its key from the read's revision
// + 1.
func (c *conn) Watch(ctx context.Context, path string) (backend.Node, bool, *backend.Watch, error) {
	if err := backend.ValidatePath(path); err != nil {
		return backend.Node{}, false, nil, err
	}
	octx, done, err := c.begin(ctx, "watch", path)
	if err != nil {
		return backend.Node{}, false, nil, err
	}
	defer done()
	resp, err := c.cli.Get(octx, path)
	if err != nil {
		return backend.Node{}, false, nil, c.fail(ctx, "watch", path, err)
	}
	var n backend.Node
	exists := len(resp.Kvs) > 0
	if exists {
		n = nodeOf(resp.Kvs[0])
	}
	w, err := c.startWatch("watch", path, path, []clientv3.OpOption{clientv3.WithRev(resp.Header.Revision + 1)},
		func(ev *clientv3.Event) (backend.EventType, bool) {
			switch {
			case ev.Type == clientv3.EventTypeDelete:
				return backend.EventDeleted, true
			case ev.IsCreate():
				return backend.EventCreated, true
			default:
				return backend.EventChanged, true
			}
		})
	if err != nil {
		return backend.Node{}, false, nil, err
	}
	return n, exists, w, nil
}

// WatchChildren lists parent's children and watches the "parent/" prefix
// from the listing's revision + 1 for a direct child being created or
// deleted.
func (c *conn) WatchChildren(ctx context.Context, parent string) ([]backend.Node, *backend.Watch, error) {
	if err := backend.ValidatePath(parent); err != nil {
		return nil, nil, err
	}
	octx, done, err := c.begin(ctx, "watch children", parent)
	if err != nil {
		return nil, nil, err
	}
	defer done()
	prefix := childPrefix(parent)
	resp, err := c.cli.Get(octx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, nil, c.fail(ctx, "watch children", parent, err)
	}
	w, err := c.startWatch("watch children", parent, prefix,
		[]clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision + 1)},
		func(ev *clientv3.Event) (backend.EventType, bool) {
			if _, ok := childName(prefix, string(ev.Kv.Key)); !ok {
				return 0, false
			}
			if ev.Type == clientv3.EventTypeDelete || ev.IsCreate() {
				return backend.EventChildren, true
			}
			return 0, false
		})
	if err != nil {
		return nil, nil, err
	}
	return childrenOf(prefix, resp.Kvs), w, nil
}

// startWatch opens an etcd watch and a goroutine that delivers the first
// matching event, or EventLost, on a one-slot channel.
func (c *conn) startWatch(op, path, key string, opts []clientv3.OpOption,
	match func(*clientv3.Event) (backend.EventType, bool)) (*backend.Watch, error) {
	c.mu.Lock()
	if c.dead != nil {
		err := c.dead
		c.mu.Unlock()
		return nil, fmt.Errorf("etcd: %s %q: %w", op, path, err)
	}
	c.wg.Add(1)
	c.mu.Unlock()

	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(c.ctx))
	var (
		stopMu  sync.Mutex
		stopped bool
	)
	isStopped := func() bool { stopMu.Lock(); defer stopMu.Unlock(); return stopped }
	ch := make(chan backend.WatchEvent, 1)
	finished := make(chan struct{})
	wch := c.cli.Watch(wctx, key, opts...)

	lost := func(err error) backend.WatchEvent {
		return backend.WatchEvent{Type: backend.EventLost, Path: path, Err: err}
	}
	ended := func() backend.WatchEvent {
		if isStopped() {
			return lost(errWatchStopped)
		}
		if dead := c.deadErr(); dead != nil {
			return lost(dead)
		}
		return lost(errors.New("etcd: watch channel closed"))
	}
	go func() {
		defer c.wg.Done()
		defer close(finished)
		defer wcancel()
		ch <- func() backend.WatchEvent {
			for {
				select {
				case <-wctx.Done():
					return ended()
				case resp, ok := <-wch:
					if !ok {
						return ended()
					}
					if err := resp.Err(); err != nil {
						if wctx.Err() != nil {
							return ended()
						}
						return lost(fmt.Errorf("etcd: %s %q: %w", op, path, err))
					}
					for _, ev := range resp.Events {
						if t, ok := match(ev); ok {
							return backend.WatchEvent{Type: t, Path: path}
						}
					}
				}
			}
		}()
	}()
	stop := func() {
		stopMu.Lock()
		stopped = true
		stopMu.Unlock()
		wcancel()
		<-finished
	}
	return backend.NewWatch(ch, stop), nil
}
