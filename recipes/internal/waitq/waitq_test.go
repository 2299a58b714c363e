package waitq_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes/internal/waitq"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFormatSeq(t *testing.T) {
	for seq, want := range map[int64]string{0: "0000000000", 42: "0000000042", 2147483647: "2147483647", -1: "-000000001", -2147483648: "-2147483648"} {
		if got := waitq.FormatSeq(seq); got != want {
			t.Errorf("FormatSeq(%d) = %q, want %q", seq, got, want)
		}
	}
}

func TestNamed(t *testing.T) {
	zk := backend.Node{Name: "_c_6f1c1c9e-4c55-4c3e-9a39-1f6f0d2f9d1a-lock-0000000007", Seq: 7, Sequential: true}
	wrapped := backend.Node{Name: "_c_6f1c1c9e-4c55-4c3e-9a39-1f6f0d2f9d1a-lock--2147483648", Seq: -2147483648, Sequential: true}
	etcd := backend.Node{Name: "_c_6f1c1c9e-4c55-4c3e-9a39-1f6f0d2f9d1a-lock-694d7a5b1c2e0a01-3", Seq: 7, Sequential: true}
	if !waitq.Named(zk, "lock-") || !waitq.Named(wrapped, "lock-") {
		t.Error("ZooKeeper names not recognised as carrying the sequence")
	}
	if waitq.Named(etcd, "lock-") {
		t.Error("an etcd name taken as carrying the sequence")
	}
}

func TestNamedMember(t *testing.T) {
	m := waitq.NamedMember("lock-")
	for _, c := range []struct {
		n     backend.Node
		named bool
		want  bool
	}{
		{backend.Node{Name: "_c_x-lock-0000000003", Seq: 3, Sequential: true}, true, true},
		{backend.Node{Name: "lock-0000000003", Seq: 3, Sequential: true}, true, true}, // unprotected Curator
		{backend.Node{Name: "_c_x-lock--2147483648", Seq: -2147483648, Sequential: true}, true, true},
		{backend.Node{Name: "config"}, true, false},
		{backend.Node{Name: "lock-config"}, true, false},
		{backend.Node{Name: "job-0000000004", Seq: 4, Sequential: true}, true, false},
		{backend.Node{Name: "lock-x-0000000004", Seq: 4, Sequential: true}, true, false},
		{backend.Node{Name: "694d7a5b1c2e0a01", Seq: 99, Sequential: true}, false, true}, // etcd Mutex key
		{backend.Node{Name: "config", Seq: 98, Sequential: true}, false, true},
	} {
		if got := m(c.n, c.named); got != c.want {
			t.Errorf("member(%q, named %v) = %v, want %v", c.n.Name, c.named, got, c.want)
		}
	}
}

func TestPredecessor(t *testing.T) {
	q := make([]backend.Node, 5)
	mutex, sem := waitq.Predecessor(1), waitq.Predecessor(2)
	for ours, want := range []int{-1, 0, 1, 2, 3} {
		if got := mutex(q, ours); got != want {
			t.Errorf("mutex decide(%d) = %d, want %d", ours, got, want)
		}
	}
	for ours, want := range []int{-1, -1, 0, 1, 2} {
		if got := sem(q, ours); got != want {
			t.Errorf("2-permit decide(%d) = %d, want %d", ours, got, want)
		}
	}
}

// TestDeleteQueueNode: Delete removes the queue node it was given even if
// its data changed since, finds a gone node no error, and touches no other
// node of the queue, also one created after ours was deleted.
func TestDeleteQueueNode(t *testing.T) {
	drv := memory.New()
	defer drv.Close()
	ctx := context.Background()
	c, err := drv.Open(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	queued := backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true}
	n, err := c.Create(ctx, "/q/lock-", nil, queued)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Set(ctx, n.Path, []byte("x"), backend.AnyVersion); err != nil {
		t.Fatal(err)
	}
	if err := waitq.Delete(ctx, c, n); err != nil {
		t.Fatalf("delete after a data change: %v", err)
	}
	if _, err := c.Get(ctx, n.Path); err == nil {
		t.Fatal("node still there")
	}
	later, err := c.Create(ctx, "/q/lock-", nil, queued)
	if err != nil {
		t.Fatal(err)
	}
	if later.Path == n.Path {
		t.Fatalf("a queue node took the path of a deleted one: %s", later.Path)
	}
	if err := waitq.Delete(ctx, c, n); err != nil {
		t.Fatalf("delete of a gone node: %v", err)
	}
	if _, err := c.Get(ctx, later.Path); err != nil {
		t.Fatalf("the later queue node was deleted: %v", err)
	}
	c.Close(ctx)
}
