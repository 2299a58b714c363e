package etcd

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordkit/coordkit/backend"
)

const (
	// protectedPrefix starts the name of a protected node, as in Curator.
	protectedPrefix = "_c_"
	// createAttempts bounds the tries of a protected or sequential create
	// whose reply was lost.
	createAttempts = 4
)

// joinPath is backend.Join that also handles the root parent.
func joinPath(parent, name string) string {
	if parent == "/" {
		return "/" + name
	}
	return backend.Join(parent, name)
}

// childPrefix is the key prefix of parent's children.
func childPrefix(parent string) string {
	if parent == "/" {
		return "/"
	}
	return parent + "/"
}

// childName returns the name of key if it is a direct child under prefix.
func childName(prefix, key string) (string, bool) {
	if !strings.HasPrefix(key, prefix) {
		return "", false
	}
	name := key[len(prefix):]
	if name == "" || strings.Contains(name, "/") {
		return "", false
	}
	return name, true
}

// nodeOf converts a key-value to a Node.
func nodeOf(kv *mvccpb.KeyValue) backend.Node {
	key := string(kv.Key)
	_, name := backend.Split(key)
	n := backend.Node{
		Path:       key,
		Name:       name,
		Data:       kv.Value,
		Seq:        kv.CreateRevision,
		Sequential: true,
		Token:      kv.CreateRevision,
		Version:    kv.ModRevision,
	}
	if kv.Lease != 0 {
		n.Owner = fmt.Sprintf("%x", kv.Lease)
	}
	return n
}

// childrenOf keeps the direct children under prefix of a listing sorted by
// create revision.
func childrenOf(prefix string, kvs []*mvccpb.KeyValue) []backend.Node {
	out := make([]backend.Node, 0, len(kvs))
	for _, kv := range kvs {
		key := string(kv.Key)
		name, ok := childName(prefix, key)
		if !ok {
			continue
		}
		out = append(out, backend.Node{Path: key, Name: name, Seq: kv.CreateRevision, Sequential: true, Token: kv.CreateRevision})
	}
	return out
}

func rangeKvs(r *clientv3.TxnResponse, i int) []*mvccpb.KeyValue {
	if i >= len(r.Responses) {
		return nil
	}
	return r.Responses[i].GetResponseRange().GetKvs()
}

// Create creates a node in one Txn. See the package documentation for the
// names of sequential and protected nodes.
func (c *conn) Create(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, error) {
	n, _, err := c.create(ctx, "create", path, data, opts, false)
	return n, err
}

// CreateAndList creates a node and lists its parent's children in one Txn.
func (c *conn) CreateAndList(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, []backend.Node, error) {
	return c.create(ctx, "create-and-list", path, data, opts, true)
}

