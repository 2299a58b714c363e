package etcd

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordkit/coordkit/backend"
)

// fakeStore is an in-memory etcd key space with leases: enough of the KV
// and Lease APIs for a Conn (Txn with compares on create, mod, version and
// lease; put, range, delete-range; grant, revoke). It implements
// pb.KVClient; the methods a Conn does not use panic (the embedded nil).
type fakeStore struct {
	pb.KVClient

	mu     sync.Mutex
	rev    int64
	kvs    map[string]*mvccpb.KeyValue
	leases map[clientv3.LeaseID]int64 // id → TTL
	nextID clientv3.LeaseID
	// loseDelete, if set, says which DeleteRange requests are applied and
	// then answered Unavailable (the reply was lost).
	loseDelete func(key string) bool
}

func newFakeStore() *fakeStore {
	return &fakeStore{rev: 1, kvs: map[string]*mvccpb.KeyValue{}, leases: map[clientv3.LeaseID]int64{}, nextID: 0x1000}
}

func (s *fakeStore) header() *pb.ResponseHeader { return &pb.ResponseHeader{Revision: s.rev} }

// get returns a copy of key's KeyValue, or nil.
func (s *fakeStore) get(key string) *mvccpb.KeyValue {
	s.mu.Lock()
	defer s.mu.Unlock()
	if kv := s.kvs[key]; kv != nil {
		return copyKV(kv)
	}
	return nil
}

func copyKV(kv *mvccpb.KeyValue) *mvccpb.KeyValue {
	return &mvccpb.KeyValue{Key: append([]byte(nil), kv.Key...), Value: append([]byte(nil), kv.Value...),
		CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease}
}

func (s *fakeStore) compareLocked(c *pb.Compare) bool {
	kv := s.kvs[string(c.Key)]
	if kv == nil {
		if c.Target == pb.Compare_VALUE {
			return false // as etcd: a missing key has no value to compare
		}
		kv = &mvccpb.KeyValue{}
	}
	var have, want int64
	switch c.Target {
	case pb.Compare_CREATE:
		have, want = kv.CreateRevision, c.GetCreateRevision()
	case pb.Compare_MOD:
		have, want = kv.ModRevision, c.GetModRevision()
	case pb.Compare_VERSION:
		have, want = kv.Version, c.GetVersion()
	case pb.Compare_LEASE:
		have, want = kv.Lease, c.GetLease()
	case pb.Compare_VALUE:
		have = int64(bytes.Compare(kv.Value, c.GetValue()))
	}
	switch c.Result {
	case pb.Compare_EQUAL:
		return have == want
	case pb.Compare_GREATER:
		return have > want
	case pb.Compare_LESS:
		return have < want
	default:
		return have != want
	}
}

func (s *fakeStore) putLocked(r *pb.PutRequest, rev int64) (*pb.PutResponse, error) {
	if r.Lease != 0 {
		if _, ok := s.leases[clientv3.LeaseID(r.Lease)]; !ok {
			return nil, rpctypes.ErrGRPCLeaseNotFound
		}
	}
	kv := s.kvs[string(r.Key)]
	if kv == nil {
		kv = &mvccpb.KeyValue{Key: append([]byte(nil), r.Key...), CreateRevision: rev}
		s.kvs[string(r.Key)] = kv
	}
	kv.ModRevision, kv.Version = rev, kv.Version+1
	if !r.IgnoreValue {
		kv.Value = append([]byte(nil), r.Value...)
	}
	if !r.IgnoreLease {
		kv.Lease = r.Lease
	}
	return &pb.PutResponse{Header: &pb.ResponseHeader{Revision: rev}}, nil
}

func (s *fakeStore) keysLocked(key, end []byte) []string {
	if len(end) == 0 {
		if s.kvs[string(key)] != nil {
			return []string{string(key)}
		}
		return nil
	}
	var out []string
	for k := range s.kvs {
		if k >= string(key) && k < string(end) {
			out = append(out, k)
		}
	}
	return out
}

