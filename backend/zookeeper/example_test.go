package zookeeper_test

import (
	"context"
	"log"
	"time"

	"github.com/coordkit/coordkit/backend/zookeeper"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// A driver for a ZooKeeper ensemble, a session on it, and a lock. (This
// example needs a server at 127.0.0.1:2181, so it is compiled, not run.)
func ExampleNew() {
	drv, err := zookeeper.New([]string{"127.0.0.1:2181"})
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
	// A short deadline: a session cut off from the server cannot say
	// goodbye, and Close then says so (backend.ErrConnectionLoss).
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.Close(cctx); err != nil {
			log.Printf("the server keeps the session until it times out: %v", err)
		}
	}()

	m, err := mutex.New(s, "/locks/inventory")
	if err != nil {
		log.Fatal(err)
	}
	g, err := m.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer g.Unlock(context.Background())
	// Work under g.Context(); pass g.Token() to what you write.
}
