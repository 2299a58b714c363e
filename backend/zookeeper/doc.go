// Package zookeeper is the ZooKeeper driver of coordkit's backend seam: it
// implements [backend.Driver] and [backend.Conn] on
// github.com/go-zookeeper/zk. Each Conn is one ZooKeeper session on its own
// go-zookeeper client.
//
// # Session states
//
// go-zookeeper reports TCP and session states; the driver maps them once the
// session exists:
//
//   - StateConnected: go-zookeeper's first StateHasSession. Open returns
//     after it (and after go-zookeeper's "authenticated" log line, which is
//     where the negotiated session timeout reported by Conn.Timeout comes
//     from).
//   - StateDisconnected: go-zookeeper's StateDisconnected (the TCP
//     connection broke). The session may still be alive on the server;
//     go-zookeeper reconnects and resends the session's watches.
//   - StateReconnected: StateHasSession again, with the same session id.
//   - StateExpired: go-zookeeper's StateExpired, which it reports only after
//     reconnecting to a server that no longer knows the session. Terminal.
//   - StateClosed: Conn.Close. Terminal.
//
// Conn.SessionID and Node.Owner are the session id and the ephemeralOwner
// formatted the same way: lower-case hex of the unsigned 64-bit id.
//
// # A lost session is never replaced
//
// After reporting StateExpired, go-zookeeper would reconnect with a brand
// new session and send on it any request still queued, so an ephemeral
// node could be recreated under a session nobody watches. The driver
// prevents it: go-zookeeper calls the driver's event callback synchronously
// before it dials again, and the callback marks the Conn expired and makes
// the driver's dialer wrapper refuse every later dial. Every call on the
// Conn then fails with coordkit.ErrSessionLost (a request still in flight
// fails the same way), its watches fire EventLost, and the driver closes the
// go-zookeeper client. Open a new Conn to go on.
//
// Close sends closeSession (the server deletes the session's ephemeral nodes
// at once), waits for go-zookeeper's goroutines, sends StateClosed and closes
// Events. While Close runs, go-zookeeper may still reconnect to deliver
// closeSession (to the same session: it never starts a new one once closing);
// when Close's ctx ends first, the dialer refuses and the TCP connection is
// cut, and Close returns ctx's error. go-zookeeper's Close reports nothing,
// so the Conn watches the wire for the server's answer to closeSession: a
// Close without one (the client was cut off, the connection went silent or
// broke) returns backend.ErrConnectionLoss: the server may keep the
// session, and its ephemeral nodes, until it times out.
// After Close every call fails with coordkit.ErrClosed.
//
// # Events
//
// Events is a channel with a buffer of 64 events; beyond that, events wait
// in an unbounded queue fed to the channel by a goroutine that exists only
// while the reader lags, so neither go-zookeeper's loop nor the driver ever
// blocks on a slow reader and no event is dropped (until Driver.Close,
// which drops what nobody has read beyond the buffer).
//
// # Calls, contexts and errors
//
// Paths and data are validated before any network I/O. go-zookeeper has no
// contexts: each call runs on a goroutine of the Conn, and the caller
// returns when it answers or when ctx is done. Such a goroutine ends when
// the server answers or the connection breaks, and Close waits for it.
// go-zookeeper's errors map to the seam's: ErrNoNode, ErrNodeExists,
// ErrBadVersion and ErrNotEmpty to their backend counterparts; a request
// in flight when the connection broke (zk.ErrConnectionClosed,
// zk.ErrNoServer) to backend.ErrConnectionLoss; zk.ErrSessionExpired and
// any failure after expiry to coordkit.ErrSessionLost; zk.ErrClosing and
// any call after Close to coordkit.ErrClosed. The go-zookeeper error is
// wrapped too.
//
// # Nodes
//
//   - Token is the node's czxid, Version its data version, Owner its
//     ephemeralOwner (formatted as SessionID; "" for a persistent node).
//   - A non-sequential Create is one round trip: a multi of create (without
//     data) and setData (the data, version 0), whose result carries the new
//     node's Stat; the new node therefore has Version 1. A sequential Create
//     is a create followed by an Exists of the new node for its Stat (two
//     round trips). CreateAndList is one round trip: a sequential node is
//     created in a multi with an empty setData of its parent (every op of a
//     multi shares one zxid, so the parent's mzxid is the new node's czxid;
//     a queue directory holds no data), and the listing of the parent is
//     sent right behind the create, from a goroutine started just before
//     it: go-zookeeper pipelines the two on the connection and the server
//     answers a session's requests in order, so the listing sees the new
//     node. CreateAndWatch sends an ExistsW behind the create the same way.
//     Each checks the read it got (the listing holds the node; the ExistsW
//     saw its czxid) and reads again in the rare case it did not.
//   - CreateStamped (backend.ParentStamps) is one multi: the create (with
//     its data: the node has Version 0), the create of its pin (an ephemeral
//     sibling named by backend.PinPath) and an empty setData of the parent,
//     whose Stat gives the token (mzxid) and the stamp (the parent's
//     version). DeleteStamped is one multi: check the parent's version,
//     delete the pin, delete the node; a failed check or a missing pin is
//     backend.ErrGuardFailed. A parent the session may not write (NoAuth on
//     the setData, nothing created) makes CreateStamped return
//     backend.ErrNoStamp from then on, and queue joins read their token.
//   - Missing parents are created as container nodes (the server deletes a
//     container once it has had children and is empty again, which also
//     resets its sequence counter). Create retries, a bounded number of
//     times, when a parent disappears between the two steps.
//   - Protected names are "_c_" + a canonical UUID (36 characters) + "-" +
//     the name, exactly Curator's protected mode, so Curator recognises them.
//   - The sequence suffix is ZooKeeper's %010d of the parent's signed 32-bit
//     counter. It is parsed into Node.Seq including negative values after
//     the counter wraps ("-2147483648"); see parseSeq for the one ambiguous
//     band. Children sorts sequential names with backend.SortBySeq (a total
//     order that agrees with backend.SeqLess while they span less than
//     2^31), then the other names by name.
//
// # Lost create replies
//
// When a create fails with a connection loss the driver waits until the
// session is reconnected (or ctx ends, or the session expires), syncs the
// server it now talks to with the leader (it may be another member of the
// ensemble, behind the one that applied the create), and then: for a
// protected node, lists the parent and takes the child with exactly its
// own "_c_<uuid>-" name (plus a sequence suffix if sequential; never the
// pin of a stamped create, which starts with the same prefix) as its node;
// for a non-protected ephemeral node with a fixed path, reads the path and
// takes the node as its own if the owner is this session. If no node is
// found the create is retried. Other creates return
// backend.ErrConnectionLoss. If the caller's ctx ends while a create's
// outcome is unknown or after it succeeded but before Create returns, the
// driver deletes the node in the background (as long as the session
// lives), so a failed Create leaves nothing behind.
//
// Since a fixed-path node is told apart only by its owner, creates of one
// fixed path on one Conn take turns: each holds the path from before it is
// sent until its outcome is known, also when that is found out in the
// background after its caller gave up. A later create of the path waits
// (bounded by its ctx), so neither takes the other's node for its own, and
// the background delete of a failed create never removes the node of a
// later one.
//
// # Watches
//
// Watch uses GetW, or ExistsW when the node does not exist (the watch then
// fires when it is created). WatchChildren uses ChildrenW; when the parent
// does not exist the listing is empty and an ExistsW on the parent fires
// EventChildren when it appears. ZooKeeper events map to EventCreated,
// EventChanged, EventDeleted and EventChildren; go-zookeeper's
// EventNotWatching (session expired, client closed) maps to EventLost with
// coordkit.ErrSessionLost or coordkit.ErrClosed. A child watch also fires
// EventChildren when the parent is deleted (an empty container parent is
// deleted by the server). Stop delivers EventLost ("zookeeper: watch
// stopped") if nothing was delivered yet. go-zookeeper cannot remove a watch
// from the server, so a stopped watch stays registered there until it fires;
// the driver's goroutine for it ends at once.
//
// # GuardedSet
//
// GuardedSet is one multi of a check op per guard and a setData. ZooKeeper
// cannot compare a czxid in a multi, so a guard's Token is not compared:
// the guard holds if the node exists with the guard's version (any version
// for backend.AnyVersion). Such a guard is exact for a node that is never
// re-created at the same path, such as a sequential or protected node.
package zookeeper
