// Command inventory is coordkit's first demo: several workers, each with its
// own session (as if each were a separate process), sell from a small stock.
//
//	go run ./examples/inventory              # on an embedded etcd, nothing to install
//	go run ./examples/inventory -zk 127.0.0.1:2181   # on your ZooKeeper
//
// It runs three acts:
//
//  1. Without a lock every worker reads the stock, charges the customer and
//     writes the stock back: the workers overwrite each other and the shop
//     sells more than it has.
//  2. With recipes/mutex around read-charge-write exactly the stock is sold.
//  3. On a fresh stock of one item, the demo cuts the connection of the
//     worker holding the lock for longer than its session timeout: to the
//     server that is what a paused process (a long GC pause, say) looks
//     like. The server expires the session and gives the lock to another
//     worker, which sells the item. Then the first worker, acting as a
//     paused process would when it wakes, writes with its old fencing
//     token, and the store, a recipes/fence.Register, refuses the write.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	etcddrv "github.com/coordkit/coordkit/backend/etcd"
	zkdrv "github.com/coordkit/coordkit/backend/zookeeper"
	"github.com/coordkit/coordkit/integration"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/fence"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.zk, "zk", "", "run on the ZooKeeper server at `host:port` instead of an embedded etcd")
	flag.IntVar(&cfg.workers, "workers", 4, "number of workers (sessions)")
	flag.IntVar(&cfg.stock, "stock", 3, "items in stock")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := run(ctx, os.Stdout, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "inventory:", err)
		os.Exit(1)
	}
}

// config is what the command line sets.
type config struct {
	zk      string // ZooKeeper host:port; "" starts an embedded etcd
	workers int
	stock   int
}

// report is what the demo found, for its test.
type report struct {
	UnlockedSold int // items sold without a lock
	LockedSold   int // items sold with the lock
	LockedLeft   int // stock left after selling with the lock
	StaleToken   int64
	NewToken     int64
	StaleErr     error // the store's answer to the paused worker's write
	PausedErr    error // the paused worker's Guard.Err when it resumed
}

// payment is how long a worker takes to charge a customer.
const payment = 20 * time.Millisecond

const lockPath = "/coordkit-demo/inventory"

func run(ctx context.Context, out io.Writer, cfg config) (*report, error) {
	if cfg.workers < 2 || cfg.stock < 1 {
		return nil, errors.New("need at least 2 workers and 1 item")
	}
	start := time.Now()
	b, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer b.close()
	fmt.Fprintf(out, "%d workers, each with its own session on %s, sell from a stock of %d.\n\n", cfg.workers, b.name, cfg.stock)

	var sessions []*session.Session
	defer func() {
		for _, s := range sessions {
			closeSession(s)
		}
	}()
	for range cfg.workers {
		s, err := session.New(ctx, b.drv, session.WithTTL(10*time.Second))
		if err != nil {
			return nil, fmt.Errorf("open a session: %w", err)
		}
		sessions = append(sessions, s)
	}
	rep := &report{}

	// Act 1: no lock.
	fmt.Fprintln(out, "1. No lock: each worker reads the stock, charges the customer, writes the stock back.")
	shelf := fence.NewRegister(cfg.stock) // token 0 throughout: no lock, no fencing
	rep.UnlockedSold = sell(out, cfg.workers, func(int) (bool, error) {
		v, _ := shelf.Load()
		if v <= 0 {
			return false, nil
		}
		time.Sleep(payment)
		return true, shelf.Store(0, v-1)
	})
	if rep.UnlockedSold > cfg.stock {
		fmt.Fprintf(out, "   sold %d items from a stock of %d: OVERSOLD by %d. The workers overwrote each other's updates.\n\n",
			rep.UnlockedSold, cfg.stock, rep.UnlockedSold-cfg.stock)
	} else {
		fmt.Fprintf(out, "   sold %d items from a stock of %d (lucky timing: nothing overwritten this time).\n\n", rep.UnlockedSold, cfg.stock)
	}

	// Act 2: with the lock.
	fmt.Fprintln(out, "2. With mutex.Lock around read-charge-write:")
	stock := fence.NewRegister(cfg.stock)
	var (
		tokMu  sync.Mutex
		tokens []int64
	)
	rep.LockedSold = sell(out, cfg.workers, func(w int) (bool, error) {
		m, err := mutex.New(sessions[w], lockPath)
		if err != nil {
			return false, err
		}
		g, err := m.Lock(ctx)
		if err != nil {
			return false, err
		}
		defer g.Unlock(context.Background())
		v, _ := stock.Load()
		if v <= 0 {
			return false, nil
		}
		time.Sleep(payment)
		tokMu.Lock()
		tokens = append(tokens, g.Token())
		tokMu.Unlock()
		return true, stock.Store(g.Token(), v-1)
	})
	rep.LockedLeft, _ = stock.Load()
	fmt.Fprintf(out, "   sold %d items, %d left: exactly the stock. Fencing tokens of the sales, in order: %v\n\n", rep.LockedSold, rep.LockedLeft, tokens)

	// Act 3: a holder paused past its session timeout.
	if err := pausedHolder(ctx, out, b, sessions[0], rep); err != nil {
		return rep, err
	}
	fmt.Fprintf(out, "\nDone in %v.\n", time.Since(start).Round(100*time.Millisecond))
	return rep, nil
}

