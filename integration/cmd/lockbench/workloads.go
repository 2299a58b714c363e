package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/integration"
	"github.com/coordkit/coordkit/recipes/fairlock"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// lockFunc takes a lock and returns how to release it.
type lockFunc func(ctx context.Context) (unlock func(context.Context) error, err error)

// guarded adapts a Lock method that returns a guard with Unlock.
func guarded[G interface{ Unlock(context.Context) error }](lock func(context.Context) (G, error)) lockFunc {
	return func(ctx context.Context) (func(context.Context) error, error) {
		g, err := lock(ctx)
		if err != nil {
			return nil, err
		}
		return g.Unlock, nil
	}
}

// newLock makes a coordkit lock at path on s.
type newLock func(s *session.Session, path string) (lockFunc, error)

func newMutex(s *session.Session, path string) (lockFunc, error) {
	m, err := mutex.New(s, path)
	if err != nil {
		return nil, err
	}
	return guarded(m.Lock), nil
}

func newFairlock(s *session.Session, path string) (lockFunc, error) {
	l, err := fairlock.New(s, path)
	if err != nil {
		return nil, err
	}
	return guarded(l.Lock), nil
}

// concurrencyLock is etcd's concurrency.Mutex at path on s.
func concurrencyLock(s *concurrency.Session, path string) lockFunc {
	m := concurrency.NewMutex(s, path)
	return func(ctx context.Context) (func(context.Context) error, error) {
		if err := m.Lock(ctx); err != nil {
			return nil, err
		}
		return m.Unlock, nil
	}
}

// curatorLock is Curator's InterProcessMutex at path in driver c. It takes
// the lock with AcquireNode, which replies as soon as acquire() returns (no
// czxid read), so a sample holds no ZooKeeper call Curator's users do not
// make.
func curatorLock(c *integration.Curator, path string) lockFunc {
	return func(ctx context.Context) (func(context.Context) error, error) {
		if _, err := c.AcquireNode(ctx, path); err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return c.Release(ctx, path) }, nil
	}
}

// measure is what one row measured in one round: a rate, or latency
// samples.
type measure struct {
	rate    float64
	samples []time.Duration
}

// runFunc measures one row once, on a fresh lock path, for about d.
type runFunc func(ctx context.Context, path string, d time.Duration) (measure, error)

// loops runs one goroutine per fn, each taking and releasing its lock in a
// loop, for d, and returns the acquisitions per second that completed
// within d (as the Curator driver's BenchThreads counts them). The first
// error stops every goroutine and is returned.
func loops(ctx context.Context, d time.Duration, fns []lockFunc) (float64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var stop atomic.Bool
	var count atomic.Int64
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for !stop.Load() && ctx.Err() == nil {
				unlock, err := fn(ctx)
				if err != nil {
					cancel(fmt.Errorf("lock: %w", err))
					return
				}
				if !stop.Load() {
					count.Add(1)
				}
				if err := unlock(ctx); err != nil {
					cancel(fmt.Errorf("unlock: %w", err))
					return
				}
			}
		}()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	t0 := time.Now()
	close(start)
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	stop.Store(true)
	elapsed := time.Since(t0)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	return float64(count.Load()) / elapsed.Seconds(), nil
}

// settle is how long a handoff sample lets the waiter park on its watch
// after the observer has seen it queued (the waiter arms its watch one round
// trip after its node appears).
const settle = 5 * time.Millisecond

// minHandoffs is the fewest samples a handoff round takes, however short d.
const minHandoffs = 5

// handoffs ping-pongs a lock between two sessions for d (at least
// minHandoffs times): one holds it, the other calls Lock, and once queued
// says the waiter is queued (and settle has passed) the holder unlocks. A
// sample is the time from the holder's Unlock returning to the waiter's Lock
// returning. The lock is free again when handoffs returns, error or not.
func handoffs(ctx context.Context, d time.Duration, a, b lockFunc, queued func(context.Context) error) (_ []time.Duration, err error) {
	unlock, err := a(ctx)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	defer func() {
		if unlock != nil {
			err = errors.Join(err, releaseBounded(ctx, unlock))
		}
	}()
	type grant struct {
		unlock func(context.Context) error
		err    error
		at     time.Time
	}
	var samples []time.Duration
	sides := [2]lockFunc{a, b}
	t0 := time.Now()
	for i := 1; len(samples) < minHandoffs || time.Since(t0) < d; i++ {
		waiter := sides[i%2]
		wctx, wcancel := context.WithCancel(ctx)
		ch := make(chan grant, 1)
		go func() {
			u, err := waiter(wctx)
			if err != nil {
				wcancel() // queued would wait for it forever
			}
			ch <- grant{u, err, time.Now()}
		}()
		err := queued(wctx)
		if err == nil {
			err = sleep(wctx, settle)
		}
		var released time.Time
		if err == nil {
			err = unlock(ctx)
			released = time.Now()
			unlock = nil
		}
		if err != nil {
			// Stop the waiter; if it was granted regardless, release it.
			wcancel()
			switch g := <-ch; {
			case g.err == nil:
				err = errors.Join(err, releaseBounded(ctx, g.unlock))
			case ctx.Err() == nil && errors.Is(err, context.Canceled):
				err = fmt.Errorf("waiter's lock: %w", g.err)
			}
			return nil, err
		}
		g := <-ch
		wcancel()
		if g.err != nil {
			return nil, fmt.Errorf("waiter's lock: %w", g.err)
		}
		samples = append(samples, g.at.Sub(released))
		unlock = g.unlock
	}
	return samples, nil
}

