// Package etcd is the etcd driver of coordkit's backend seam: it implements
// [backend.Driver] and [backend.Conn] on go.etcd.io/etcd/client/v3.
//
// # Key layout
//
// A path is used as the key itself: the node "/a/b" is the key "/a/b". The
// children of P are the keys that start with "P/" and contain no further "/";
// deeper keys are filtered out, so "/a" and "/ab" never collide and "/a/b/c"
// is not a child of "/a". etcd has no parent nodes: a node can be created
// below a path that does not exist, and Delete never returns
// backend.ErrNotEmpty.
//
// Creating a node is one Txn that puts the key only if its create revision
// is 0 (it does not exist); the Txn's revision is the node's create and mod
// revision. With CreateOptions.Ephemeral the key is attached to the
// session's lease. With CreateOptions.Sequential the suffix
//
//	fmt.Sprintf("%016x-%d", leaseID, n)
//
// is appended to the last element, where n is unique among the Conn's live
// nodes of that name: siblings are ordered by create revision, not by name.
// Once the Conn's own Delete has removed such a node, its n is used again
// (the smallest set of keys a loop of creates and deletes needs): etcd keeps
// every deleted key in its index until the next compaction and every listing
// of the directory walks them, so fresh keys would make each listing of a
// busy lock slower until then. A listed node's Token (its create revision)
// tells its incarnations apart. With CreateOptions.Protected the last element
// is prefixed with "_c_<uuid>-" (Curator's protected mode; for sequential
// creates the uuid is the Conn's, for others the call's). A protected or
// sequential create whose reply is lost to a connection failure is retried a
// few times with the same key; since the Txn only puts a key that does not
// exist, a retry finds the node the lost attempt made instead of creating a
// second one. When the create gives up with its outcome unknown, the Conn
// deletes the key in the background if it is on its own lease, and once more
// ten seconds later (a server may apply a request its client gave up on
// behind a later one); the key's name is handed out again only after that.
//
// # Tokens and versions
//
// Every etcd key is ordered by its create revision, so every Node has
// Sequential set and Seq = Token = the key's create revision: it grows with
// every key created anywhere in the cluster and is the fencing token of this
// incarnation of the node. Node.Version is the key's mod revision, an opaque
// stamp passed back to Set, Delete and guards for compare-and-set. Node.Owner
// is the lease of an ephemeral key in lower-case hex, the same format as
// Conn.SessionID.
//
// # Sessions and their states
//
// Driver.Open grants a lease of the TTL asked for (rounded up to whole
// seconds; the server may raise it to its minimum, and Conn.Timeout reports
// the TTL it granted) and keeps it alive with a concurrency.Session. It puts a
// marker key <prefix>/<lease hex> (see [WithSessionPrefix]) attached to the
// lease and watches it. The Conn's states are derived as follows:
//
//   - StateConnected is sent once, when Open returns.
//   - StateDisconnected is sent when no keepalive reply has arrived for the
//     suspend-after period ([WithSuspendAfter]; by default TTL/2, but at least
//     TTL/3+800ms because the client sends a keepalive every TTL/3 on a
//     500ms tick, and never more than 9/10 of the TTL, the rest being for the
//     reply's travel: the server renewed the lease before the reply left).
//     The lease may still be alive on the server.
//   - StateReconnected is sent on the next keepalive reply after that.
//   - StateExpired is sent when the marker key is deleted (the lease was
//     revoked or expired on the server: the watch reports it within one round
//     trip), when the server answers a write with "lease not found", when
//     the server says it no longer has the lease after etcd's client ended
//     the keepalive (see below), or when no keepalive reply has arrived for
//     a whole TTL since the last one (or since the grant). By then the
//     server has expired the lease, unless a leader change extended it.
//     Deleting the marker key by hand ends the session too. After expiry the
//     driver stops refreshing the lease and revokes it, best effort, so
//     ephemeral keys do not linger.
//   - StateClosed is sent by Conn.Close, which revokes the lease (deleting
//     the session's ephemeral keys and the marker at once). A client cut
//     off from the server cannot revoke: etcd's client waits to reconnect
//     and retries, so Close returns ctx's error once ctx ends (or
//     backend.ErrConnectionLoss if the client gives up first), and the
//     lease, with its keys, expires within its TTL.
//
// etcd's client ends its keepalive of a lease (closes the keepalive
// channels and stops refreshing) when the server answers a keepalive with
// TTL <= 0, but also when the first reply after the keepalive starts takes
// longer than the client's DialTimeout+1s (5s without a DialTimeout),
// whatever the TTL; and a single member that shuts down has been seen to
// answer TTL <= 0 for a lease that survives its restart. So an ended
// keepalive alone does not expire the session: the driver asks the server
// (TimeToLive; each attempt cut off after 2s, unanswered ones repeated after
// 250ms, doubling up to 2s). If the server no longer has the lease (TTL -1)
// the session expires; if it has, the driver starts a new keepalive of the
// same lease, whose replies count like any other (StateReconnected after a
// StateDisconnected). Meanwhile the timers above keep running: asking never
// delays StateDisconnected or StateExpired.
//
// Events are buffered without bound and the terminal event (StateExpired or
// StateClosed) is always delivered before the channel is closed (until
// Driver.Close, which drops what nobody has read beyond the buffer). After expiry
// every call fails with coordkit.ErrSessionLost, after Close with
// coordkit.ErrClosed.
//
// # Watches
//
// Conn.Watch reads the key and watches it, with no change after the read
// missed: the watch is opened at the current revision together with the read
// (not at the read's revision + 1, which etcd would serve from its 100ms
// catch-up loop), and the read is repeated at the watch's start revision if a
// write landed between the two. WatchChildren does the same for the "P/"
// prefix and fires only when a direct child is created or deleted.
// Watches are opened with clientv3.WithRequireLeader, so a member that loses
// its leader cancels them (EventLost with the server's error) rather than
// leaving them silent. A compacted watch is also reported as EventLost with
// the error. When the session expires or closes every outstanding watch
// delivers EventLost with coordkit.ErrSessionLost or coordkit.ErrClosed.
//
// # Errors
//
// "lease not found" from the server maps to coordkit.ErrSessionLost;
// gRPC Unavailable (connection lost, no leader, request timed out) maps to
// backend.ErrConnectionLoss, wrapping the original error too; a done ctx is
// returned as ctx.Err(), wrapped.
package etcd