func (s *fakeStore) rangeLocked(r *pb.RangeRequest) *pb.RangeResponse {
	keys := s.keysLocked(r.Key, r.RangeEnd)
	kvs := make([]*mvccpb.KeyValue, 0, len(keys))
	for _, k := range keys {
		cp := copyKV(s.kvs[k])
		if r.KeysOnly {
			cp.Value = nil
		}
		kvs = append(kvs, cp)
	}
	sort.Slice(kvs, func(i, j int) bool {
		if r.SortTarget == pb.RangeRequest_CREATE {
			return kvs[i].CreateRevision < kvs[j].CreateRevision
		}
		return string(kvs[i].Key) < string(kvs[j].Key)
	})
	return &pb.RangeResponse{Header: s.header(), Kvs: kvs, Count: int64(len(kvs))}
}

func (s *fakeStore) deleteLocked(r *pb.DeleteRangeRequest) int64 {
	keys := s.keysLocked(r.Key, r.RangeEnd)
	for _, k := range keys {
		delete(s.kvs, k)
	}
	return int64(len(keys))
}

func (s *fakeStore) Range(_ context.Context, r *pb.RangeRequest, _ ...grpc.CallOption) (*pb.RangeResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rangeLocked(r), nil
}

func (s *fakeStore) Put(_ context.Context, r *pb.PutRequest, _ ...grpc.CallOption) (*pb.PutResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp, err := s.putLocked(r, s.rev+1)
	if err == nil {
		s.rev++
	}
	return resp, err
}

func (s *fakeStore) DeleteRange(_ context.Context, r *pb.DeleteRangeRequest, _ ...grpc.CallOption) (*pb.DeleteRangeResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.deleteLocked(r)
	if n > 0 {
		s.rev++
	}
	if s.loseDelete != nil && s.loseDelete(string(r.Key)) {
		return nil, errLost
	}
	return &pb.DeleteRangeResponse{Header: s.header(), Deleted: n}, nil
}

func (s *fakeStore) Txn(_ context.Context, r *pb.TxnRequest, _ ...grpc.CallOption) (*pb.TxnResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := true
	for _, c := range r.Compare {
		if !s.compareLocked(c) {
			ok = false
			break
		}
	}
	ops := r.Failure
	if ok {
		ops = r.Success
	}
	rev, wrote := s.rev+1, false
	resp := &pb.TxnResponse{Succeeded: ok}
	for _, op := range ops {
		switch req := op.Request.(type) {
		case *pb.RequestOp_RequestPut:
			put, err := s.putLocked(req.RequestPut, rev)
			if err != nil {
				return nil, err // the fake's puts come first: nothing to undo
			}
			wrote = true
			resp.Responses = append(resp.Responses, &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: put}})
		case *pb.RequestOp_RequestRange:
			resp.Responses = append(resp.Responses, &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: s.rangeLocked(req.RequestRange)}})
		case *pb.RequestOp_RequestDeleteRange:
			n := s.deleteLocked(req.RequestDeleteRange)
			wrote = wrote || n > 0
			resp.Responses = append(resp.Responses, &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{
				ResponseDeleteRange: &pb.DeleteRangeResponse{Deleted: n}}})
		}
	}
	if wrote {
		s.rev = rev
	}
	resp.Header = s.header()
	return resp, nil
}

// fakeLease is the client's Lease API on the store. Keepalives answer once;
// their channel closes when their context ends, as the client's do.
type fakeLease struct{ s *fakeStore }

func (l fakeLease) Grant(_ context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	l.s.nextID++
	l.s.leases[l.s.nextID] = ttl
	return &clientv3.LeaseGrantResponse{ResponseHeader: l.s.header(), ID: l.s.nextID, TTL: ttl}, nil
}

func (l fakeLease) Revoke(_ context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if _, ok := l.s.leases[id]; !ok {
		return nil, rpctypes.ErrLeaseNotFound
	}
	delete(l.s.leases, id)
	for k, kv := range l.s.kvs {
		if kv.Lease == int64(id) {
			delete(l.s.kvs, k)
		}
	}
	l.s.rev++
	return &clientv3.LeaseRevokeResponse{Header: l.s.header()}, nil
}

func (l fakeLease) TimeToLive(_ context.Context, id clientv3.LeaseID, _ ...clientv3.LeaseOption) (*clientv3.LeaseTimeToLiveResponse, error) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	ttl, ok := l.s.leases[id]
	if !ok {
		ttl = -1
	}
	return &clientv3.LeaseTimeToLiveResponse{ResponseHeader: l.s.header(), ID: id, TTL: ttl, GrantedTTL: ttl}, nil
}

