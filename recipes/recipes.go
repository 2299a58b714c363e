// Package recipes holds what every coordkit recipe shares: the Held contract
// of a grant (a lock guard, a permit, a leadership) and the sentinel errors
// that are not specific to one recipe. Each recipe lives in its own package
// below this one (recipes/fairlock, recipes/mutex, ...).
//
// # The contract of a grant
//
// Every grant carries a fencing token that only grows: the ZooKeeper czxid or
// the etcd create revision of the node that decided the grant, taken from the
// same server response. A resource that refuses a token smaller than the
// largest it has seen is safe even against a holder that was paused past its
// session timeout.
//
// Every grant also says when it may be gone: Done is closed, Err tells why
// and Context is cancelled (with that cause) as soon as the session's error
// policy says the hold may be gone (by default when the connection is
// suspended), when the holder's node is deleted or replaced by someone else,
// or when the holder releases it. When the session's policy ends a hold,
// Done, Err and Context have all reported it by the time the session's call
// that ended its HoldContext returns (a grant's context derives from it; Err
// reports it from the moment HoldContext's Err does): so the session's Close,
// say, has ended every grant before it deletes the session's nodes.
// Session-driven ends cost nothing per grant. Noticing the node's deletion
// needs a read and a watch on the server, so a grant arms that watch the
// first time Done, Err or Context is called (and reports a deletion that
// happened before): a holder that never asks pays only for its create and its
// delete. Without fencing, a critical section can still overlap another: a
// lock is then only an efficiency aid.
package recipes

import (
	"context"
	"errors"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
)

// Held is what every grant returns.
type Held interface {
	// Done is closed when the hold ends or may have ended.
	Done() <-chan struct{}
	// Err is nil while the hold lasts; afterwards why it ended: ErrReleased,
	// or an error matching ErrLost (and coordkit.ErrSessionLost or
	// coordkit.ErrClosed when the session is the reason, ErrNodeDeleted
	// when the node went away).
	Err() error
	// Context is cancelled when Done is closed; its cause is Err.
	Context() context.Context
	// Token is the grant's fencing token.
	Token() int64
	// Fence returns the condition on this grant's node (its path, token
	// and version). For guarded writes use Fences, which may need more.
	Fence() backend.Guard
	// Fences returns the conditions that together hold exactly while this
	// grant is current, for guarded writes to data kept in the same backend
	// (backend.Conn.GuardedSet: a ZooKeeper multi with check ops, an etcd
	// Txn with compares; fence.Set passes them all). For most grants it is
	// Fence alone; where the backend cannot compare the node's token in a
	// transaction and the node's path is used again (the mutex's owner node
	// on ZooKeeper) it adds conditions that tell this grant's node from a
	// later one: see the recipe's documentation.
	Fences() []backend.Guard
}

// Sentinel errors shared by the recipes.
var (
	// ErrLost: a hold ended without its holder releasing it (session
	// suspended or lost, node deleted). Errors that match it also match the
	// specific reason. It is coordkit.ErrHoldLost, the cause of a session's
	// HoldContext. An error from a Lock or TryLock never matches it: a call
	// that got no hold wraps the reason alone (session.HoldEndReason).
	ErrLost = coordkit.ErrHoldLost
	// ErrNodeDeleted: the holder's node was deleted, or replaced by another
	// incarnation, by someone other than the holder (an operator, a session
	// expiry the client has not heard of yet). Matches ErrLost.
	ErrNodeDeleted = lostBecause("the holder's node was deleted")
	// ErrWaiterDeleted: a Lock's own queue node was deleted by someone else
	// (an operator) while it waited, so the Lock got nothing. It does not
	// match ErrLost: no hold was lost.
	ErrWaiterDeleted = errors.New("recipes: the waiting call's node was deleted by someone else")
	// ErrLocked: TryLock found the lock held by someone else.
	ErrLocked = errors.New("recipes: locked by another holder")
	// ErrReleased: the hold was released: Err after Unlock, or a second
	// Unlock.
	ErrReleased = errors.New("recipes: already released")
)

type lostError struct{ msg string }

func lostBecause(msg string) error        { return &lostError{msg} }
func (e *lostError) Error() string        { return "coordkit: hold lost: " + e.msg }
func (e *lostError) Is(target error) bool { return target == ErrLost }