func (c *conn) create(ctx context.Context, op, path string, data []byte, opts backend.CreateOptions, list bool) (backend.Node, []backend.Node, error) {
	if err := backend.ValidatePath(path); err != nil {
		return backend.Node{}, nil, err
	}
	if err := backend.ValidateData(data); err != nil {
		return backend.Node{}, nil, fmt.Errorf("etcd: %s %q: %w", op, path, err)
	}
	octx, done, err := c.begin(ctx, op, path)
	if err != nil {
		return backend.Node{}, nil, err
	}
	defer done()

	parent, name := backend.Split(path)
	var key, base string
	switch {
	case opts.Sequential:
		if opts.Protected {
			name = c.names.protectedPrefix() + name
		}
		base = joinPath(parent, name)
		key, _ = c.names.take(base, int64(c.lease))
	case opts.Protected:
		key = joinPath(parent, protectedPrefix+uuid.NewString()+"-"+name)
	default:
		key = joinPath(parent, name)
	}
	prefix := childPrefix(parent)

	var lease clientv3.LeaseID
	if opts.Ephemeral {
		lease = c.lease
	}
	// The put's own revision is the node's create and mod revision, so the
	// Then branch needs no read back.
	ops := func() (then, els []*pb.RequestOp) {
		then = []*pb.RequestOp{putReq(key, data, lease)}
		els = []*pb.RequestOp{getReq(key)}
		if list {
			l := listReq(prefix)
			then = append(then, l)
			els = append(els, l)
		}
		return then, els
	}
	thenOps, elseOps := ops()
	// A protected or sequential key is unique to this call among the
	// session's live nodes, so the Txn is idempotent: a retry after a lost
	// reply finds the node made by the attempt whose reply was lost.
	retry := opts.Protected || opts.Sequential
	for attempt := 1; ; attempt++ {
		resp, err := c.commit(octx, []*pb.Compare{absent(key)}, thenOps, elseOps)
		if err != nil {
			ferr := c.fail(ctx, op, path, err)
			if !retry || attempt >= createAttempts || !isUnavailable(err) || octx.Err() != nil {
				return backend.Node{}, nil, ferr
			}
			c.lg.Debug("retrying create after connection loss", zap.String("key", key), zap.Error(err))
			t := time.NewTimer(time.Duration(attempt) * 100 * time.Millisecond)
			select {
			case <-octx.Done():
				t.Stop()
				return backend.Node{}, nil, c.fail(ctx, op, path, octx.Err())
			case <-t.C:
			}
			continue
		}
		var n backend.Node
		listIdx := 1
		if resp.Succeeded {
			kv := &mvccpb.KeyValue{Key: []byte(key), Value: append([]byte(nil), data...), CreateRevision: resp.Header.Revision,
				ModRevision: resp.Header.Revision, Version: 1}
			if opts.Ephemeral {
				kv.Lease = int64(c.lease)
			}
			n = nodeOf(kv)
		} else {
			kvs := rangeKvs(resp, 0)
			if len(kvs) == 0 {
				// Deleted between the compare and the read of the same
				// Txn: cannot happen, a Txn is atomic.
				return backend.Node{}, nil, fmt.Errorf("etcd: %s %q: key %q missing after a failed create", op, path, key)
			}
			n = nodeOf(kvs[0])
			ours := attempt > 1 && retry && (!opts.Ephemeral || kvs[0].Lease == int64(c.lease))
			if !ours && opts.Sequential && attempt == 1 {
				// A sequential name of ours (used before, and deleted)
				// that somebody else created: leave it to them and take
				// another.
				c.names.drop(key)
				key, _ = c.names.take(base, int64(c.lease))
				thenOps, elseOps = ops()
				attempt = 0
				continue
			}
			if !ours {
				return backend.Node{}, nil, fmt.Errorf("etcd: %s %q: %w", op, key, backend.ErrNodeExists)
			}
		}
		if !list {
			return n, nil, nil
		}
		return n, childrenOf(prefix, rangeKvs(resp, listIdx)), nil
	}
}

// CreateAndWatch implements backend.Conn with a Create and a Watch (see
// backend.CreateThenWatch).
func (c *conn) CreateAndWatch(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, *backend.Watch, error) {
	return backend.CreateThenWatch(ctx, c, path, data, opts)
}

// Get reads one node.
func (c *conn) Get(ctx context.Context, path string) (backend.Node, error) {
	if err := backend.ValidatePath(path); err != nil {
		return backend.Node{}, err
	}
	octx, done, err := c.begin(ctx, "get", path)
	if err != nil {
		return backend.Node{}, err
	}
	defer done()
	resp, err := c.cli.Get(octx, path)
	if err != nil {
		return backend.Node{}, c.fail(ctx, "get", path, err)
	}
	if len(resp.Kvs) == 0 {
		return backend.Node{}, fmt.Errorf("etcd: get %q: %w", path, backend.ErrNoNode)
	}
	return nodeOf(resp.Kvs[0]), nil
}

// Children lists the direct children of parent by create revision.
func (c *conn) Children(ctx context.Context, parent string) ([]backend.Node, error) {
	if err := backend.ValidatePath(parent); err != nil {
		return nil, err
	}
	octx, done, err := c.begin(ctx, "children", parent)
	if err != nil {
		return nil, err
	}
	defer done()
	prefix := childPrefix(parent)
	resp, err := c.cli.Get(octx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return nil, c.fail(ctx, "children", parent, err)
	}
	return childrenOf(prefix, resp.Kvs), nil
}

// targetErr tells why the version compares of the target failed, from its
// value read in the same Txn.
func targetErr(op, path string, kvs []*mvccpb.KeyValue, version int64) error {
	if len(kvs) == 0 {
		return fmt.Errorf("etcd: %s %q: %w", op, path, backend.ErrNoNode)
	}
	return fmt.Errorf("etcd: %s %q: version %d, not %d: %w", op, path, kvs[0].ModRevision, version, backend.ErrBadVersion)
}

// Set replaces the data of a node (keeping its lease) if its version is
// version.
func (c *conn) Set(ctx context.Context, path string, data []byte, version int64) (backend.Node, error) {
	return c.GuardedSet(ctx, nil, path, data, version)
}