func (l fakeLease) Leases(context.Context) (*clientv3.LeaseLeasesResponse, error) {
	return &clientv3.LeaseLeasesResponse{}, nil
}

func (l fakeLease) KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	r, err := l.KeepAliveOnce(ctx, id)
	if err != nil {
		return nil, err
	}
	ch := make(chan *clientv3.LeaseKeepAliveResponse, 1)
	ch <- r
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch, nil
}

func (l fakeLease) KeepAliveOnce(_ context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	ttl, ok := l.s.leases[id]
	if !ok {
		return nil, rpctypes.ErrLeaseNotFound
	}
	return &clientv3.LeaseKeepAliveResponse{ResponseHeader: l.s.header(), ID: id, TTL: ttl}, nil
}

func (fakeLease) Close() error { return nil }

// fakeWatcher's watches report nothing; their channel closes when their
// context ends.
type fakeWatcher struct{}

func (fakeWatcher) Watch(ctx context.Context, _ string, _ ...clientv3.OpOption) clientv3.WatchChan {
	ch := make(chan clientv3.WatchResponse)
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch
}

func (fakeWatcher) RequestProgress(context.Context) error { return nil }
func (fakeWatcher) Close() error                          { return nil }

// txnFault is what faultKV does with one Txn.
type txnFault int

const (
	txnPass           txnFault = iota
	txnApplyLose               // apply it, then answer Unavailable (the reply was lost)
	txnLose                    // answer Unavailable without applying it
	txnApplyHang               // apply it, then answer only when the caller's ctx ends
	txnBlockedLose             // wait on faultKV.gate, then answer Unavailable without applying it
	txnRefuse                  // answer "permission denied" without applying it
	txnLoseStash               // answer Unavailable without applying it, and keep it in faultKV.stash
	txnPassApplyStash          // apply it, then apply faultKV.stash (a late create lands right behind it)
)

// faultKV is the Driver's KV stub (see commit) in front of the store; fault
// decides what happens to each Txn.
type faultKV struct {
	*fakeStore

	mu    sync.Mutex
	fault func(r *pb.TxnRequest) txnFault
	gate  chan struct{}
	seen  map[txnFault]int
	stash *pb.TxnRequest
}

var errLost = status.Error(codes.Unavailable, "faultKV: connection reset (reply lost)")

func (f *faultKV) setFault(fn func(r *pb.TxnRequest) txnFault) {
	f.mu.Lock()
	f.fault = fn
	f.mu.Unlock()
}

func (f *faultKV) count(k txnFault) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[k]
}