// releaseBounded releases a lock with a fresh context, so that a release
// still runs after ctx ended.
func releaseBounded(ctx context.Context, unlock func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ttl)
	defer cancel()
	return unlock(ctx)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// awaitChildren returns once dir has at least n children: a holder and a
// waiter of a queue lock (fairlock, Curator, etcd concurrency.Mutex).
func awaitChildren(conn backend.Conn, dir string, n int) func(context.Context) error {
	return func(ctx context.Context) error {
		for {
			kids, w, err := conn.WatchChildren(ctx, dir)
			if err != nil {
				return fmt.Errorf("watch %s: %w", dir, err)
			}
			if len(kids) >= n {
				w.Stop()
				return nil
			}
			if err := awaitWatch(ctx, w); err != nil {
				return err
			}
		}
	}
}

// awaitMark returns once a waiting process has marked the mutex's owner
// node as contended, which it does once queued, right before it watches
// the node.
func awaitMark(conn backend.Conn, lockPath string) func(context.Context) error {
	owner := backend.Join(lockPath, mutex.OwnerName)
	return func(ctx context.Context) error {
		for {
			n, exists, w, err := conn.Watch(ctx, owner)
			if err != nil {
				return fmt.Errorf("watch %s: %w", owner, err)
			}
			if exists && string(n.Data) == mutex.ContendedMark {
				w.Stop()
				return nil
			}
			if err := awaitWatch(ctx, w); err != nil {
				return err
			}
		}
	}
}

func awaitWatch(ctx context.Context, w *backend.Watch) error {
	select {
	case <-w.C():
		return nil
	case <-ctx.Done():
		w.Stop()
		return ctx.Err()
	}
}

// openSessions opens n coordkit sessions on drv; closeAll closes them.
func openSessions(ctx context.Context, drv backend.Driver, n int) (ss []*session.Session, closeAll func() error, err error) {
	closeAll = func() error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ttl)
		defer cancel()
		var errs []error
		for _, s := range ss {
			errs = append(errs, s.Close(ctx))
		}
		return errors.Join(errs...)
	}
	for range n {
		s, err := session.New(ctx, drv, session.WithTTL(ttl))
		if err != nil {
			return nil, nil, errors.Join(fmt.Errorf("session: %w", err), closeAll())
		}
		ss = append(ss, s)
	}
	return ss, closeAll, nil
}

// openConcurrencySessions opens n etcd concurrency sessions on the etcd
// client; closeAll closes them (revoking their leases).
func openConcurrencySessions(e *etcdServer, n int) (ss []*concurrency.Session, closeAll func() error, err error) {
	closeAll = func() error {
		var errs []error
		for _, s := range ss {
			errs = append(errs, s.Close())
		}
		return errors.Join(errs...)
	}
	for range n {
		s, err := concurrency.NewSession(e.client(), concurrency.WithTTL(int(ttl/time.Second)))
		if err != nil {
			return nil, nil, errors.Join(fmt.Errorf("concurrency session: %w", err), closeAll())
		}
		ss = append(ss, s)
	}
	return ss, closeAll, nil
}

// withWarmup runs the fns for a tenth of d untimed, then measures them for d.
func withWarmup(ctx context.Context, d time.Duration, fns []lockFunc) (measure, error) {
	if _, err := loops(ctx, d/10, fns); err != nil {
		return measure{}, err
	}
	rate, err := loops(ctx, d, fns)
	return measure{rate: rate}, err
}

// coordkitLoops: sessions sessions, each with goroutines goroutines sharing
// one lock of the kind mk makes.
func coordkitLoops(drv backend.Driver, mk newLock, sessions, goroutines int) runFunc {
	return func(ctx context.Context, path string, d time.Duration) (_ measure, err error) {
		ss, closeAll, err := openSessions(ctx, drv, sessions)
		if err != nil {
			return measure{}, err
		}
		defer func() { err = errors.Join(err, closeAll()) }()
		var fns []lockFunc
		for _, s := range ss {
			fn, err := mk(s, path)
			if err != nil {
				return measure{}, err
			}
			for range goroutines {
				fns = append(fns, fn)
			}
		}
		return withWarmup(ctx, d, fns)
	}
}

