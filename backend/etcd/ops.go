package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
//
// When a connection failure (or the end of ctx) hides whether the Txn was
// applied, what the caller gets depends on the kind of node:
//
//   - A protected or sequential create is retried with the same key (see
//     the package documentation). If it still does not know, it returns
//     backend.ErrConnectionLoss (or ctx's error), and the Conn deletes that
//     key in the background if it exists and is still its own (attached to
//     the same lease, or to none for a node that is not ephemeral): a node
//     the caller never got must not stay at the head of a queue. It
//     retries through connection loss until the key is gone, or until the
//     session expires or Close begins (an ephemeral key then goes with the
//     lease). A sequential create's key is free for reuse only once that
//     delete has been confirmed.
//   - A create of a fixed path (neither protected nor sequential) is sent
//     once. On a lost reply it returns backend.ErrConnectionLoss and the
//     node may or may not exist: the driver cannot tell a node this call
//     made from one somebody else made, so it leaves it. The caller may Get
//     the path (an ephemeral node of this session has Owner ==
//     SessionID()) and Delete it; an ephemeral one goes with the session.
func (c *conn) Create(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, error) {
	n, _, err := c.create(ctx, "create", path, data, opts, false)
	return n, err
}

// CreateAndList creates a node and lists its parent's children in one Txn.
// A create whose outcome is unknown is handled as in Create.
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
	// unknown: an attempt with key may have been applied although its
	// reply was lost (only tracked for keys unique to this call).
	unknown := false
	giveUp := func(err error) (backend.Node, []backend.Node, error) {
		switch {
		case unknown:
			// The key may be a node nobody will ever be given: delete it
			// if it is still ours. Its name stays taken until then.
			c.deleteOrphanLater(key, lease)
		case opts.Sequential:
			// Certainly not created: the name is free again.
			c.names.release(key)
		}
		return backend.Node{}, nil, err
	}
	for attempt := 1; ; attempt++ {
		resp, err := c.commit(octx, []*pb.Compare{absent(key)}, thenOps, elseOps)
		if err != nil {
			ferr := c.fail(ctx, op, path, err)
			if retry && outcomeUnknown(err) {
				unknown = true
			}
			if !retry || attempt >= createAttempts || !isUnavailable(err) || octx.Err() != nil {
				return giveUp(ferr)
			}
			c.lg.Debug("retrying create after connection loss", zap.String("key", key), zap.Error(err))
			t := time.NewTimer(time.Duration(attempt) * 100 * time.Millisecond)
			select {
			case <-octx.Done():
				t.Stop()
				return giveUp(c.fail(ctx, op, path, octx.Err()))
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
				if opts.Sequential {
					// Somebody else's node has our name (a retry found
					// it on another lease): never hand the name out again.
					c.names.drop(key)
				}
				return backend.Node{}, nil, fmt.Errorf("etcd: %s %q: %w", op, key, backend.ErrNodeExists)
			}
		}
		if !list {
			return n, nil, nil
		}
		return n, childrenOf(prefix, rangeKvs(resp, listIdx)), nil
	}
}

// outcomeUnknown reports whether a write that failed with err may have been
// applied on the server all the same: its reply was lost to a connection
// failure, or its context ended while it was in flight.
func outcomeUnknown(err error) bool {
	if isUnavailable(err) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded:
		return true
	}
	return false
}

// Pauses between the attempts of deleteOrphan: none before the first, then
// orphanBackoffMin doubling up to orphanBackoffMax, so that a server that
// keeps answering "unavailable" at once is not asked in a tight loop.
const (
	orphanBackoffMin = 50 * time.Millisecond
	orphanBackoffMax = time.Second
)

var orphanBackoff = backend.Backoff{Min: orphanBackoffMin, Max: orphanBackoffMax}

// orphanAttemptTimeout cuts off one attempt of deleteOrphan.
const orphanAttemptTimeout = 2 * time.Second

// defaultLateApplyWindow is how long after deleting the key of a create
// whose outcome was unknown deleteOrphan deletes it once more, in case the
// create was applied after all, behind the delete. It is longer than etcd's
// default request timeout (5s plus two election timeouts), within which a
// server proposes a request or fails it.
const defaultLateApplyWindow = 10 * time.Second

