package etcd_test

import (
	"context"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordkit/coordkit/backend/etcd"
	"github.com/coordkit/coordkit/recipes/fairlock"
	"github.com/coordkit/coordkit/session"
)

// A driver that owns its etcd client, a session (a lease) on it, and a
// lock. (This example needs a server at 127.0.0.1:2379, so it is compiled,
// not run.)
func ExampleDial() {
	drv, err := etcd.Dial(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}, DialTimeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer drv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := session.New(ctx, drv, session.WithTTL(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	// A short deadline: etcd's client retries the lease revoke until the
	// deadline when the server cannot be reached.
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.Close(cctx)
	}()

	l, err := fairlock.New(s, "/locks/nightly")
	if err != nil {
		log.Fatal(err)
	}
	g, err := l.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer g.Unlock(context.Background())
}

// A driver on a client the application already has: the driver's Close
// leaves the client open.
func ExampleNew() {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}, DialTimeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	drv, err := etcd.New(cli)
	if err != nil {
		log.Fatal(err)
	}
	defer drv.Close()
	// session.New(ctx, drv, ...) as in the Dial example.
}
