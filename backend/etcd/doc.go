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
// is 0 (it does not exist) and reads it back in the same transaction. With
// CreateOptions.Ephemeral the key is attached to the session's lease. With
// CreateOptions.Sequential the suffix
//
//	fmt.Sprintf("%016x-%d", leaseID, n)
//
// is appended to the last element, where n counts the sequential creates of
// the Conn from 1; it makes the name unique to the session and the call, and
// siblings are ordered by create revision, not by name. With
// CreateOptions.Protected the last element is prefixed with
// "_c_<uuid>-" (Curator's protected mode). A protected or sequential create
// whose reply is lost to a connection failure is retried a few times with the
// same key; since the Txn only puts a key that does not exist, a retry finds
// the node the lost attempt made instead of creating a second one.
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
//     TTL/3+600ms because the client sends a keepalive every TTL/3 on a
//     500ms tick). The lease may still be alive on the server.
//   - StateReconnected is sent on the next keepalive reply after that.
//   - StateExpired is sent when the marker key is deleted (the lease was
//     revoked or expired on the server: the watch reports it within one round
//     trip), when the server answers a keepalive or a write with "lease not
//     found", or when no keepalive reply has arrived for a whole TTL since
//     the last one (or since the grant). By then the server has expired the
//     lease, unless a leader change extended it, and etcd's client stops
//     refreshing it anyway. Deleting the marker key by hand ends the session
//     too. After expiry the driver stops refreshing the lease and revokes it,
//     best effort, so ephemeral keys do not linger.
//   - StateClosed is sent by Conn.Close, which revokes the lease (deleting
//     the session's ephemeral keys and the marker at once).
//
// Events are buffered without bound and the terminal event (StateExpired or
// StateClosed) is always delivered before the channel is closed. After expiry
// every call fails with coordkit.ErrSessionLost, after Close with
// coordkit.ErrClosed.
//
// # Watches
//
// Conn.Watch reads the key and watches it from the read's revision + 1, so no
// change after the read is missed; WatchChildren does the same for the
// "P/" prefix and fires only when a direct child is created or deleted.
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