// concurrencyLoops: sessions etcd concurrency sessions, one goroutine each.
func concurrencyLoops(e *etcdServer, sessions int) runFunc {
	return func(ctx context.Context, path string, d time.Duration) (_ measure, err error) {
		ss, closeAll, err := openConcurrencySessions(e, sessions)
		if err != nil {
			return measure{}, err
		}
		defer func() { err = errors.Join(err, closeAll()) }()
		var fns []lockFunc
		for _, s := range ss {
			fns = append(fns, concurrencyLock(s, path))
		}
		return withWarmup(ctx, d, fns)
	}
}

// rawCreateDelete: go-zookeeper alone, on one connection: create an
// ephemeral node, delete it.
func rawCreateDelete(z *zkServer) runFunc {
	return rawZooKeeper(z, func(conn *zk.Conn, path string) lockFunc {
		node := path + "/lock"
		return func(context.Context) (func(context.Context) error, error) {
			if _, err := conn.Create(node, nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
				return nil, err
			}
			return func(context.Context) error { return conn.Delete(node, -1) }, nil
		}
	})
}

// rawStampedMultis: go-zookeeper alone, sending the requests of an
// uncontended coordkit mutex cycle (see package recipes/mutex, "Layout"):
// one multi that creates P/owner and its pin and writes P, then one that
// checks P's version and deletes the pin and P/owner. It is the mutex's
// floor: what its protocol costs the server, without coordkit's code.
func rawStampedMultis(z *zkServer) runFunc {
	return rawZooKeeper(z, func(conn *zk.Conn, path string) lockFunc {
		owner, acl := path+"/owner", zk.WorldACL(zk.PermAll)
		var n uint64
		return func(context.Context) (func(context.Context) error, error) {
			n++
			pin := backend.PinPath(owner, strconv.FormatInt(conn.SessionID(), 16), n)
			res, err := conn.Multi(
				&zk.CreateRequest{Path: owner, Acl: acl, Flags: zk.FlagEphemeral},
				&zk.CreateRequest{Path: pin, Acl: acl, Flags: zk.FlagEphemeral},
				&zk.SetDataRequest{Path: path, Version: -1})
			if err != nil {
				return nil, err
			}
			version := res[2].Stat.Version
			return func(context.Context) error {
				_, err := conn.Multi(
					&zk.CheckVersionRequest{Path: path, Version: version},
					&zk.DeleteRequest{Path: pin, Version: -1},
					&zk.DeleteRequest{Path: owner, Version: 0})
				return err
			}, nil
		}
	})
}

// rawZooKeeper runs the lock that mk makes at path on a go-zookeeper
// connection of its own. The path's nodes are persistent (a container would
// be reaped between a delete and the next create), removed at the end.
func rawZooKeeper(z *zkServer, mk func(conn *zk.Conn, path string) lockFunc) runFunc {
	return func(ctx context.Context, path string, d time.Duration) (_ measure, err error) {
		conn, _, err := zk.Connect(z.cluster.Addrs(), ttl, zk.WithLogger(quietLogger{}))
		if err != nil {
			return measure{}, err
		}
		defer conn.Close()
		var made []string
		defer func() {
			for i := len(made) - 1; i >= 0; i-- {
				if derr := conn.Delete(made[i], -1); derr != nil && !errors.Is(derr, zk.ErrNotEmpty) && !errors.Is(derr, zk.ErrNoNode) {
					err = errors.Join(err, fmt.Errorf("delete %s: %w", made[i], derr))
				}
			}
		}()
		var p string
		for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
			p += "/" + part
			_, err := conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll))
			switch {
			case err == nil:
				made = append(made, p)
			case !errors.Is(err, zk.ErrNodeExists):
				return measure{}, fmt.Errorf("create %s: %w", p, err)
			}
		}
		return withWarmup(ctx, d, []lockFunc{mk(conn, path)})
	}
}

// rawEtcdTxns: the etcd client alone, sending the requests of an
// uncontended coordkit mutex cycle on etcd: a Txn that puts P/owner on the
// session's lease if it does not exist, then a Txn that deletes it if its
// mod revision is still the put's. It is the mutex's floor on etcd.
func rawEtcdTxns(e *etcdServer) runFunc {
	return func(ctx context.Context, path string, d time.Duration) (_ measure, err error) {
		ss, closeAll, err := openConcurrencySessions(e, 1)
		if err != nil {
			return measure{}, err
		}
		defer func() { err = errors.Join(err, closeAll()) }()
		cli, lease, owner := e.client(), ss[0].Lease(), path+"/owner"
		fn := func(ctx context.Context) (func(context.Context) error, error) {
			put, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(owner), "=", 0)).
				Then(clientv3.OpPut(owner, "", clientv3.WithLease(lease))).Else(clientv3.OpGet(owner)).Commit()
			if err != nil {
				return nil, err
			}
			if !put.Succeeded {
				return nil, fmt.Errorf("%s exists", owner)
			}
			rev := put.Header.Revision
			return func(ctx context.Context) error {
				del, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(owner), "=", rev)).
					Then(clientv3.OpDelete(owner)).Else(clientv3.OpGet(owner)).Commit()
				if err == nil && !del.Succeeded {
					err = fmt.Errorf("%s changed", owner)
				}
				return err
			}, nil
		}
		return withWarmup(ctx, d, []lockFunc{fn})
	}
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

