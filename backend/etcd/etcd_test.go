package etcd

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestChildName(t *testing.T) {
	for _, tc := range []struct {
		prefix, key, name string
		ok                bool
	}{
		{"/a/", "/a/b", "b", true},
		{"/a/", "/ab", "", false},
		{"/a/", "/ab/c", "", false},
		{"/a/", "/a/b/c", "", false},
		{"/a/", "/a/", "", false},
		{"/a/", "/a", "", false},
		{"/", "/x", "x", true},
		{"/", "/x/y", "", false},
	} {
		name, ok := childName(tc.prefix, tc.key)
		if name != tc.name || ok != tc.ok {
			t.Errorf("childName(%q, %q) = %q, %v", tc.prefix, tc.key, name, ok)
		}
	}
	if p := childPrefix("/"); p != "/" {
		t.Errorf("childPrefix(/) = %q", p)
	}
	if p := joinPath("/", "a"); p != "/a" {
		t.Errorf("joinPath = %q", p)
	}
	if p := joinPath("/a", "b"); p != "/a/b" {
		t.Errorf("joinPath = %q", p)
	}
}

func TestNodes(t *testing.T) {
	kvs := []*mvccpb.KeyValue{
		{Key: []byte("/q/b"), CreateRevision: 5, ModRevision: 9, Lease: 0x2a, Value: []byte("v")},
		{Key: []byte("/q/b/deep"), CreateRevision: 6},
		{Key: []byte("/q/a"), CreateRevision: 7},
	}
	n := nodeOf(kvs[0])
	want := backend.Node{Path: "/q/b", Name: "b", Data: []byte("v"), Seq: 5, Sequential: true, Token: 5, Version: 9, Owner: "2a"}
	if fmt.Sprint(n) != fmt.Sprint(want) {
		t.Errorf("nodeOf = %+v, want %+v", n, want)
	}
	kids := childrenOf("/q/", kvs)
	if len(kids) != 2 || kids[0].Name != "b" || kids[1].Name != "a" || kids[0].Token != 5 || kids[0].Data != nil || !kids[1].Sequential || kids[1].Seq != 7 {
		t.Errorf("childrenOf = %+v", kids)
	}
}

func TestDefaultSuspendAfter(t *testing.T) {
	for ttl, want := range map[time.Duration]time.Duration{
		time.Second:      900 * time.Millisecond,
		2 * time.Second:  2*time.Second/3 + 800*time.Millisecond,
		5 * time.Second:  2500 * time.Millisecond,
		60 * time.Second: 30 * time.Second,
	} {
		if got := defaultSuspendAfter(ttl); got != want || got >= ttl {
			t.Errorf("defaultSuspendAfter(%v) = %v, want %v", ttl, got, want)
		}
	}
}

func TestIsUnavailable(t *testing.T) {
	for err, want := range map[error]bool{
		nil:                       false,
		errors.New("x"):           false,
		rpctypes.ErrNoLeader:      true,
		rpctypes.ErrTimeout:       true,
		rpctypes.ErrLeaseNotFound: false,
		status.Error(codes.Unavailable, "conn reset"):                   true,
		fmt.Errorf("w: %w", status.Error(codes.Unavailable, "x")):       true,
		fmt.Errorf("w: %w", clientv3.ErrNoAvailableEndpoints):           true,
		status.Error(codes.FailedPrecondition, "etcdserver: compacted"): false,
	} {
		if got := isUnavailable(err); got != want {
			t.Errorf("isUnavailable(%v) = %v", err, got)
		}
	}
}

func TestOptions(t *testing.T) {
	if _, err := New(nil); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("New(nil) = %v", err)
	}
	if _, err := buildOptions([]Option{WithSuspendAfter(-time.Second)}); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("negative suspend-after: %v", err)
	}
	if _, err := buildOptions([]Option{WithSessionPrefix("sessions/")}); !errors.Is(err, coordkit.ErrInvalidPath) {
		t.Errorf("bad prefix: %v", err)
	}
	o, err := buildOptions([]Option{WithLogger(nil), nil})
	if err != nil || o.logger == nil || o.sessionPrefix != DefaultSessionPrefix {
		t.Errorf("defaults: %+v %v", o, err)
	}
}

