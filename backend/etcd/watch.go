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

// How Watch and WatchChildren read and watch without a gap and without
// waiting for the server's catch-up loop:
//
// A watch opened at a past revision (the classic "Get, then Watch from the
// Get's revision + 1") is served by etcd's unsynced-watcher loop, which runs
// every 100ms; on a busy server every such watch starts up to 100ms late.
// So the watch is opened at the current revision instead (the server replies
// with the revision W it starts after), concurrently with the read (at
// revision G). If W <= G the watch covers everything after the read: events
// at revisions up to G, which the read already reflects, are dropped. If
// W > G (a write landed between the two), the read is repeated at revision
// W exactly, so the result and the watch meet without a gap. Either way the
// call costs one round trip, two only in the rare second case.

// Watch reads the node at path and watches its key for a change after the
// read.
func (c *conn) Watch(ctx context.Context, path string) (backend.Node, bool, *backend.Watch, error) {
	if err := backend.ValidatePath(path); err != nil {
		return backend.Node{}, false, nil, err
	}
	octx, done, err := c.begin(ctx, "watch", path)
	if err != nil {
		return backend.Node{}, false, nil, err
	}
	defer done()
	w, err := c.startWatch(octx, "watch", path, path, nil,
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
		return backend.Node{}, false, nil, c.fail(ctx, "watch", path, err)
	}
	resp, err := w.read(octx, func(opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
		return c.cli.Get(octx, path, opts...)
	})
	if err != nil {
		return backend.Node{}, false, nil, c.fail(ctx, "watch", path, err)
	}
	var n backend.Node
	exists := len(resp.Kvs) > 0
	if exists {
		n = nodeOf(resp.Kvs[0])
	}
	return n, exists, w.Watch, nil
}

// WatchChildren lists parent's children and watches the "parent/" prefix
// for a direct child being created or deleted after the listing.
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
	w, err := c.startWatch(octx, "watch children", parent, prefix, []clientv3.OpOption{clientv3.WithPrefix()},
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
		return nil, nil, c.fail(ctx, "watch children", parent, err)
	}
	resp, err := w.read(octx, func(opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
		opts = append(opts, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
		return c.cli.Get(octx, prefix, opts...)
	})
	if err != nil {
		return nil, nil, c.fail(ctx, "watch children", parent, err)
	}
	return childrenOf(prefix, resp.Kvs), w.Watch, nil
}

// openingWatch is a watch whose start revision is being settled with its
// read (see above).
type openingWatch struct {
	*backend.Watch
	created <-chan int64 // W, once the server has created the watch
	floor   chan<- int64 // the read's revision: events up to it are dropped
	failed  <-chan error // the watch could not be created
	// setup stops tying the watch to the call's ctx (see startWatch); it
	// reports false if ctx has ended and cancelled the watch already.
	setup func() bool
}

// read runs get (at the latest revision) while the watch is being created,
// then settles the two as described above. On error the watch is stopped.
func (w *openingWatch) read(ctx context.Context, get func(...clientv3.OpOption) (*clientv3.GetResponse, error)) (*clientv3.GetResponse, error) {
	resp, err := get()
	var start int64
	if err == nil {
		select {
		case start = <-w.created:
		case err = <-w.failed:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	var floor int64 // the revision the read reflects
	if err == nil {
		floor = resp.Header.Revision
	}
	if err == nil && start > floor {
		// A read at a past revision reports the store's current revision
		// in its header, not the one it read at: the floor is start.
		resp, err = get(clientv3.WithRev(start))
		floor = start
	}
	if err == nil && !w.setup() {
		err = ctx.Err()
	}
	if err != nil {
		w.setup() // untie the stopped watch from ctx, or the tie stays until ctx ends
		w.Stop()
		return nil, err
	}
	w.floor <- floor
	return resp, nil
}

// startWatch opens an etcd watch on key at the current revision and a
// goroutine that reports its start revision, then delivers the first
// matching event after the floor read sets, or EventLost, on a one-slot
// channel. The watch lives with the session, but until read settles it, it
// also ends with ctx, the call's: clientv3's Watch waits for the server to
// take the watch, and a server that does not answer must not keep the call
// past ctx.
func (c *conn) startWatch(ctx context.Context, op, path, key string, opts []clientv3.OpOption,
	match func(*clientv3.Event) (backend.EventType, bool)) (*openingWatch, error) {
	c.mu.Lock()
	if c.dead != nil {
		err := c.dead
		c.mu.Unlock()
		return nil, err
	}
	c.wg.Add(1)
	c.mu.Unlock()

	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(c.ctx))
	setup := context.AfterFunc(ctx, wcancel)
	var (
		stopMu  sync.Mutex
		stopped bool
	)
	isStopped := func() bool { stopMu.Lock(); defer stopMu.Unlock(); return stopped }
	ch := make(chan backend.WatchEvent, 1)
	created := make(chan int64, 1)
	failed := make(chan error, 1)
	floor := make(chan int64, 1)
	finished := make(chan struct{})
	wch := c.cli.Watch(wctx, key, append(opts, clientv3.WithCreatedNotify())...)

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
	deliver := func() backend.WatchEvent {
		// The server's confirmation, with the revision the watch starts
		// after.
		select {
		case <-wctx.Done():
			ev := ended()
			failed <- ev.Err
			return ev
		case resp, ok := <-wch:
			if !ok || resp.Err() != nil || !resp.Created {
				ev := ended()
				if ok && resp.Err() != nil && wctx.Err() == nil {
					ev = lost(fmt.Errorf("etcd: %s %q: %w", op, path, resp.Err()))
				}
				failed <- ev.Err
				return ev
			}
			created <- resp.Header.Revision
		}
		var min int64
		select {
		case <-wctx.Done():
			return ended()
		case min = <-floor:
		}
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
					if ev.Kv.ModRevision <= min {
						continue // the read already saw it
					}
					if t, ok := match(ev); ok {
						return backend.WatchEvent{Type: t, Path: path}
					}
				}
			}
		}
	}
	go func() {
		defer c.wg.Done()
		defer close(finished)
		defer wcancel()
		ch <- deliver()
	}()
	stop := func() {
		stopMu.Lock()
		stopped = true
		stopMu.Unlock()
		wcancel()
		<-finished
	}
	return &openingWatch{Watch: backend.NewWatch(ch, stop), created: created, floor: floor, failed: failed, setup: setup}, nil
}
