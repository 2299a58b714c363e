package etcd

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The Txns of the lock cycle's hot path (create, delete) are built directly
// as protobuf messages and sent on the client's KV stub. clientv3's Txn
// builder clones every compare with proto.Clone, converts every Op and takes
// a mutex; on a 2-core machine that client work was a measurable part of an
// uncontended Lock+Unlock. The requests are the same on the wire.

// commit sends one Txn: if every compare holds, then; else els.
func (c *conn) commit(ctx context.Context, cmps []*pb.Compare, then, els []*pb.RequestOp) (*clientv3.TxnResponse, error) {
	resp, err := c.kv.Txn(ctx, &pb.TxnRequest{Compare: cmps, Success: then, Failure: els})
	if err != nil {
		return nil, clientv3.ContextError(ctx, err)
	}
	return (*clientv3.TxnResponse)(resp), nil
}

// absent holds while key does not exist.
func absent(key string) *pb.Compare { return created(key, 0) }

// created holds while key exists with create revision rev.
func created(key string, rev int64) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
		TargetUnion: &pb.Compare_CreateRevision{CreateRevision: rev}}
}

// present holds while key exists.
func present(key string) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_CREATE, Result: pb.Compare_GREATER,
		TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}
}

// modified holds while key's mod revision is rev (0: key is absent).
func modified(key string, rev int64) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_MOD, Result: pb.Compare_EQUAL,
		TargetUnion: &pb.Compare_ModRevision{ModRevision: rev}}
}

// versionCompares are the compares that hold while the node at key exists
// and, unless version is AnyVersion, has that mod revision. A missing key
// has mod revision 0, so a positive version needs no compare of its own for
// existence; any other version does.
func versionCompares(key string, version int64) []*pb.Compare {
	if version > 0 {
		return []*pb.Compare{modified(key, version)}
	}
	cmps := []*pb.Compare{present(key)}
	if version >= 0 {
		cmps = append(cmps, modified(key, version))
	}
	return cmps
}

func putReq(key string, value []byte, lease clientv3.LeaseID) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
		Key: []byte(key), Value: value, Lease: int64(lease)}}}
}

func getReq(key string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(key)}}}
}

func deleteReq(key string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key)}}}
}

// listReq lists the keys (no values) under prefix by create revision.
func listReq(prefix string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{
		Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix)), KeysOnly: true,
		SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_CREATE}}}
}