func (f *faultKV) Txn(ctx context.Context, r *pb.TxnRequest, opts ...grpc.CallOption) (*pb.TxnResponse, error) {
	f.mu.Lock()
	k := txnPass
	if f.fault != nil {
		k = f.fault(r)
	}
	if f.seen == nil {
		f.seen = map[txnFault]int{}
	}
	f.seen[k]++
	gate := f.gate
	f.mu.Unlock()
	switch k {
	case txnLose:
		return nil, errLost
	case txnRefuse:
		return nil, rpctypes.ErrGRPCPermissionDenied
	case txnLoseStash:
		f.mu.Lock()
		f.stash = r
		f.mu.Unlock()
		return nil, errLost
	case txnPassApplyStash:
		resp, err := f.fakeStore.Txn(ctx, r, opts...)
		f.mu.Lock()
		late := f.stash
		f.stash = nil
		f.mu.Unlock()
		if late != nil {
			if _, lerr := f.fakeStore.Txn(ctx, late, opts...); lerr != nil {
				panic(lerr)
			}
		}
		return resp, err
	case txnBlockedLose:
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, errLost
	}
	resp, err := f.fakeStore.Txn(ctx, r, opts...)
	switch k {
	case txnApplyLose:
		return nil, errLost
	case txnApplyHang:
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return resp, err
}

// isCreate tells the create Txns (a put in the Then branch) from the
// others.
func isCreate(r *pb.TxnRequest) bool {
	return len(r.Success) > 0 && r.Success[0].GetRequestPut() != nil
}

// isOrphanDelete tells the Txns of deleteOrphan (a compare of the lease).
func isOrphanDelete(r *pb.TxnRequest) bool {
	return len(r.Compare) == 1 && r.Compare[0].Target == pb.Compare_LEASE
}

// fakeEnv is a Driver on a fake client over the store, its Txns through
// faultKV.
type fakeEnv struct {
	store *fakeStore
	kv    *faultKV
	cli   *clientv3.Client
	d     *Driver
}

func newFakeEnv(t *testing.T) *fakeEnv {
	t.Helper()
	s := newFakeStore()
	cli := clientv3.NewCtxClient(context.Background())
	cli.KV = clientv3.NewKVFromKVClient(s, cli)
	cli.Lease = fakeLease{s}
	cli.Watcher = fakeWatcher{}
	d, err := New(cli, WithLogger(zaptest.NewLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	e := &fakeEnv{store: s, kv: &faultKV{fakeStore: s}, cli: cli, d: d}
	d.kv = e.kv
	d.lateApplyWindow = 20 * time.Millisecond
	t.Cleanup(func() { e.close(t) })
	return e
}

func (e *fakeEnv) open(t *testing.T) *conn {
	t.Helper()
	bc, err := e.d.Open(context.Background(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return bc.(*conn)
}

// close closes the driver (and so its Conns) and the client, and checks
// that no goroutine is left. It runs in the test's cleanup.
func (e *fakeEnv) close(t *testing.T) {
	t.Helper()
	if err := e.d.Close(); err != nil {
		t.Errorf("driver close: %v", err)
	}
	e.cli.Close()
	goleak.VerifyNone(t)
}

func (c *conn) nameInUse(key string) bool {
	c.names.mu.Lock()
	defer c.names.mu.Unlock()
	_, ok := c.names.inUse[key]
	return ok
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// soleKey returns the one key under prefix in the store.
func soleKey(t *testing.T, s *fakeStore, prefix string) *mvccpb.KeyValue {
	t.Helper()
	s.mu.Lock()
	var found []string
	for k := range s.kvs {
		if strings.HasPrefix(k, prefix) {
			found = append(found, k)
		}
	}
	s.mu.Unlock()
	if len(found) != 1 {
		t.Fatalf("keys under %s: %q, want one", prefix, found)
	}
	return s.get(found[0])
}

var queueJoin = backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true}

// TestCreateOrphanDeleted: the first attempt of a queue join is applied but
// its reply is lost, and so are the replies of the retries; CreateAndList
// gives up with ErrConnectionLoss. The node it made must not stay: once the
// connection is back the Conn deletes it in the background (retrying
// through the outage) and only then frees its name, which the next join
// reuses.
func TestCreateOrphanDeleted(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts backend.CreateOptions
	}{
		{"queue-join", queueJoin},
		{"sequential", backend.CreateOptions{Sequential: true}},
		{"protected-ephemeral", backend.CreateOptions{Protected: true, Ephemeral: true}},
	} {
		t.Run(tc.name, func(t *testing.T) { testCreateOrphanDeleted(t, tc.opts) })
	}
}

func testCreateOrphanDeleted(t *testing.T, opts backend.CreateOptions) {
	e := newFakeEnv(t)
	c := e.open(t)
	ctx := context.Background()

	var mu sync.Mutex
	down, applied := true, false
	e.kv.setFault(func(r *pb.TxnRequest) txnFault {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case !down:
			return txnPass
		case isCreate(r) && !applied:
			applied = true
			return txnApplyLose
		default:
			return txnLose
		}
	})
	_, _, err := c.CreateAndList(ctx, "/q/lock-", []byte("me"), opts)
	if !errors.Is(err, backend.ErrConnectionLoss) {
		t.Fatalf("CreateAndList = %v, want ErrConnectionLoss", err)
	}
	if n := e.kv.count(txnApplyLose) + e.kv.count(txnLose); n < createAttempts {
		t.Fatalf("%d lost Txns, want at least the %d attempts of the create", n, createAttempts)
	}
	orphan := soleKey(t, e.store, "/q/")
	wantLease := int64(0)
	if opts.Ephemeral {
		wantLease = int64(c.lease)
	}
	if orphan.Lease != wantLease {
		t.Fatalf("orphan %s on lease %x, want %x", orphan.Key, orphan.Lease, wantLease)
	}
	key := string(orphan.Key)
	// The outage goes on: the background delete keeps trying, and the name
	// stays taken until it succeeds.
	waitFor(t, "the background delete to be tried through the outage", func() bool {
		return e.kv.count(txnLose) >= createAttempts-1+2
	})
	if e.store.get(key) == nil {
		t.Fatal("orphan deleted during the outage")
	}
	if opts.Sequential && !c.nameInUse(key) {
		t.Fatal("the orphan's name was freed before its delete was confirmed")
	}

	mu.Lock()
	down = false
	mu.Unlock()
	waitFor(t, "the orphan to be deleted", func() bool { return e.store.get(key) == nil })
	waitFor(t, "the orphan's name to be freed", func() bool { return !c.nameInUse(key) })

	n, kids, err := c.CreateAndList(ctx, "/q/lock-", []byte("me"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(kids) != 1 || kids[0].Path != n.Path {
		t.Fatalf("queue after the retry: %+v, want only %s", kids, n.Path)
	}
	if opts.Sequential && n.Path != key {
		t.Errorf("retry created %s, want the freed name %s", n.Path, key)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCreateOrphanCtxEnded: the caller's ctx ends while the create is in
// flight and its reply never comes; the node it made is deleted all the
// same.
func TestCreateOrphanCtxEnded(t *testing.T) {
	e := newFakeEnv(t)
	c := e.open(t)
	e.kv.setFault(func(r *pb.TxnRequest) txnFault {
		if isCreate(r) {
			return txnApplyHang
		}
		return txnPass
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := c.CreateAndList(ctx, "/q/lock-", nil, queueJoin); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CreateAndList = %v, want DeadlineExceeded", err)
	}
	e.kv.setFault(nil)
	waitFor(t, "the orphan to be deleted", func() bool { return len(e.store.rangeLockedCopy("/q/")) == 0 })
	if e.kv.count(txnApplyHang) != 1 {
		t.Errorf("%d creates sent, want 1", e.kv.count(txnApplyHang))
	}
	waitFor(t, "the name pool to be empty", func() bool {
		c.names.mu.Lock()
		defer c.names.mu.Unlock()
		return len(c.names.inUse) == 0
	})
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestCreateOrphanNotOurs: the key a lost create sent is on another lease
// when the background delete reads it: it is left, and its name is never
// handed out again.
func TestCreateOrphanNotOurs(t *testing.T) {
	e := newFakeEnv(t)
	c := e.open(t)
	other, err := fakeLease{e.store}.Grant(context.Background(), 60)
	if err != nil {
		t.Fatal(err)
	}
	var key string
	e.kv.setFault(func(r *pb.TxnRequest) txnFault {
		switch {
		case isCreate(r):
			// Lost before it reaches the server; meanwhile somebody else
			// takes the name.
			key = string(r.Success[0].GetRequestPut().Key)
			return txnLose
		case isOrphanDelete(r) && e.store.get(key) == nil:
			e.store.Put(context.Background(), &pb.PutRequest{Key: []byte(key), Value: []byte("theirs"), Lease: int64(other.ID)})
		}
		return txnPass
	})
	if _, _, err := c.CreateAndList(context.Background(), "/q/lock-", nil, queueJoin); !errors.Is(err, backend.ErrConnectionLoss) {
		t.Fatalf("CreateAndList = %v, want ErrConnectionLoss", err)
	}
	waitFor(t, "the orphan delete to be answered", func() bool { return !c.nameInUse(key) })
	if kv := e.store.get(key); kv == nil || kv.Lease != int64(other.ID) {
		t.Fatalf("the other lease's key was touched: %+v", kv)
	}
	e.kv.setFault(nil)
	n, _, err := c.CreateAndList(context.Background(), "/q/lock-", nil, queueJoin)
	if err != nil {
		t.Fatal(err)
	}
	if n.Path == key {
		t.Fatalf("the other lease's name %s was handed out again", key)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestCreateOrphanStopsAtClose: the outage outlasts the session. The
// background delete gives up when Close begins (Close waits for it), and
// the revoke of the lease takes the ephemeral orphan with it.
func TestCreateOrphanStopsAtClose(t *testing.T) {
	e := newFakeEnv(t)
	c := e.open(t)
	gate := make(chan struct{})
	defer close(gate)
	e.kv.gate = gate
	applied := false // under e.kv.mu, like every call of the fault
	e.kv.setFault(func(r *pb.TxnRequest) txnFault {
		switch {
		case isCreate(r) && !applied:
			applied = true
			return txnApplyLose
		case isOrphanDelete(r):
			return txnBlockedLose // in flight until Close
		}
		return txnLose
	})
	if _, _, err := c.CreateAndList(context.Background(), "/q/lock-", nil, queueJoin); !errors.Is(err, backend.ErrConnectionLoss) {
		t.Fatalf("CreateAndList = %v, want ErrConnectionLoss", err)
	}
	key := string(soleKey(t, e.store, "/q/").Key)
	waitFor(t, "the background delete to be sent", func() bool { return e.kv.count(txnBlockedLose) > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if e.store.get(key) != nil {
		t.Errorf("orphan %s outlived the session", key)
	}
}

// TestCreateOrphanAppliedLate: the first attempt of a queue join is lost
// before the server applied it, and applied only after the background
// delete of its key has found nothing (a server can propose a request its
// client gave up on behind a later one). The key must still go, and its
// name come back only once it has.
func TestCreateOrphanAppliedLate(t *testing.T) {
	e := newFakeEnv(t)
	c := e.open(t)
	var creates atomic.Int32
	var key string     // set before the create returns
	var takenAt []bool // at each orphan delete: is the name still taken?
	e.kv.setFault(func(r *pb.TxnRequest) txnFault {
		switch {
		case isCreate(r) && creates.Add(1) == 1:
			key = string(r.Success[0].GetRequestPut().Key)
			return txnLoseStash
		case isCreate(r):
			return txnLose
		case isOrphanDelete(r):
			takenAt = append(takenAt, c.nameInUse(key))
			return txnPassApplyStash
		}
		return txnPass
	})
	if _, _, err := c.CreateAndList(context.Background(), "/q/lock-", nil, queueJoin); !errors.Is(err, backend.ErrConnectionLoss) {
		t.Fatalf("CreateAndList = %v, want ErrConnectionLoss", err)
	}
	waitFor(t, "the late create to be applied", func() bool { return e.kv.count(txnPassApplyStash) > 0 })
	e.kv.mu.Lock()
	stashed := e.kv.stash
	e.kv.mu.Unlock()
	if stashed != nil {
		t.Fatal("the late create was not applied behind the first delete")
	}
	waitFor(t, "the late create's key to be deleted", func() bool {
		return len(e.store.rangeLockedCopy("/q/")) == 0
	})
	waitFor(t, "the name to be free", func() bool { return !c.nameInUse(key) })
	if n := e.kv.count(txnPassApplyStash); n != 2 {
		t.Errorf("%d deletes of the key, want 2 (one when the create gave up, one later)", n)
	}
	e.kv.mu.Lock()
	if len(takenAt) != 2 || !takenAt[0] || !takenAt[1] {
		t.Errorf("name taken at the orphan deletes: %v, want [true true] (freed only after the second)", takenAt)
	}
	e.kv.mu.Unlock()
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestOrphanNameKeptThroughDelete: a Delete of an orphan's key by the Conn
// itself (user code that found the node) does not free the name while the
// orphan's second delete is still to come: a create that reused it could
// meet a late create, or be deleted by that second pass.
func TestOrphanNameKeptThroughDelete(t *testing.T) {
	e := newFakeEnv(t)
	e.d.lateApplyWindow = time.Minute // the second pass does not come in this test
	c := e.open(t)
	var key string
	e.kv.setFault(func(r *pb.TxnRequest) txnFault {
		if isCreate(r) {
			key = string(r.Success[0].GetRequestPut().Key)
			return txnApplyLose
		}
		return txnPass
	})
	if _, _, err := c.CreateAndList(context.Background(), "/q/lock-", nil, queueJoin); !errors.Is(err, backend.ErrConnectionLoss) {
		t.Fatalf("CreateAndList = %v, want ErrConnectionLoss", err)
	}
	waitFor(t, "the first orphan delete", func() bool { return e.store.get(key) == nil })
	if err := c.Delete(context.Background(), key, backend.AnyVersion); !errors.Is(err, backend.ErrNoNode) {
		t.Fatalf("Delete of the orphan's key: %v, want ErrNoNode", err)
	}
	if !c.nameInUse(key) {
		t.Fatal("a Delete freed the name of an orphan whose second delete is still to come")
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestCreateFixedPathLostReply: a fixed-path create is sent once; on a lost
// reply the node is left for the caller to find (see Create). The fault
// stays on until Close has waited for the Conn's background work, so that a
// retry, in the call or after it, would be counted.
func TestCreateFixedPathLostReply(t *testing.T) {
	e := newFakeEnv(t)
	c := e.open(t)
	var creates atomic.Int32
	e.kv.setFault(func(r *pb.TxnRequest) txnFault {
		if isCreate(r) {
			creates.Add(1)
			return txnApplyLose
		}
		return txnPass
	})
	if _, err := c.Create(context.Background(), "/leader", []byte("me"), backend.CreateOptions{Ephemeral: true}); !errors.Is(err, backend.ErrConnectionLoss) {
		t.Fatalf("Create = %v, want ErrConnectionLoss", err)
	}
	n, err := c.Get(context.Background(), "/leader")
	if err != nil {
		t.Fatalf("the node of the lost create: %v", err)
	}
	if n.Owner != c.SessionID() {
		t.Errorf("owner %q, want %q", n.Owner, c.SessionID())
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := creates.Load(); n != 1 {
		t.Errorf("%d creates sent, want 1", n)
	}
}

// TestCreateDefinitiveFailureFreesName: a sequential create that certainly
// made nothing (the server refused it) gives its name back at once.
func TestCreateDefinitiveFailureFreesName(t *testing.T) {
	e := newFakeEnv(t)
	c := e.open(t)
	var refused string
	e.kv.setFault(func(r *pb.TxnRequest) txnFault {
		if isCreate(r) {
			refused = string(r.Success[0].GetRequestPut().Key)
			return txnRefuse
		}
		return txnPass
	})
	if _, _, err := c.CreateAndList(context.Background(), "/q/lock-", nil, queueJoin); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("CreateAndList = %v, want ErrPermissionDenied", err)
	}
	if c.nameInUse(refused) {
		t.Errorf("the name of a refused create is still taken")
	}
	if n := e.kv.count(txnRefuse); n != 1 {
		t.Errorf("%d creates sent, want 1 (no retry of a refusal)", n)
	}
	e.kv.setFault(nil)
	n, _, err := c.CreateAndList(context.Background(), "/q/lock-", nil, queueJoin)
	if err != nil {
		t.Fatal(err)
	}
	if n.Path != refused {
		t.Errorf("next create made %s, want the refused name %s", n.Path, refused)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (s *fakeStore) rangeLockedCopy(prefix string) []*mvccpb.KeyValue {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rangeLocked(&pb.RangeRequest{Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix))}).Kvs
}

// TestNameRetiredAfterADeleteWithItsOutcomeUnknown: a Delete of a queue
// node whose reply was lost may still be applied later (a request in
// transit when the connection broke). A second Delete that finds the node
// gone must not make its name free again: a later create given that name
// would be removed by the late delete.
func TestNameRetiredAfterADeleteWithItsOutcomeUnknown(t *testing.T) {
	e := newFakeEnv(t)
	c := e.open(t)
	ctx := context.Background()
	n, _, err := c.CreateAndList(ctx, "/q/lock-", nil, queueJoin)
	if err != nil {
		t.Fatal(err)
	}
	e.store.mu.Lock()
	e.store.loseDelete = func(key string) bool { return key == n.Path }
	e.store.mu.Unlock()
	if err := c.Delete(ctx, n.Path, backend.AnyVersion); !errors.Is(err, backend.ErrConnectionLoss) {
		t.Fatalf("Delete with its reply lost: %v, want ErrConnectionLoss", err)
	}
	e.store.mu.Lock()
	e.store.loseDelete = nil
	e.store.mu.Unlock()
	if err := c.Delete(ctx, n.Path, backend.AnyVersion); !errors.Is(err, backend.ErrNoNode) {
		t.Fatalf("second Delete: %v, want ErrNoNode (the first was applied)", err)
	}
	again, _, err := c.CreateAndList(ctx, "/q/lock-", nil, queueJoin)
	if err != nil {
		t.Fatal(err)
	}
	if again.Path == n.Path {
		t.Fatalf("the name %s of a node whose delete had its outcome unknown was handed out again", n.Path)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
