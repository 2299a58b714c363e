// Package mutex is coordkit's everyday distributed lock: exclusive across
// processes, fast when uncontended, and cheap when many goroutines of one
// process want it.
//
//	m, err := mutex.New(sess, "/locks/inventory")
//	g, err := m.Lock(ctx)
//	if err != nil { ... }
//	defer g.Unlock(context.Background())
//	// work under g.Context(); pass g.Token() to the resource you write
//
// # The process is the unit
//
// All goroutines that lock the same path on the same *session.Session share
// one distributed acquisition, whether they use one *Mutex or several (New
// may be called per request: Mutexes on one session and path share their
// state). The first Lock takes the lock on the server; while it is held,
// further Lock calls of the process wait in a local FIFO queue, and Unlock
// passes the lock to the next of them without any server round trip. Only
// the last local Unlock releases it on the server. Goroutines of one process
// therefore never herd on the server: the process has at most one queue entry
// and one watch per path. A Lock on a path no other goroutine of the process
// is using (the uncontended case) does its server work on its own goroutine,
// with nothing else to coordinate with; the local queue comes into being
// when a second goroutine arrives, and takes the acquisition over.
//
// Two sessions in one process are two processes as far as the lock is
// concerned: they exclude each other through the server.
//
// # Layout
//
// For a lock at path P (identical on ZooKeeper and etcd; on ZooKeeper P and
// P/queue are container nodes, created on demand and reaped by the server
// once empty):
//
//	P/owner                               the holder: an ephemeral node of the
//	                                      holding session. Empty data while
//	                                      nobody else waits; "contended" once
//	                                      the first waiting process has marked it.
//	P/owner-pin-<session>-<n>             ZooKeeper only: the holder's pin, an
//	                                      ephemeral node created and deleted
//	                                      with P/owner (see below)
//	P/queue/_c_<uuid36>-waiter-<seq>      one ephemeral, sequential, protected
//	                                      node per waiting process (ZooKeeper
//	                                      sequence number; on etcd the driver's
//	                                      suffix, ordered by create revision)
//
// Uncontended, an acquisition is one create of P/owner and the release is
// one delete: two round trips in all, one fewer than Curator's
// InterProcessMutex (create, getChildren, delete), and no read.
//
// The release must delete our P/owner and never a newer one: if an
// operator deleted our node and another process took the lock, a delete of
// its node would let a third process in while it holds. On etcd the delete
// is conditional on the mod revision, which no other incarnation of P/owner
// can have. On ZooKeeper every P/owner starts at the same data version, so
// a version cannot tell them apart; there the create is stamped
// (backend.ParentStamps): one multi that creates P/owner and its pin and
// writes P (no data), whose Stat gives P/owner's czxid (the token) and P's
// new version. The release is one multi too: it checks that P still has that
// version, and deletes the pin and P/owner. Every create of P/owner writes P,
// so P's version moves if anyone created P/owner after ours; the pin keeps
// P from being reaped, and is gone if P was deleted and made again (which
// restarts its version). So the release deletes nothing but our own node,
// with no window. When the stamp fails, the release reads P/owner and
// deletes it only if its czxid is our token (and removes the pin). If P
// cannot be stamped (an ACL on P without WRITE), the create arms a watch on
// P/owner instead, sent right behind it (backend.Conn.CreateAndWatch), and
// the release deletes by version only while that watch is silent, else
// reads first; one window is left there: an operator deletes our node and
// another process creates a new one within about a round trip before our
// delete. (The stamp is exact as long as every create of P/owner is
// stamped: if some sessions may write P and others may not, a stale release
// of a stamping session could remove an owner node created by one that does
// not. Give every session of a lock the same rights on P.) (The Guard's own watch of P/owner, see "Loss", is armed only when
// its Done, Err or Context is first called, in the background.) A queued
// acquisition costs more: joining the queue, marking and watching P/owner,
// the create, and deleting the queue node after the grant.
//
// # Contention between processes (no herd)
//
// A process whose create of P/owner fails because the node exists joins the
// queue under P/queue. Each queued process watches only the queue node
// created just before its own; only the head of the queue watches P/owner.
// The head first marks P/owner as contended (a conditional setData), then
// waits for it to go, then creates it. So a release wakes exactly one
// process, and the requests and watch notifications per handoff do not grow
// with the number of waiting processes.
//
// The mark tells the holding process that somebody waits: its release (a
// delete conditional on the version it created) then fails with a version
// mismatch, it deletes the node by its current version (on ZooKeeper still
// under the stamp, which proves the node is ours), and its next acquisition
// queues behind the others instead of racing them for P/owner.
// A process that has not seen contention tries P/owner directly first; it can
// overtake the head only in the instant between a delete and the head's
// create, and after one such acquisition it sees the mark and queues too.
// The process remembers what its last release of a path saw for a minute,
// also when no goroutine of it uses the path in between (one goroutine that
// locks and unlocks in a loop): a release that found a waiter makes the
// next acquisition queue.
//
// A create that finds P/owner already there might find a node of this
// very session, left over: a create whose reply was lost, or a delete that
// failed. Queueing behind it would wait forever (the head of the queue
// would wait for it to go), so when the process has such a doubt it reads
// P/owner first and removes the node if it is its own. An attempt that gives
// up with that doubt (a TryLock whose create got no reply, a Lock whose ctx
// ended before the outcome was known) leaves the removal to the background:
// nobody holds such a node, and it would keep every other process waiting
// for as long as the session lives. Until it is done (retried after
// connection losses, until the session ends), Inspect reports Finishing,
// the process's next Lock of the path waits for it, and a TryLock returns
// recipes.ErrLocked.
//
// # Fairness bound
//
// Within a process, waiting goroutines are served in FIFO order. Across
// processes: a process hands the lock locally at most WithMaxLocalHandoffs
// (default DefaultMaxLocalHandoffs) times in a row; then, if more local
// goroutines wait, it reads P/owner (one round trip) and, if another process
// has marked it, releases the lock on the server and queues its remaining
// goroutines behind that process. So once another process waits at the head
// of the queue, the holding process runs at most n+1 more critical sections
// before it lets go. With no other process waiting, the read finds no mark
// and local handoffs go on.
//
// # Fencing tokens
//
// Guard.Token is the czxid (ZooKeeper) or create revision (etcd) of P/owner,
// from the create that took the lock. Every acquisition by any session creates
// a new P/owner, so a lock that passes to another session (or is taken again
// by this one after a release) always carries a larger token. Local handoffs
// keep the token of the process's acquisition: the token fences processes,
// not goroutines. A fresh, larger token per local handoff would need a server
// write per handoff (on ZooKeeper only a create or a setData yields a new
// zxid), which is exactly the round trip local handoff avoids; goroutines of
// one process must be ordered by the process itself (they are: the Mutex
// excludes them locally).
//
// Guard.Fences returns the guards for writes to data kept in the same
// backend (see package recipes/fence). On etcd it is one: P/owner with the
// token's create revision. On ZooKeeper a multi cannot compare a czxid, and
// P/owner's path and data version are the same for every acquisition, so
// P/owner's existence (Guard.Fence, at backend.AnyVersion since waiting
// processes change its data) says nothing of whose it is: a holder that has
// released (its session still alive, a write of a goroutine that was
// paused) would pass it while the next process holds. Fences adds the stamp
// of the acquisition's create, P at the version that create gave it (every
// later create of P/owner moves it), and the acquisition's pin, which goes
// with this acquisition's release and keeps P from being reaped and made
// again (which would restart its version). Together they hold exactly while
// no other acquisition has taken place since this one and it is not
// released. Where the stamp is unknown (a lost create reply) or P cannot be
// stamped (no WRITE on P), Fences is P/owner's existence only, with the
// window just described.
//
// # Loss
//
// Every Guard has Done, Err and Context (recipes.Held). They end with
// recipes.ErrReleased at Unlock or local handoff; with an error matching
// recipes.ErrLost when the acquisition is lost: the session's error policy
// ends its holds (by default on Suspended, see package session), the session
// is lost or closed, or P/owner is deleted or replaced by someone else
// (recipes.ErrNodeDeleted). When the session's policy ends its holds, the
// Guard's Done, Err and Context end in that same call (its context is a child
// of the session's HoldContext), so no Guard of a closing session still looks
// held once its nodes are deleted. A loss ends the Guard of whichever local
// goroutine holds at that moment; the acquisition is never handed to another
// local goroutine after it is lost. The lost holder still excludes the other
// goroutines of its process until it calls Unlock, which deletes P/owner if
// it is still there (after a reconnect) and lets the next local waiter
// acquire anew, with a new token. While the session is suspended, waiting
// Lock calls go on waiting (bounded by their context) and retry once it
// reconnects; when the session is lost or closed they return an error
// matching coordkit.ErrSessionLost or coordkit.ErrClosed.
//
// A partitioned holder learns of it through the session: with the default
// policy its Guard ends when the connection is suspended, before the server
// can expire the session and let another process in. A paused process (GC,
// SIGSTOP) learns nothing until it runs again: only fencing tokens protect a
// resource against it. Without fencing, any lease-based lock is only an
// efficiency aid.
package mutex
