package integration_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend/zookeeper"
	"github.com/coordkit/coordkit/integration"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// A test of your own code against a real ZooKeeper, with a partition
// injected between your client and the server: the holder must learn that
// its lock may be gone. (Examples cannot be given a *testing.T, so this one
// shows the test as a function value: compiled, not run.)
func ExampleStartZooKeeper() {
	testHolderLearnsOfPartition := func(t *testing.T) {
		zk := integration.StartZooKeeper(t) // stopped at the end of the test
		proxy := integration.NewZooKeeperProxy(t, zk.Addr(0))
		drv, err := zookeeper.New([]string{proxy.Addr()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { drv.Close() })
		ctx := context.Background()
		s, err := session.New(ctx, drv, session.WithTTL(4*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		m, _ := mutex.New(s, "/locks/job")
		g, err := m.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		proxy.Blackhole() // nothing gets through, either way
		select {
		case <-g.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the holder never learnt of the partition")
		}
		if !errors.Is(g.Err(), session.ErrSuspended) {
			t.Fatalf("Err %v, want ErrSuspended", g.Err())
		}
		proxy.Unblackhole()
	}
	_ = testHolderLearnsOfPartition
}
