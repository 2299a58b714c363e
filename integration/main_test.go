package integration_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordkit/coordkit/integration"
)

// Servers shared by the tests of this package (start-up costs seconds on a
// 2-core machine). Tests that stop or kill members start clusters of their
// own; tests that inject faults through a proxy may use these.
var (
	sharedZK         = integration.ShareZooKeeper()
	sharedZKEnsemble = integration.ShareZooKeeper(integration.WithMembers(3))
	sharedEtcd       = integration.ShareEtcd()
	sharedEtcd3      = integration.ShareEtcd(integration.WithMembers(3))
)

// TestMain runs the tests, then checks that they left nothing on the shared
// servers (no znodes but empty containers the server has yet to reap, no
// etcd keys, no leases), then stops the servers and checks for leaked
// goroutines.
func TestMain(m *testing.M) {
	integration.VerifyTestMain(leftoverCheck{m}, sharedZK, sharedZKEnsemble, sharedEtcd, sharedEtcd3)
}

type leftoverCheck struct{ m *testing.M }

func (l leftoverCheck) Run() int {
	code := l.m.Run()
	var problems []string
	for _, s := range []*integration.Shared[*integration.ZooKeeperCluster]{sharedZK, sharedZKEnsemble} {
		if c, ok := s.Started(); ok {
			problems = append(problems, zooKeeperLeftovers(c.Addrs())...)
		}
	}
	for _, s := range []*integration.Shared[*integration.EtcdCluster]{sharedEtcd, sharedEtcd3} {
		if c, ok := s.Started(); ok {
			problems = append(problems, etcdLeftovers(c.Endpoints())...)
		}
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: the tests left state behind on the shared servers:\n  %s\n", strings.Join(problems, "\n  "))
		if code == 0 {
			code = 1
		}
	}
	return code
}

// zooKeeperLeftovers lists every znode outside /zookeeper that has data, an
// owner, or a non-empty subtree of such nodes. Empty persistent nodes with
// no data are the container parents the server reaps on its own schedule.
func zooKeeperLeftovers(addrs []string) []string {
	conn, _, err := zk.Connect(addrs, 10*time.Second, zk.WithLogger(quietLogger{}))
	if err != nil {
		return []string{fmt.Sprintf("zookeeper %v: connect: %v", addrs, err)}
	}
	defer conn.Close()
	var out []string
	var walk func(path string)
	walk = func(path string) {
		children, _, err := conn.Children(path)
		if err != nil {
			if err != zk.ErrNoNode {
				out = append(out, fmt.Sprintf("zookeeper %s: %v", path, err))
			}
			return
		}
		for _, c := range children {
			p := strings.TrimSuffix(path, "/") + "/" + c
			if p == "/zookeeper" {
				continue
			}
			data, st, err := conn.Get(p)
			if err == zk.ErrNoNode {
				continue
			}
			if err != nil {
				out = append(out, fmt.Sprintf("zookeeper %s: %v", p, err))
				continue
			}
			if len(data) > 0 || st.EphemeralOwner != 0 {
				out = append(out, fmt.Sprintf("zookeeper %s (data %q, owner %x)", p, data, st.EphemeralOwner))
			}
			walk(p)
		}
	}
	walk("/")
	return out
}

// etcdLeftovers lists every key and lease left on an etcd cluster.
func etcdLeftovers(endpoints []string) []string {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return []string{fmt.Sprintf("etcd %v: %v", endpoints, err)}
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []string
	resp, err := cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithKeysOnly())
	if err != nil {
		return append(out, fmt.Sprintf("etcd %v: get: %v", endpoints, err))
	}
	for _, kv := range resp.Kvs {
		out = append(out, fmt.Sprintf("etcd key %q (lease %x)", kv.Key, kv.Lease))
	}
	leases, err := cli.Leases(ctx)
	if err != nil {
		return append(out, fmt.Sprintf("etcd %v: leases: %v", endpoints, err))
	}
	for _, l := range leases.Leases {
		out = append(out, fmt.Sprintf("etcd lease %x", l.ID))
	}
	return out
}
