// Package memory is an in-process backend.Driver with fault injection, for
// fast, deterministic unit tests of sessions and recipes. It passes the
// conformance suite of backend/backendtest.
//
// # Model
//
// The store follows ZooKeeper's semantics, the stricter of the two real
// backends:
//
//   - A tree of nodes. Missing parents are created as container nodes, which
//     are removed as soon as their last child goes (ZooKeeper removes them
//     later, from a periodic check). An ephemeral node cannot have children.
//   - A global transaction counter (zxid). Node.Token is the node's czxid.
//   - Sequential names carry the parent's int32 child-version counter
//     formatted %010d, as ZooKeeper does: it counts every child created and
//     deleted, so sequence numbers have gaps, and it wraps from 2147483647 to
//     -2147483648 ("-2147483648"). SetNextSequence moves it, so a test can
//     cross the wrap without 2^31 creates and deletes. Node.Seq is the
//     number the driver wrote; nodes created without Sequential have
//     Sequential false even if their name ends in digits.
//   - Node.Version is ZooKeeper's data version, +1 per Set. Every create
//     gives 0 here. The ZooKeeper driver's differ: a non-sequential Create,
//     CreateAndWatch or CreateAndList gives 1 (it is a multi of a create
//     and a setData); a sequential one, and CreateStamped, give 0. So pass
//     back the Version a create returned; never assume 0.
//   - A Guard's Token is compared exactly (unlike ZooKeeper, which can only
//     check the version).
//   - Children lists sequential nodes in creation order, then the others by
//     name.
//   - Watches are one-shot, as in ZooKeeper. Session ids are lower-case hex.
//
// # Sessions
//
// Events are queued synchronously: when a call or a fault injection
// returns, its state event is already in the channel (a goroutine takes over
// only beyond 64 unread events), so a test can check for the absence of an
// event without waiting. Watch events are delivered the same way, and a
// stopped Watch never delivers. Close ends the session at once whatever its
// ctx says; a Conn closed while disconnected is closed locally, returns
// backend.ErrConnectionLoss, and its session lives on the server until it
// times out or is expired, as with a real client that cannot reach the
// server. Driver.Close drops state events that nobody has read beyond the
// channel's buffer.
//
// # Faults
//
// The Driver injects faults into a session, addressed by its
// Conn.SessionID: Disconnect and Reconnect (the session times out on the
// server TTL after the disconnect, by the Driver's clock), Expire,
// FailNextReply (a write is applied but its reply is lost), and Stall and
// Unstall (the server stops answering: calls wait, and are served when it
// answers again; Stalled tells how many wait). Stats counts requests and
// watch notifications, so a recipe test can show that a handoff wakes one
// waiter, not a herd.
//
// # Limits
//
// Everything happens under one mutex, at once: there is no latency, no
// partial failure inside a call, no server-side request queue, and a ctx
// matters only if it is already done when a call starts, or while the call
// is held by Stall. Requests are never
// reordered. A Driver is one isolated store: two Drivers share nothing.
package memory
