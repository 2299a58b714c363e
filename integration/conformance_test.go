package integration_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/backendtest"
	etcddrv "github.com/coordkit/coordkit/backend/etcd"
	zkdrv "github.com/coordkit/coordkit/backend/zookeeper"
	"github.com/coordkit/coordkit/integration"
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

// TestFaultConformance runs the backend fault conformance suite on a real
// server, ZooKeeper standalone and etcd single member, each session under
// test behind a proxy of its own (see proxyFaults). (The memory driver runs
// it in the root module.)
func TestFaultConformance(t *testing.T) {
	t.Run("zookeeper-standalone", func(t *testing.T) {
		addrs := sharedZK.Get(t).Addrs()
		backendtest.RunFaults(t, func(t *testing.T) (backend.Driver, backendtest.Faults) {
			return openZooKeeperDriver(t, addrs), &proxyFaults{
				t:        t,
				newProxy: func(t *testing.T) *integration.Proxy { return integration.NewZooKeeperProxy(t, addrs[0]) },
				driver: func(t *testing.T, p *integration.Proxy) backend.Driver {
					return openZooKeeperDriver(t, []string{p.Addr()})
				},
				// A blackhole alone is noticed only when a read times out
				// (2/3 of the session timeout); reset too, the client
				// notices at once and redials into the blackhole.
				cut: func(p *integration.Proxy) { p.Blackhole(); p.DropConnections() },
				expire: func(ctx context.Context, p *integration.Proxy, id uint64) error {
					return p.ExpireZooKeeperSession(ctx, int64(id))
				},
			}
		})
	})
	t.Run("etcd-single", func(t *testing.T) {
		eps := sharedEtcd.Get(t).Endpoints()
		raw := connectEtcd(t, eps...)
		backendtest.RunFaultsWithOptions(t, func(t *testing.T) (backend.Driver, backendtest.Faults) {
			return openEtcdDriver(t, eps), &proxyFaults{
				t:        t,
				newProxy: func(t *testing.T) *integration.Proxy { return integration.NewProxy(t, eps[0]) },
				driver:   func(t *testing.T, p *integration.Proxy) backend.Driver { return openEtcdDriverVia(t, p, nil) },
				// The driver notices when keepalive replies stop (after
				// about half the TTL), not when the connection breaks:
				// a blackhole suffices, and leaves gRPC's connection to
				// be reset at the heal, then redialled at once.
				cut: (*integration.Proxy).Blackhole,
				expire: func(ctx context.Context, _ *integration.Proxy, id uint64) error {
					_, err := raw.Revoke(ctx, clientv3.LeaseID(id))
					return err
				},
			}
		}, backendtest.Options{TTL: etcdFaultTTL})
	})
}

// etcdFaultTTL is the lease TTL of the etcd fault suite. The client notices
// a cut after half of it (the driver's default suspend-after) and must then
// redial and have a keepalive answered in the other half (about 500ms, the
// keepalive tick, on an idle machine), as in
// TestSessionPartitionShorterThanTimeout.
const etcdFaultTTL = 6 * time.Second

// proxyFaults is backendtest.Faults on a real server: every session it
// opens has a driver (client) and an in-process proxy of its own, so a cut
// reaches that session only. Reconnect ends the proxy's blackhole; Expire
// ends the session on the server from another connection.
type proxyFaults struct {
	t        *testing.T
	newProxy func(t *testing.T) *integration.Proxy
	// driver returns a driver whose connections go through p.
	driver func(t *testing.T, p *integration.Proxy) backend.Driver
	// cut cuts p's clients off from the server, until p.Unblackhole.
	cut func(p *integration.Proxy)
	// expire ends the session id (Conn.SessionID, parsed) on the server.
	expire func(ctx context.Context, p *integration.Proxy, id uint64) error

	mu      sync.Mutex
	proxies map[string]*integration.Proxy // by SessionID
}

func (f *proxyFaults) Open(ctx context.Context, ttl time.Duration) (backend.Conn, error) {
	p := f.newProxy(f.t)
	c, err := f.driver(f.t, p).Open(ctx, ttl)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.proxies == nil {
		f.proxies = map[string]*integration.Proxy{}
	}
	f.proxies[c.SessionID()] = p
	return c, nil
}

func (f *proxyFaults) proxy(t testing.TB, c backend.Conn) *integration.Proxy {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.proxies[c.SessionID()]
	if p == nil {
		t.Fatalf("session %s was not opened by these Faults", c.SessionID())
	}
	return p
}

func (f *proxyFaults) Disconnect(t testing.TB, c backend.Conn) {
	t.Helper()
	f.cut(f.proxy(t, c))
}

func (f *proxyFaults) Reconnect(t testing.TB, c backend.Conn) {
	t.Helper()
	f.proxy(t, c).Unblackhole()
}

func (f *proxyFaults) Expire(t testing.TB, c backend.Conn) {
	t.Helper()
	id, err := strconv.ParseUint(c.SessionID(), 16, 64)
	if err != nil {
		t.Fatalf("SessionID %q: %v", c.SessionID(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.expire(ctx, f.proxy(t, c), id); err != nil {
		t.Fatalf("expire session %s on the server: %v", c.SessionID(), err)
	}
}
