package coordkit

import "errors"

// Shared sentinel errors. Every layer wraps these with %w, so callers test for
// them with errors.Is whatever package returned the error.
var (
	// ErrInvalidPath is returned, before any network call, for a path that is
	// empty, relative, ends in "/", has empty, "." or ".." components,
	// contains NUL, control or non-UTF-8 characters, lies in the reserved
	// /zookeeper tree, or is longer than the limit. The concrete error is a
	// *PathError naming the path and the reason.
	ErrInvalidPath = errors.New("coordkit: invalid path")

	// ErrInvalidArgument is returned, before any network call, for an
	// argument other than a path that cannot be used: a nil session or
	// context, a count or limit that is not positive, data over the size
	// limit, a non-positive timeout.
	ErrInvalidArgument = errors.New("coordkit: invalid argument")

	// ErrSessionLost means the session (ZooKeeper session, etcd lease) is
	// gone or may be gone: the server expired it, the local timer declared it
	// lost, or (under the default policy) the connection was suspended. Every
	// ephemeral node and every hold tied to the session must be presumed
	// gone. A lost session is never silently replaced by a new one.
	ErrSessionLost = errors.New("coordkit: session lost")

	// ErrClosed means the session or driver was closed by its owner.
	ErrClosed = errors.New("coordkit: closed")

	// ErrHoldLost means a hold (a lock, a permit, a leadership) ended, or
	// may have ended, without its holder releasing it: the session's policy
	// ended it (a suspension, a loss, Close), or its node was deleted. The
	// cause of a session's HoldContext matches it as well as the reason, and
	// so does the Err of every hold that ended without its release;
	// recipes.ErrLost is this error. A call that got no hold never returns
	// it.
	ErrHoldLost = errors.New("coordkit: hold lost")
)

// PathError reports an invalid path and why it was refused. It matches
// ErrInvalidPath with errors.Is.
type PathError struct {
	Path   string // the path as given
	Reason string // what is wrong with it
}

// Error implements error.
func (e *PathError) Error() string {
	return "coordkit: invalid path " + quote(e.Path) + ": " + e.Reason
}

// Is reports whether target is ErrInvalidPath.
func (e *PathError) Is(target error) bool { return target == ErrInvalidPath }

func quote(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "…"
	}
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			const hex = "0123456789abcdef"
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return string(append(b, '"'))
}
