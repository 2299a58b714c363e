package integration_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordkit/coordkit/integration"
)

// TestProxyBlackholeReplies: with replies blackholed a request reaches the
// server and is applied (another client sees its effect) while its caller
// hears nothing; Unblackhole resets the connection, the call fails, and the
// client carries on with the same session on a new connection.
func TestProxyBlackholeReplies(t *testing.T) {
	t.Run("zookeeper", func(t *testing.T) {
		c := sharedZK.Get(t)
		p := integration.NewZooKeeperProxy(t, c.Addr(0))
		conn, ev := connectZK(t, []string{p.Addr()}, 10*time.Second)
		direct, _ := connectZK(t, c.Addrs(), 10*time.Second)
		sid := conn.SessionID()
		path := uniquePath(t)
		_, _, created, err := direct.ExistsW(path)
		if err != nil {
			t.Fatal(err)
		}
		m := ev.mark()
		err = proxyLoseReply(t, p, func() error {
			_, err := conn.Create(path, []byte("v"), zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
			return err
		}, func() {
			if e := receive(t, "the create on the server", created, 20*time.Second); e.Type != zk.EventNodeCreated {
				t.Fatalf("watch on %s: %v", path, e)
			}
		})
		if err == nil {
			t.Fatal("Create succeeded although its reply was lost")
		}
		ev.wait(t, zk.StateHasSession, m, 20*time.Second)
		if got := conn.SessionID(); got != sid {
			t.Fatalf("session changed from 0x%x to 0x%x", sid, got)
		}
		retryZK(t, "read the node after the reset", func() error {
			_, st, err := conn.Get(path)
			if err == nil && st.EphemeralOwner != sid {
				t.Fatalf("%s owned by 0x%x, want 0x%x", path, st.EphemeralOwner, sid)
			}
			return err
		})
		if err := conn.Delete(path, -1); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("etcd", func(t *testing.T) {
		e := sharedEtcd.Get(t)
		p := integration.NewProxy(t, e.Endpoint(0))
		cli := connectEtcd(t, p.Addr())
		direct := connectEtcd(t, e.Endpoints()...)
		key := uniquePath(t)
		t.Cleanup(func() {
			if _, err := direct.Delete(context.Background(), key); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		retryEtcd(t, "get through the proxy", func(ctx context.Context) error {
			_, err := cli.Get(ctx, key)
			return err
		})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		put := direct.Watch(ctx, key, clientv3.WithCreatedNotify())
		if wr := receive(t, "the watch to start", put, 20*time.Second); !wr.Created {
			t.Fatalf("first watch response %+v, want Created", wr)
		}
		// The outcome is an error, or success if the client retried the
		// put on its new connection.
		_ = proxyLoseReply(t, p, func() error {
			_, err := cli.Put(ctx, key, "v")
			return err
		}, func() {
			if wr := receive(t, "the put on the server", put, 20*time.Second); wr.Err() != nil || len(wr.Events) != 1 {
				t.Fatalf("watch on %s: %+v, %v", key, wr.Events, wr.Err())
			}
		})
		retryEtcd(t, "get through the proxy after the reset", func(ctx context.Context) error {
			resp, err := cli.Get(ctx, key)
			if err == nil && (len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v") {
				t.Fatalf("Get %s = %v", key, resp.Kvs)
			}
			return err
		})
	})
}

// proxyLoseReply blackholes p's replies, runs call on a goroutine, waits
// (applied) until the server has applied its request and then until the
// proxy has dropped server bytes, checks that call has not returned, and
// ends the blackhole, which resets the connection. It returns call's error
// and checks that the client connected again.
func proxyLoseReply(t *testing.T, p *integration.Proxy, call func() error, applied func()) error {
	t.Helper()
	accepted := p.Accepted()
	_, dropped := p.Dropped()
	p.BlackholeReplies()
	done := make(chan error, 1)
	go func() { done <- call() }()
	applied()
	// A server may send other clients' notifications before the reply:
	// wait until the reply is dropped.
	mxAwait(t, "the proxy to drop the reply", func() bool { _, n := p.Dropped(); return n > dropped })
	select {
	case err := <-done:
		t.Fatalf("the call returned (%v) although its reply was blackholed", err)
	default:
	}
	p.Unblackhole()
	err := receive(t, "the call after Unblackhole reset its connection", done, 20*time.Second)
	mxAwait(t, "the client to connect again", func() bool { return p.Accepted() > accepted })
	return err
}
