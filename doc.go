// Package coordkit is a library of distributed coordination recipes that run
// on Apache ZooKeeper or on etcd through one small backend seam. It has two
// locks today, recipes/mutex and recipes/fairlock, with fencing helpers in
// recipes/fence; read-write locks, semaphores, latches and leader election
// are planned on the same machinery.
//
// The packages, from the bottom up:
//
//   - backend: the seam. A narrow interface ([backend.Driver], [backend.Conn])
//     with drivers for ZooKeeper (backend/zookeeper), etcd (backend/etcd) and
//     an in-memory store with fault injection for unit tests (backend/memory),
//     plus a conformance suite every driver passes (backend/backendtest).
//   - session: a connection with a lease (a ZooKeeper session, an etcd lease)
//     whose state changes — connected, suspended, reconnected, lost, closed —
//     reach the user as callbacks, channels and a context.
//   - recipes: one package per recipe, written once against the seam.
//
// # What coordkit guarantees, and what it does not
//
// No lease-based lock gives mutual exclusion on its own: a holder can be
// paused (GC, swap, SIGSTOP) past its session timeout while the server hands
// the lock to somebody else. What coordkit promises is that a holder learns
// within a documented bound that its hold may be gone (unless the process
// itself is paused), and that every grant carries a fencing token that only
// grows, so a resource that refuses tokens smaller than the largest it has
// seen is safe even against a paused holder.
//
// This package holds the sentinel errors shared by every layer; each package
// adds its own.
package coordkit
