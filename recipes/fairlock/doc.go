// Package fairlock is a strict-FIFO distributed lock on ZooKeeper or etcd:
// every Lock call takes its own place in one queue, and the lock is granted
// in the order the places were taken, across every process and every
// goroutine.
//
//	lk, err := fairlock.New(sess, "/locks/settlement")
//	...
//	g, err := lk.Lock(ctx)
//	if err != nil {
//		return err // ctx ended, the session was lost or closed, ...
//	}
//	defer g.Unlock(context.Background())
//	// Do the work under g.Context(): it is cancelled as soon as the lock
//	// may be gone, and g.Token() fences writes to shared resources.
//
// # Guarantee
//
// While the session lives and its connection holds, at most one Guard per
// path is live, and Guards are granted in creation order of their queue
// nodes. Each Guard carries a fencing token (Token) taken from the server's
// answer to the create that queued it: the ZooKeeper czxid or the etcd create
// revision of its node. Because grants follow creation order, tokens strictly
// increase from one holder to the next, across processes. A resource that refuses a token smaller than the largest it
// has seen is safe even against a holder that was paused (GC, swap, SIGSTOP)
// past its session timeout; Fence gives the guard for writes kept in the same
// backend (backend.Conn.GuardedSet).
//
// # Layout
//
// ZooKeeper: exactly Curator's InterProcessMutex. Each Lock creates an
// ephemeral sequential node <path>/_c_<uuid36>-lock-<10-digit sequence> in
// Curator's protected mode, below container parents, and a participant
// waits for the node just before its own (by the sequence after the last
// "lock-"). A Go service using this package and a Java service using
// Curator's InterProcessMutex on the same path therefore exclude each other
// and share one FIFO queue. Children whose name does not end in "lock-"
// followed by their sequence number are ignored (Curator would sort them by
// name and could stall).
//
// etcd: each Lock creates a key <path>/_c_<uuid36>-lock-<lease hex16>-<n>
// attached to the session's lease, and keys are ordered by create revision.
// Every direct child key of <path> takes part in the queue, whatever its
// name: this is how the lock coexists with etcd's own concurrency.Mutex,
// whose key for concurrency.NewMutex(s, path) is path+"/"+hex(lease). Both
// wait for the key created just before their own, so each excludes the other
// and both grant in create-revision order. (A key further below <path>, such
// as <path>/a/b, is not a participant here but blocks concurrency.Mutex,
// which takes every key under the prefix.) Do not keep other keys directly
// below a lock's path on etcd: they would take part as holders.
//
// The ZooKeeper sequence number of a node is its directory's cversion, a
// signed 32-bit counter that moves by one on every change of the child
// list: every create and every delete of a child. A queue node that comes
// and goes moves it by 2, and it wraps after 2^31 changes. The queue is
// ordered with serial-number arithmetic (backend.SeqLess, through
// backend.SortBySeq on the lock's own nodes only, so that foreign children
// cannot disturb it), which is correct across the wrap while the live nodes
// of one path span fewer than 2^31 child-list changes: from the create of
// the oldest live node to that of the newest, fewer than about 2^30 nodes
// may come and go. Beyond that the order is wrong, and a new node can be
// granted while the oldest still holds (see Limits). Container parents are
// removed by the server once empty, which restarts the counter. (Curator
// compares the suffix as a string and gets the order wrong after a wrap; a
// mixed Go and Java queue is only as good as Curator there.)
//
// # Waiting and failure
//
// A waiter watches only the node before its own and its own node, so a
// release wakes one waiter, not a herd; it lists the queue again after every
// wake-up. A Lock ends with an error, and leaves no node behind, when its ctx
// ends (the error wraps ctx.Err()), when the session's error policy says holds
// may be gone (session.StandardPolicy: suspended; the error matches
// coordkit.ErrSessionLost), when the session is lost or closed (it matches
// coordkit.ErrSessionLost or coordkit.ErrClosed), or when its own node is
// deleted by someone else while it waits (recipes.ErrWaiterDeleted, which,
// as every error of a Lock, does not match recipes.ErrLost). A Lock
// never succeeds on a session whose hold epoch ended between its create and
// its grant. Under session.StandardPolicy a Lock started while the session
// is suspended fails at once (call it again once the session has
// reconnected), and so does a Lock whose create is still on its way when the
// session is suspended (the node, if the create made one, is deleted once
// the create's outcome is known); under session.SessionPolicy it waits for the reconnect
// (a TryLock does not: it returns backend.ErrConnectionLoss at once).
//
// A held Guard ends — Done is closed, Err says why, Context is cancelled —
// when the session's policy says the hold may be gone, when the session is
// lost or closed, when its node is deleted or replaced by someone else (an
// operator, a server-side expiry the client has not heard of yet), or when
// it is unlocked. A lost Guard still needs Unlock, which deletes the node if
// it is still there and returns nil.
//
// # Limits
//
//   - No lease-based lock gives mutual exclusion by itself. When the
//     connection fails, the holder learns within the bounds documented in
//     package session that the lock may be gone, but a process that is
//     paused learns nothing until it runs again, and by then another holder
//     may have the lock. Without fencing tokens checked by the resource, a
//     lock is only an efficiency aid.
//   - Under session.SessionPolicy a holder keeps its Guard through a
//     disconnect, and learns that the server expired its session only when
//     the local timer declares the session lost, which can be after the
//     server granted the lock to someone else.
//   - On ZooKeeper, a hold must not outlast about 2^30 other nodes coming
//     and going in its directory (2^31 changes of the child list, see
//     Layout): each TryLock that finds the lock taken and each Lock that
//     gives up while it waits creates and deletes a node, moving the
//     counter by 2. One long hold probed by 10,000 TryLock calls a second
//     reaches the limit in about 30 hours, after which a TryLock or Lock
//     can be granted while the hold lasts. A Lock that waits instead moves
//     the counter once while the hold lasts. This is a
//     limit of ZooKeeper's sequential nodes that Curator's
//     InterProcessMutex shares (it goes wrong as soon as the counter wraps
//     with nodes live on both sides). etcd's create revisions are 64-bit
//     and do not wrap.
//   - The lock is not reentrant: a second Lock from the same process, even
//     from the goroutine that holds the lock, queues behind the first and
//     waits for it to be unlocked (a self-deadlock if the holder waits for
//     it). Goroutines of one process that want to share a lock cheaply
//     should use package mutex.
//   - Each Lock costs one CreateAndList, one round trip (on ZooKeeper: a
//     multi of the create and an empty setData of the lock's directory,
//     whose mzxid is the new node's czxid, with the listing pipelined behind
//     it, so the directory holds no data; on etcd: one Txn); a waiter adds a watch of its predecessor and one of its own
//     node, and one listing per wake-up. A granted Guard watches its node
//     from the first call of its Done, Err or Context (one read and one
//     watch, in the background): a holder that never asks pays nothing for
//     it, and one that asks learns of a deletion that happened before it
//     asked. Unlock costs one delete. A
//     waiter whose node is deleted by someone else fails rather than
//     joining the queue again.
package fairlock
