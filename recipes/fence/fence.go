// Package fence helps a lock holder write only while it still holds.
//
// A lease-based lock cannot stop a paused holder (GC, swap, SIGSTOP) from
// writing after its session expired and someone else took the lock. What
// stops it is the resource refusing the write. Every coordkit grant carries
// what the resource needs for that:
//
//   - For data kept in the same backend as the lock, Set writes only if the
//     grant is still current on the server (its node is still there, and
//     still the grant's), in the same server transaction (a ZooKeeper multi
//     with check ops, an etcd Txn with compares): see Set.
//   - For an external resource (a database row, a file, an API), the
//     resource itself must remember the largest fencing token it has seen
//     and refuse smaller ones. Register is that pattern in a few lines, in
//     process; a real resource stores the token next to the data (a column
//     compared in the UPDATE's WHERE clause, an object's metadata, ...).
//
// Tokens order grants of one lock path: compare tokens of one path only.
package fence

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/recipes"
)

// ErrStale is returned by Set when the hold is no longer current: it has
// ended locally (released or lost), or the server found its node gone or
// replaced. Nothing was written. The error Set returns also matches why:
// recipes.ErrReleased or recipes.ErrLost (see Set).
var ErrStale = errors.New("fence: the hold is no longer current")

// Set writes data to the node at path, of the same backend as held, only if
// held is still current: its Err is nil here, and its Fences hold on the
// server in the same transaction as the write (backend.Conn.GuardedSet).
// version is the node's expected version (backend.AnyVersion for any), as in
// backend.Conn.Set.
//
// When the hold is not current, nothing is written and the error matches
// ErrStale and the hold's Err: recipes.ErrReleased after Unlock, an error
// matching recipes.ErrLost after a loss. When the server refused the write
// (the hold's node is gone or replaced although the hold had not heard of
// it yet) it matches ErrStale, recipes.ErrLost and backend.ErrGuardFailed;
// when conn is the holder's own connection (a Guard of recipes/mutex or
// recipes/fairlock tells its session's id) and reports the session ended
// (expired or closed) before the hold has heard of it, it matches ErrStale,
// recipes.ErrLost and that reason (coordkit.ErrSessionLost or
// coordkit.ErrClosed); another connection's end is returned as the
// backend's error. Other errors are the backend's: backend.ErrNoNode
// if path does not exist, backend.ErrBadVersion for a version mismatch, and
// so on. conn should be the connection of the session that holds (any
// connection to the same backend works for the check, and a holder whose
// session expired cannot write through its own; see package recipes/mutex
// for what the check can and cannot see on ZooKeeper).
func Set(ctx context.Context, conn backend.Conn, held recipes.Held, path string, data []byte, version int64) (backend.Node, error) {
	if conn == nil || isNil(held) {
		return backend.Node{}, fmt.Errorf("fence: set %s: nil connection or hold: %w", path, coordkit.ErrInvalidArgument)
	}
	if err := held.Err(); err != nil {
		return backend.Node{}, fmt.Errorf("fence: set %s: %w (%w)", path, ErrStale, err)
	}
	n, err := conn.GuardedSet(ctx, held.Fences(), path, data, version)
	if errors.Is(err, backend.ErrGuardFailed) || holdersSessionEnded(conn, held, err) {
		// Refused, or the holder's session has ended (its connection can
		// know before the session and the hold do): stale either way.
		if herr := held.Err(); herr != nil {
			// Ended meanwhile (an Unlock on another goroutine, say).
			return backend.Node{}, fmt.Errorf("fence: set %s: %w (%w): %w", path, ErrStale, herr, err)
		}
		return backend.Node{}, fmt.Errorf("fence: set %s: %w (%w): %w", path, ErrStale, recipes.ErrLost, err)
	}
	if err != nil {
		return backend.Node{}, fmt.Errorf("fence: set %s: %w", path, err)
	}
	return n, nil
}

// holdersSessionEnded reports whether err says that the session of conn has
// ended and conn is the holder's own connection (held tells its session's
// id, as the Guards of recipes/mutex and recipes/fairlock do). The end of
// another session says nothing of the hold.
func holdersSessionEnded(conn backend.Conn, held recipes.Held, err error) bool {
	if !errors.Is(err, coordkit.ErrSessionLost) && !errors.Is(err, coordkit.ErrClosed) {
		return false
	}
	s, ok := held.(interface{ SessionID() string })
	return ok && s.SessionID() == conn.SessionID()
}

// isNil reports whether held is nil or a nil pointer (a Guard variable left
// nil by a failed Lock).
func isNil(held recipes.Held) bool {
	if held == nil {
		return true
	}
	v := reflect.ValueOf(held)
	return v.Kind() == reflect.Pointer && v.IsNil()
}

// ErrStaleToken is returned by Register.Store when the token is smaller than
// the largest the register has seen: a holder that lost its lock tried to
// write after a newer holder did. Nothing was written.
var ErrStaleToken = errors.New("fence: stale fencing token")

// Register is a fenced value: the pattern an external resource follows to
// be safe against a paused lock holder, as a small in-process type (for
// tests, demos, and as a reference). It keeps the largest fencing token any
// write carried and refuses writes with a smaller one; an equal token is
// accepted, since one holder writes many times with its token (and the
// goroutines of one process share their process's token, see package
// recipes/mutex).
//
// A new holder must write (or call Admit) before a stale holder's write can
// be refused: the register knows only the tokens it has seen. The zero value
// holds the zero T and has seen no token. A Register is safe for concurrent
// use.
type Register[T any] struct {
	mu       sync.Mutex
	value    T
	highest  int64
	accepted int
	refused  int
}

// NewRegister returns a register holding v.
func NewRegister[T any](v T) *Register[T] { return &Register[T]{value: v} }

// Load returns the value and the largest token seen so far.
func (r *Register[T]) Load() (T, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.value, r.highest
}

// Store writes v if token is at least the largest token seen, and records
// token. Otherwise it writes nothing and returns an error matching
// ErrStaleToken that names both tokens.
func (r *Register[T]) Store(token int64, v T) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.admitLocked(token); err != nil {
		return err
	}
	r.value = v
	return nil
}

// Admit records token as Store does, without writing: a new holder calls it
// first to shut out every older one at once.
func (r *Register[T]) Admit(token int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.admitLocked(token)
}

func (r *Register[T]) admitLocked(token int64) error {
	if token < r.highest {
		r.refused++
		return fmt.Errorf("%w: token %d < %d already seen", ErrStaleToken, token, r.highest)
	}
	r.highest = token
	r.accepted++
	return nil
}

// Counts returns how many writes (Store and Admit) were accepted and
// refused.
func (r *Register[T]) Counts() (accepted, refused int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted, r.refused
}