// deleteOrphanLater deletes key in the background (see deleteOrphan): the
// key of a protected or sequential create of this Conn whose outcome stayed
// unknown, made with lease (0 if not ephemeral). After expiry or once Close
// has begun it does nothing: an ephemeral key goes with the lease, and the
// Conn hands out no names any more.
func (c *conn) deleteOrphanLater(key string, lease clientv3.LeaseID) {
	c.names.orphan(key)
	if !c.goBackground(func() { c.deleteOrphan(key, lease) }) {
		c.lg.Debug("session over: not deleting the key of a create whose outcome is unknown", zap.String("key", key))
	}
}

// deleteOrphan deletes key if it is still attached to lease, in one Txn
// (compare the key's lease, then delete; else read the key), retried
// through connection loss until it is answered or c.ctx ends (expiry,
// Close). The key is unique to the create that sent it (a fresh uuid or a
// sequential name of this Conn's lease), so a key on the same lease can only
// be the lost create's node; a key on another lease is somebody else's and
// is left, its name never reused.
//
// A create whose reply was lost may still be applied after this delete: the
// server can propose a request it has not yet proposed when its client gave
// up on it (a cancelled call, a broken connection, a member forwarding to
// the leader) behind a later request. So once the key is gone, the delete
// is made once more lateApplyWindow later, and only then does the name go
// back to the pool (a name in use is never handed out, so no new create can
// meet the late one).
func (c *conn) deleteOrphan(key string, lease clientv3.LeaseID) {
	for pass := 0; pass < 2; pass++ {
		if pass > 0 && !backend.Sleep(c.ctx, c.d.lateApplyWindow) {
			return
		}
		switch c.deleteOrphanOnce(key, lease) {
		case orphanForeign:
			c.names.drop(key)
			return
		case orphanUnsettled:
			return
		}
	}
	c.names.releaseOrphan(key)
}

// orphanOutcome is what one pass of deleteOrphan found.
type orphanOutcome int

const (
	orphanGone      orphanOutcome = iota // deleted, or not there
	orphanForeign                        // there on another lease
	orphanUnsettled                      // the session ended, or the server refused the delete
)

// deleteOrphanOnce is one pass of deleteOrphan: its Txn, retried through
// connection loss.
func (c *conn) deleteOrphanOnce(key string, lease clientv3.LeaseID) orphanOutcome {
	cmp := &pb.Compare{Key: []byte(key), Target: pb.Compare_LEASE, Result: pb.Compare_EQUAL,
		TargetUnion: &pb.Compare_Lease{Lease: int64(lease)}}
	for attempt := 0; backend.Sleep(c.ctx, orphanBackoff.Pause(attempt)); attempt++ {
		// Each attempt is cut off: one sent into a connection that has
		// gone silent would otherwise wait as long as the session.
		actx, cancel := context.WithTimeout(c.ctx, orphanAttemptTimeout)
		resp, err := c.commit(actx, []*pb.Compare{cmp}, []*pb.RequestOp{deleteReq(key)}, []*pb.RequestOp{getReq(key)})
		timedOut := actx.Err() != nil
		cancel()
		switch {
		case err == nil && (resp.Succeeded || len(rangeKvs(resp, 0)) == 0):
			// Deleted, or not there (a missing key has lease 0, so the
			// compare of an ephemeral key's lease fails on it).
			c.lg.Debug("key of a create whose outcome was unknown is gone", zap.String("key", key),
				zap.Bool("deleted", resp.Succeeded && len(resp.Responses) > 0 && resp.Responses[0].GetResponseDeleteRange().GetDeleted() > 0),
				zap.Int("attempts", attempt+1))
			return orphanGone
		case err == nil:
			c.lg.Info("key of a create whose outcome was unknown is held by another lease; left alone",
				zap.String("key", key), zap.String("owner", fmt.Sprintf("%x", rangeKvs(resp, 0)[0].Lease)))
			return orphanForeign
		case c.ctx.Err() != nil:
			return orphanUnsettled
		case !isUnavailable(err) && !timedOut:
			c.lg.Info("cannot delete the key of a create whose outcome was unknown", zap.String("key", key), zap.Error(err))
			return orphanUnsettled
		}
		c.lg.Debug("retrying the delete of the key of a create whose outcome was unknown", zap.String("key", key),
			zap.Error(err), zap.Duration("next-in", orphanBackoff.Pause(attempt+1)))
	}
	return orphanUnsettled
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
			c.names.retire(path)
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
		c.names.retire(path)
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
