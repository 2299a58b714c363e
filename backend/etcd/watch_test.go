package etcd

import (
	"context"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordkit/coordkit/backend"
)

// TestReadAtTheWatchStartSetsItsFloor: when a write lands between the read
// and the watch's start W, read repeats the read at W exactly. Such a read's
// header carries the store's current revision, which may be past W: the
// floor must be W, or the watch would drop the events between W and the
// current revision, the change it is there to report among them.
func TestReadAtTheWatchStartSetsItsFloor(t *testing.T) {
	const read, start, current = 10, 11, 15
	created := make(chan int64, 1)
	floor := make(chan int64, 1)
	created <- start
	w := &openingWatch{
		Watch:   backend.NewWatch(make(chan backend.WatchEvent, 1), func() {}),
		created: created,
		floor:   floor,
		failed:  make(chan error),
		setup:   func() bool { return true },
	}
	gets := 0
	get := func(opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
		gets++
		rev := int64(read)
		if gets > 1 {
			rev = current // a read at a past revision reports the current one
		}
		return &clientv3.GetResponse{Header: &etcdserverpb.ResponseHeader{Revision: rev}}, nil
	}
	if _, err := w.read(context.Background(), get); err != nil {
		t.Fatal(err)
	}
	if gets != 2 {
		t.Fatalf("%d reads, want 2 (the second at the watch's start)", gets)
	}
	if got := <-floor; got != start {
		t.Fatalf("floor %d, want the watch's start %d (the store's revision was %d)", got, start, current)
	}
}