// TestValidationBeforeNetwork runs every call with bad input on a conn that
// has no client: reaching the network would panic.
func TestValidationBeforeNetwork(t *testing.T) {
	c := &conn{}
	ctx := context.Background()
	big := make([]byte, backend.MaxDataSize+1)
	isPath := func(err error) {
		t.Helper()
		if !errors.Is(err, coordkit.ErrInvalidPath) {
			t.Errorf("err = %v, want ErrInvalidPath", err)
		}
	}
	for _, p := range []string{"", "a", "/", "/a/", "/a//b", "/a/./b", "/zookeeper/x", "/a\x00b"} {
		_, err := c.Create(ctx, p, nil, backend.CreateOptions{})
		isPath(err)
		_, _, err = c.CreateAndList(ctx, p, nil, backend.CreateOptions{Sequential: true})
		isPath(err)
		_, err = c.Get(ctx, p)
		isPath(err)
		_, err = c.Children(ctx, p)
		isPath(err)
		_, err = c.Set(ctx, p, nil, backend.AnyVersion)
		isPath(err)
		isPath(c.Delete(ctx, p, backend.AnyVersion))
		_, err = c.GuardedSet(ctx, []backend.Guard{{Path: p}}, "/ok", nil, backend.AnyVersion)
		isPath(err)
		_, _, _, err = c.Watch(ctx, p)
		isPath(err)
		_, _, err = c.WatchChildren(ctx, p)
		isPath(err)
	}
	if _, err := c.Create(ctx, "/a", big, backend.CreateOptions{}); !errors.Is(err, backend.ErrDataTooLarge) {
		t.Errorf("create big: %v", err)
	}
	if _, err := c.Set(ctx, "/a", big, backend.AnyVersion); !errors.Is(err, backend.ErrDataTooLarge) {
		t.Errorf("set big: %v", err)
	}
}

func TestOpenValidation(t *testing.T) {
	d := &Driver{o: options{suspendAfter: 3 * time.Second}}
	ctx := context.Background()
	if _, err := d.Open(ctx, 0); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("ttl 0: %v", err)
	}
	if _, err := d.Open(ctx, 2*time.Second); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("suspend-after >= ttl: %v", err)
	}
	// Shorter than the ttl but with no room for the reply's travel: the
	// lease could expire on the server before the session reports it.
	if _, err := d.Open(ctx, 3200*time.Millisecond); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Errorf("suspend-after above 9/10 of the ttl: %v", err)
	}
	d.closed = true
	if _, err := d.Open(ctx, 5*time.Second); !errors.Is(err, coordkit.ErrClosed) {
		t.Errorf("closed driver: %v", err)
	}
	if d.Name() != "etcd" {
		t.Error(d.Name())
	}
}

func TestJudgeTimeToLive(t *testing.T) {
	ttl := func(n int64) *clientv3.LeaseTimeToLiveResponse { return &clientv3.LeaseTimeToLiveResponse{TTL: n} }
	for _, tc := range []struct {
		name string
		resp *clientv3.LeaseTimeToLiveResponse
		err  error
		want leaseState
	}{
		{"alive", ttl(7), nil, leaseAlive},
		{"under a second left", ttl(0), nil, leaseAlive},
		{"gone", ttl(-1), nil, leaseGone},
		{"not found", nil, rpctypes.ErrLeaseNotFound, leaseGone},
		{"not found, wrapped", nil, fmt.Errorf("x: %w", rpctypes.ErrLeaseNotFound), leaseGone},
		{"unavailable", nil, status.Error(codes.Unavailable, "conn reset"), leaseUnknown},
		{"no leader", nil, rpctypes.ErrNoLeader, leaseUnknown},
		{"timed out", nil, context.DeadlineExceeded, leaseUnknown},
		{"no reply", nil, nil, leaseUnknown},
	} {
		if got := judgeTimeToLive(tc.resp, tc.err); got != tc.want {
			t.Errorf("%s: judgeTimeToLive = %v, want %v", tc.name, got, tc.want)
		}
	}
}
