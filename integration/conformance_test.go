package integration_test

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/backendtest"
	etcddrv "github.com/coordkit/coordkit/backend/etcd"
	zkdrv "github.com/coordkit/coordkit/backend/zookeeper"
)

// openZooKeeperDriver returns a ZooKeeper driver on servers, closed when the
// test ends.
func openZooKeeperDriver(t testing.TB, servers []string, opts ...zkdrv.Option) backend.Driver {
	t.Helper()
	d, err := zkdrv.New(servers, opts...)
	if err != nil {
		t.Fatalf("zookeeper.New: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// openEtcdDriver returns an etcd driver that owns its client, closed when the
// test ends.
func openEtcdDriver(t testing.TB, endpoints []string, opts ...etcddrv.Option) backend.Driver {
	t.Helper()
	d, err := etcddrv.Dial(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()}, opts...)
	if err != nil {
		t.Fatalf("etcd.Dial: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestConformance runs the backend conformance suite on every real server
// setup: ZooKeeper standalone and a 3-member ensemble, etcd single member and
// a 3-member cluster. (The memory driver runs it in the root module.)
func TestConformance(t *testing.T) {
	t.Run("zookeeper-standalone", func(t *testing.T) {
		addrs := sharedZK.Get(t).Addrs()
		backendtest.Run(t, func(t *testing.T) backend.Driver { return openZooKeeperDriver(t, addrs) })
	})
	t.Run("zookeeper-ensemble", func(t *testing.T) {
		addrs := sharedZKEnsemble.Get(t).Addrs()
		backendtest.Run(t, func(t *testing.T) backend.Driver { return openZooKeeperDriver(t, addrs) })
	})
	t.Run("etcd-single", func(t *testing.T) {
		eps := sharedEtcd.Get(t).Endpoints()
		backendtest.Run(t, func(t *testing.T) backend.Driver { return openEtcdDriver(t, eps) })
	})
	t.Run("etcd-cluster3", func(t *testing.T) {
		eps := sharedEtcd3.Get(t).Endpoints()
		backendtest.Run(t, func(t *testing.T) backend.Driver { return openEtcdDriver(t, eps) })
	})
}
