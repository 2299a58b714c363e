// Package session is coordkit's unit of liveness: one connection with a lease
// (a ZooKeeper session, an etcd lease) on which every recipe takes its holds.
//
// # States
//
// A Session moves through Curator's states:
//
//		Connected ──► Suspended ──► Reconnected ──► Suspended ── …
//		                  │                              │
//		                  └──────────► Lost ◄────────────┘          (any) ──► Closed
//
//	  - Connected: the session is established (once, first).
//	  - Suspended: the client lost contact with the server. The session may
//	    still be alive on the server, or not: nobody can tell yet. ZooKeeper
//	    reports a disconnect after 2/3 of the session timeout without a
//	    reply; the etcd driver reports one when keepalive replies stall (by
//	    default half the TTL, at least TTL/3+800ms, at most 9/10 of it; see
//	    Bounds), before the lease runs out.
//	  - Reconnected: contact is back and the same session is alive.
//	  - Lost: the session is gone. Either the server said so (ZooKeeper
//	    Expired, etcd lease revoked or not found), or the session stayed
//	    Suspended for longer than the session timeout by the local timer — a
//	    partitioned ZooKeeper client hears of its expiry only after it
//	    reconnects, which is too late to stop a holder. Lost is terminal: a
//	    lost session never silently turns into a new one. Open a new Session.
//	  - Closed: Close was called. Terminal.
//
// # Loss policy
//
// Recipes take their holds with HoldContext. The ErrorPolicy decides which
// states end a hold. StandardPolicy (the default, Curator's standard policy)
// ends every hold on Suspended as well as on Lost: while the client cannot
// reach the server it cannot know that it still holds anything, and the
// server may expire the session from the session timeout after it last
// heard from the client. SessionPolicy ends holds only on Lost, trading
// safety for fewer spurious losses in short network blips. Closed always ends
// every hold.
//
// # Bounds (T is the session timeout)
//
//   - Suspended: ZooKeeper at most 2/3·T after the last server reply; etcd
//     at the etcd driver's suspend-after period (etcd.WithSuspendAfter; by
//     default T/2, at least T/3+800ms, at most 9/10·T) after the last
//     keepalive reply.
//   - Lost by the local timer: WithLostAfter (T by default) after
//     Suspended. Lost from the server: when the driver hears of it — for a
//     revoked etcd lease within one round trip (the driver watches a
//     session marker key); for an expired ZooKeeper session at reconnect.
//   - Holds under StandardPolicy end at Suspended, that is before the
//     server can expire the session. Under SessionPolicy they end at Lost,
//     which can be after the server expired the session.
//
// These bounds do not hold for a process that is paused (GC, swap,
// SIGSTOP): nothing in the process runs. Only fencing tokens protect a
// resource against a paused holder.
//
// # Signals
//
// Done, Err and Context report the end of the session the way a
// context.Context does. State changes also arrive through Changes (a
// channel) and OnStateChange (a callback), each delivered in order on a
// library goroutine, without loss: the queue behind each subscriber grows
// rather than drop an event, and the terminal event is always delivered.
package session
