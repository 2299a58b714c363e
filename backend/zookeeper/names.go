package zookeeper

import (
	"fmt"
	"math"
	"strconv"

	"github.com/go-zookeeper/zk"
	"github.com/google/uuid"

	"github.com/coordkit/coordkit/backend"
)

// protectedPrefix starts every protected name, as in Curator's ProtectedUtils.
const protectedPrefix = "_c_"

// newProtectedPrefix returns "_c_<uuid36>-": Curator's protected prefix, 40
// bytes, accepted by Curator's isProtectedZNode.
func newProtectedPrefix() string {
	return protectedPrefix + uuid.New().String() + "-"
}

// joinPath joins a valid parent (possibly "/") and a name.
func joinPath(parent, name string) string {
	if parent == "/" {
		return "/" + name
	}
	return backend.Join(parent, name)
}

// ownerOf formats an ephemeralOwner (or a session id) the way SessionID does:
// lower-case hex of the unsigned 64-bit value, "" for 0.
func ownerOf(id int64) string {
	if id == 0 {
		return ""
	}
	return formatSessionID(id)
}

// formatSessionID is the one formatting of ZooKeeper session ids, shared by
// Conn.SessionID and Node.Owner.
func formatSessionID(id int64) string { return fmt.Sprintf("%x", uint64(id)) }

// parseSeq finds the sequence suffix ZooKeeper appends to a sequential
// node's name: String.format("%010d", n) of a signed 32-bit counter. That is
// ten digits for n >= 0, "-" and nine digits for -999999999 <= n <= -1, and
// "-" and ten digits below that (down to "-2147483648").
//
// One band is ambiguous by construction: "x-1500000000" is either the prefix
// "x-" with 1500000000 or the prefix "x" with -1500000000. It is read as
// positive unless the "-" is doubled ("x--1500000000", the prefix "x-" with a
// negative number), which is exact for prefixes ending in "-", the convention
// of Curator ("lock-", "latch-", "lease-") and of coordkit's recipes.
func parseSeq(name string) (int64, bool) {
	n := len(name)
	if n >= 10 && allDigits(name[n-10:]) {
		v, _ := strconv.ParseInt(name[n-10:], 10, 64)
		dash := n >= 11 && name[n-11] == '-'
		if dash && v >= 1e9 && v <= -math.MinInt32 && (v > math.MaxInt32 || (n >= 12 && name[n-12] == '-')) {
			return -v, true
		}
		if v <= math.MaxInt32 {
			return v, true
		}
		return 0, false
	}
	if n >= 10 && name[n-10] == '-' && allDigits(name[n-9:]) {
		v, _ := strconv.ParseInt(name[n-9:], 10, 64)
		return -v, true
	}
	return 0, false
}

// parseSuffix parses exactly the suffix the server appended to a name we
// asked for, so it is never ambiguous.
func parseSuffix(suffix string) (int64, bool) {
	v, err := strconv.ParseInt(suffix, 10, 32)
	if err != nil || len(suffix) < 10 {
		return 0, false
	}
	return v, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// nodeOf builds a Node from a path, its data and its Stat.
func nodeOf(path string, data []byte, st *zk.Stat) backend.Node {
	_, name := backend.Split(path)
	n := backend.Node{Path: path, Name: name, Data: data}
	n.Seq, n.Sequential = parseSeq(name)
	if st != nil {
		n.Token = st.Czxid
		n.Version = int64(st.Version)
		n.Owner = ownerOf(st.EphemeralOwner)
	}
	return n
}

// childNodes turns a children listing into Nodes in creation order, by
// backend.SortBySeq: names with a sequence suffix first, in a total order
// that agrees with backend.SeqLess while they span less than 2^31 (ties by
// name), then the others by name. (Sorting with SeqLess itself is wrong: it
// is not transitive once a foreign sequential child sits far from the
// others, and a sort by it can misorder even the nodes of one queue.)
func childNodes(parent string, names []string) []backend.Node {
	nodes := make([]backend.Node, 0, len(names))
	for _, name := range names {
		n := backend.Node{Path: joinPath(parent, name), Name: name}
		n.Seq, n.Sequential = parseSeq(name)
		nodes = append(nodes, n)
	}
	backend.SortBySeq(nodes)
	return nodes
}

// zkVersion converts a seam version to ZooKeeper's int32 data version.
// AnyVersion is -1 on both sides. A version outside int32 (an etcd revision
// passed by mistake) becomes -2, which matches no node, so the server still
// answers ErrNoNode or ErrBadVersion as it should.
func zkVersion(v int64) int32 {
	if v < math.MinInt32 || v > math.MaxInt32 {
		return -2
	}
	return int32(v)
}