// GuardedSet writes data to path in one Txn whose compares are the guards'
// and the target's.
func (c *conn) GuardedSet(ctx context.Context, guards []backend.Guard, path string, data []byte, version int64) (backend.Node, error) {
	op := "set"
	if len(guards) > 0 {
		op = "guarded set"
	}
	if err := backend.ValidatePath(path); err != nil {
		return backend.Node{}, err
	}
	for _, g := range guards {
		if err := backend.ValidatePath(g.Path); err != nil {
			return backend.Node{}, err
		}
	}
	if err := backend.ValidateData(data); err != nil {
		return backend.Node{}, fmt.Errorf("etcd: %s %q: %w", op, path, err)
	}
	octx, done, err := c.begin(ctx, op, path)
	if err != nil {
		return backend.Node{}, err
	}
	defer done()

	var cmps []*pb.Compare
	elseOps := []*pb.RequestOp{getReq(path)}
	for _, g := range guards {
		if g.Token != 0 {
			cmps = append(cmps, created(g.Path, g.Token))
		} else {
			cmps = append(cmps, present(g.Path))
		}
		if g.Version != backend.AnyVersion {
			cmps = append(cmps, modified(g.Path, g.Version))
		}
		elseOps = append(elseOps, getReq(g.Path))
	}
	cmps = append(cmps, versionCompares(path, version)...)
	put := &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
		Key: []byte(path), Value: data, IgnoreLease: true}}}
	resp, err := c.commit(octx, cmps, []*pb.RequestOp{put, getReq(path)}, elseOps)
	if err != nil {
		return backend.Node{}, c.fail(ctx, op, path, err)
	}
	if resp.Succeeded {
		kvs := rangeKvs(resp, 1)
		if len(kvs) == 0 {
			return backend.Node{}, fmt.Errorf("etcd: %s %q: key missing after the put", op, path)
		}
		return nodeOf(kvs[0]), nil
	}
	// The Else reads ran at the revision the compares failed at.
	for i, g := range guards {
		kvs := rangeKvs(resp, i+1)
		switch {
		case len(kvs) == 0:
			return backend.Node{}, fmt.Errorf("etcd: %s %q: %w: %q: %w", op, path, backend.ErrGuardFailed, g.Path, backend.ErrNoNode)
		case g.Token != 0 && kvs[0].CreateRevision != g.Token:
			return backend.Node{}, fmt.Errorf("etcd: %s %q: %w: %q was re-created (token %d, not %d): %w",
				op, path, backend.ErrGuardFailed, g.Path, kvs[0].CreateRevision, g.Token, backend.ErrNoNode)
		case g.Version != backend.AnyVersion && kvs[0].ModRevision != g.Version:
			return backend.Node{}, fmt.Errorf("etcd: %s %q: %w: %q version %d, not %d: %w",
				op, path, backend.ErrGuardFailed, g.Path, kvs[0].ModRevision, g.Version, backend.ErrBadVersion)
		}
	}
	return backend.Node{}, targetErr(op, path, rangeKvs(resp, 0), version)
}

// Delete removes a node if its version is version.
func (c *conn) Delete(ctx context.Context, path string, version int64) error {
	if err := backend.ValidatePath(path); err != nil {
		return err
	}
	octx, done, err := c.begin(ctx, "delete", path)
	if err != nil {
		return err
	}
	defer done()
	if version == backend.AnyVersion {
		// No compare: a plain DeleteRange, whose count says whether the
		// key was there.
		resp, err := c.cli.Delete(octx, path)
		if err != nil {
			return c.fail(ctx, "delete", path, err)
		}
		c.names.release(path)
		if resp.Deleted == 0 {
			return fmt.Errorf("etcd: delete %q: %w", path, backend.ErrNoNode)
		}
		return nil
	}
	resp, err := c.commit(octx, versionCompares(path, version), []*pb.RequestOp{deleteReq(path)}, []*pb.RequestOp{getReq(path)})
	if err != nil {
		return c.fail(ctx, "delete", path, err)
	}
	if resp.Succeeded {
		c.names.release(path)
		return nil
	}
	kvs := rangeKvs(resp, 0)
	if len(kvs) == 0 {
		c.names.release(path) // gone: its name is free again
	}
	return targetErr("delete", path, kvs, version)
}

// VersionsIdentifyIncarnations implements backend.IncarnationVersions: a
// key's mod revision is unique cluster-wide.
func (c *conn) VersionsIdentifyIncarnations() bool { return true }

var _ backend.IncarnationVersions = (*conn)(nil)
