// Package lockpath checks the path of a lock: a valid backend path, short
// enough for the nodes the lock creates below it, and not a name that a
// lock creates for itself, so that one lock's path is never another lock's
// own node (a fairlock at P/owner would otherwise sit on the owner node of a
// mutex at P, and each would wait for the other).
package lockpath

import (
	"fmt"
	"strings"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
)

// ProtectedPrefix is the length of the "_c_<uuid36>-" prefix of a protected
// name.
const ProtectedPrefix = len("_c_") + 36 + len("-")

// SequenceSuffix is the length of the longest suffix a driver appends to a
// sequential name (etcd's "<16 hex>-<20 digits>"; ZooKeeper's is 10 digits).
const SequenceSuffix = 16 + 1 + 20

// reserved are the names of what a lock creates below its path: the mutex's
// owner node and queue directory, its pins ("owner-pin-..."), and the
// protected nodes of fairlock and of the mutex's queue ("_c_..."). No
// element of a lock's path but the first may be one: a lock at or below
// another lock's node would sit on it.
var (
	reservedNames    = []string{"owner", "queue"}
	reservedPrefixes = []string{"owner-pin-", "_c_"}
)

// Check returns nil if path can be the path of a lock whose nodes are up to
// below bytes longer than path, and no element of it after the first is a
// name the locks use for their own nodes; otherwise an error matching
// coordkit.ErrInvalidPath (a *coordkit.PathError).
func Check(path string, below int) error {
	if err := backend.ValidatePath(path); err != nil {
		return err
	}
	if len(path)+below > backend.MaxPathLength {
		return &coordkit.PathError{Path: path,
			Reason: fmt.Sprintf("too long: the lock's nodes below it need %d more bytes (limit %d)", below, backend.MaxPathLength)}
	}
	// Every element but the first: "/" is never a lock, so "/owner" is
	// nobody's node, but "/x/owner" is the owner node of a mutex at /x,
	// and so a lock at "/x/owner/y" would make it a directory.
	elems := strings.Split(path[1:], "/")
	for _, name := range elems[1:] {
		if reserved(name) {
			return reservedErr(path, name)
		}
	}
	return nil
}

func reserved(name string) bool {
	for _, r := range reservedNames {
		if name == r {
			return true
		}
	}
	for _, r := range reservedPrefixes {
		if strings.HasPrefix(name, r) {
			return true
		}
	}
	return false
}

func reservedErr(path, name string) error {
	return &coordkit.PathError{Path: path,
		Reason: fmt.Sprintf("%q is a name the locks use for their own nodes (owner, queue, owner-pin-*, _c_*): a lock here would be at or below another lock's node", name)}
}