// curatorUncontended runs the driver's own benchmark loop (no line protocol
// per cycle). It takes a number of cycles, not a time: each round asks for
// the cycles the previous one managed in d.
func curatorUncontended(c *integration.Curator) runFunc {
	rate := 200.0 // a first guess; the warm-up round corrects it
	return func(ctx context.Context, path string, d time.Duration) (measure, error) {
		n := max(20, int(rate*d.Seconds()))
		r, err := c.BenchUncontended(ctx, path, n)
		if err != nil {
			return measure{}, err
		}
		rate = r
		return measure{rate: r}, nil
	}
}

// curatorThreads runs BenchThreads(path, threads, d) in every driver at
// once, on one path, and sums their rates.
func curatorThreads(cs []*integration.Curator, threads int) runFunc {
	return func(ctx context.Context, path string, d time.Duration) (measure, error) {
		rates := make([]float64, len(cs))
		fns := make([]func() error, len(cs))
		for i, c := range cs {
			fns[i] = func() (err error) {
				rates[i], err = c.BenchThreads(ctx, path, threads, d)
				return err
			}
		}
		if err := parallel(fns); err != nil {
			return measure{}, err
		}
		var sum float64
		for _, r := range rates {
			sum += r
		}
		return measure{rate: sum}, nil
	}
}

// observed opens an observer session on drv, runs fn with its Conn and
// closes it.
func observed(ctx context.Context, drv backend.Driver, fn func(conn backend.Conn) ([]time.Duration, error)) (_ measure, err error) {
	ss, closeAll, err := openSessions(ctx, drv, 1)
	if err != nil {
		return measure{}, err
	}
	defer func() { err = errors.Join(err, closeAll()) }()
	samples, err := fn(ss[0].Conn())
	return measure{samples: samples}, err
}

// coordkitHandoff ping-pongs a coordkit lock between two sessions.
func coordkitHandoff(drv backend.Driver, mk newLock, queued func(conn backend.Conn, path string) func(context.Context) error) runFunc {
	return func(ctx context.Context, path string, d time.Duration) (_ measure, err error) {
		ss, closeAll, err := openSessions(ctx, drv, 2)
		if err != nil {
			return measure{}, err
		}
		defer func() { err = errors.Join(err, closeAll()) }()
		a, err := mk(ss[0], path)
		if err != nil {
			return measure{}, err
		}
		b, err := mk(ss[1], path)
		if err != nil {
			return measure{}, err
		}
		return observed(ctx, drv, func(conn backend.Conn) ([]time.Duration, error) {
			return handoffs(ctx, d, a, b, queued(conn, path))
		})
	}
}

func queuedChildren(conn backend.Conn, path string) func(context.Context) error {
	return awaitChildren(conn, path, 2)
}

// concurrencyHandoff ping-pongs etcd's concurrency.Mutex between two
// concurrency sessions; a coordkit session observes the keys under path.
func concurrencyHandoff(e *etcdServer) runFunc {
	return func(ctx context.Context, path string, d time.Duration) (_ measure, err error) {
		ss, closeAll, err := openConcurrencySessions(e, 2)
		if err != nil {
			return measure{}, err
		}
		defer func() { err = errors.Join(err, closeAll()) }()
		return observed(ctx, e.drv, func(conn backend.Conn) ([]time.Duration, error) {
			return handoffs(ctx, d, concurrencyLock(ss[0], path), concurrencyLock(ss[1], path), queuedChildren(conn, path))
		})
	}
}

// curatorHandoff ping-pongs Curator's InterProcessMutex between two
// drivers (two JVMs, two ZooKeeper sessions) through the driver's line
// protocol; a coordkit session observes the lock nodes.
func curatorHandoff(z *zkServer) runFunc {
	return func(ctx context.Context, path string, d time.Duration) (measure, error) {
		return observed(ctx, z.drv, func(conn backend.Conn) ([]time.Duration, error) {
			return handoffs(ctx, d, curatorLock(z.curators[0], path), curatorLock(z.curators[1], path), queuedChildren(conn, path))
		})
	}
}