// sell runs one goroutine per worker; each calls buy until it returns false
// or an error (which it prints to out), and sell returns the number of
// items sold.
func sell(out io.Writer, workers int, buy func(worker int) (bool, error)) int {
	var (
		mu   sync.Mutex
		sold int
		wg   sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ok, err := buy(w)
				if err != nil {
					mu.Lock()
					fmt.Fprintf(out, "   worker %d: %v\n", w+1, err)
					mu.Unlock()
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				sold++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return sold
}

func pausedHolder(ctx context.Context, out io.Writer, b *servers, other *session.Session, rep *report) error {
	// Worker A reaches the server through a proxy that the demo cuts: the
	// process keeps running but nothing it sends arrives, and no reply
	// reaches it, which is what the server sees of a paused process.
	proxy, err := integration.StartProxy(b.addr)
	if err != nil {
		return err
	}
	defer proxy.Close()
	pdrv, err := b.open([]string{proxy.Addr()})
	if err != nil {
		return err
	}
	defer pdrv.Close()
	ps, err := session.New(ctx, pdrv, session.WithTTL(b.shortTTL))
	if err != nil {
		return fmt.Errorf("open worker A's session: %w", err)
	}
	defer closeSession(ps)
	fmt.Fprintf(out, "3. A new stock of 1 item. The demo cuts the lock holder's connection for longer than its\n"+
		"   session timeout (%v): to the server, that is what a paused process looks like.\n", ps.Timeout())

	stock := fence.NewRegister(1)
	pm, _ := mutex.New(ps, lockPath)
	g, err := pm.Lock(ctx)
	if err != nil {
		return err
	}
	v, _ := stock.Load()
	rep.StaleToken = g.Token()
	fmt.Fprintf(out, "   worker A holds the lock (token %d), reads stock %d, starts charging ... and its connection is cut.\n", g.Token(), v)
	proxy.Blackhole()
	paused := time.Now()

	om, _ := mutex.New(other, lockPath)
	og, err := om.Lock(ctx)
	if err != nil {
		return err
	}
	rep.NewToken = og.Token()
	ov, _ := stock.Load()
	if err := stock.Store(og.Token(), ov-1); err != nil {
		return err
	}
	fmt.Fprintf(out, "   worker B waited %v until the server expired A's session, got the lock (token %d), sold the item.\n",
		time.Since(paused).Round(100*time.Millisecond), og.Token())
	if err := og.Unlock(ctx); err != nil {
		return err
	}

	proxy.Unblackhole()
	rep.PausedErr = g.Err()
	if rep.PausedErr != nil {
		fmt.Fprintf(out, "   A's connection is back. Its Guard reported the loss (%s),\n"+
			"   but a process paused mid-sale would write without looking, and so does A.\n", why(rep.PausedErr))
	} else {
		fmt.Fprintln(out, "   A's connection is back. Its Guard reported no loss; A writes as a process paused mid-sale would.")
	}
	rep.StaleErr = stock.Store(g.Token(), v-1)
	if rep.StaleErr == nil {
		fmt.Fprintf(out, "   worker A writes stock %d with token %d: ACCEPTED. The item was sold twice.\n", v-1, g.Token())
	} else {
		fmt.Fprintf(out, "   worker A writes stock %d with token %d: REFUSED by the store (%v).\n", v-1, g.Token(), rep.StaleErr)
		fmt.Fprintln(out, "   The lock could not stop a holder that lost its session; the fencing token did. The item was sold once.")
	}
	g.Unlock(context.Background())
	return nil
}

// servers is the backend the demo runs on.
type servers struct {
	name     string
	addr     string // the address the paused worker's proxy forwards to
	drv      backend.Driver
	open     func(addrs []string) (backend.Driver, error)
	shortTTL time.Duration // the paused worker's session timeout
	close    func()
}

func connect(ctx context.Context, cfg config) (*servers, error) {
	if cfg.zk != "" {
		open := func(addrs []string) (backend.Driver, error) { return zkdrv.New(addrs) }
		drv, err := open([]string{cfg.zk})
		if err != nil {
			return nil, err
		}
		// ZooKeeper's default settings (tickTime 2s) grant at least 4s.
		return &servers{name: "ZooKeeper " + cfg.zk, addr: cfg.zk, drv: drv, open: open,
			shortTTL: 4 * time.Second, close: func() { drv.Close() }}, nil
	}
	ec, err := integration.LaunchEtcd(ctx, integration.WithEtcdLogLevel("error"))
	if err != nil {
		return nil, fmt.Errorf("start an embedded etcd: %w", err)
	}
	open := func(addrs []string) (backend.Driver, error) {
		return etcddrv.Dial(clientv3.Config{Endpoints: addrs, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	}
	drv, err := open(ec.Endpoints())
	if err != nil {
		ec.Close()
		return nil, err
	}
	return &servers{name: "etcd (embedded, " + ec.Endpoint(0) + ")", addr: ec.Endpoint(0), drv: drv, open: open,
		// etcd's shortest lease: 2s with the default election timeout.
		shortTTL: 2 * time.Second, close: func() { drv.Close(); ec.Close() }}, nil
}

// why says in a few words why a hold ended.
func why(err error) string {
	switch {
	case err == nil:
		return "it had not"
	case errors.Is(err, session.ErrSuspended):
		return "its session was suspended"
	case errors.Is(err, session.ErrExpired):
		return "the server expired its session"
	case errors.Is(err, session.ErrLostByTimer):
		return "its session timed out"
	case errors.Is(err, coordkit.ErrSessionLost):
		return "its session was lost"
	case errors.Is(err, recipes.ErrNodeDeleted):
		return "its lock node was deleted"
	}
	return err.Error()
}

func closeSession(s *session.Session) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Close(ctx)
}
