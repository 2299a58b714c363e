package backend

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/coordkit/coordkit"
)

// MaxPathLength is the longest path, in bytes, the seam accepts. ZooKeeper
// and etcd accept longer ones, but a recipe path is a name, and every node a
// recipe creates below it adds a protected prefix and a suffix.
const MaxPathLength = 1024

// ValidatePath checks a path before any network call. A valid path is
// absolute, "/"-separated, has no trailing "/", no empty, "." or ".."
// component, only valid UTF-8 without NUL, control characters or the code
// points ZooKeeper refuses (U+D800–U+F8FF, U+FFF0–U+FFFF), is not "/" itself,
// does not lie in ZooKeeper's reserved /zookeeper tree, and is at most
// MaxPathLength bytes. The error is a *coordkit.PathError, which matches
// coordkit.ErrInvalidPath.
func ValidatePath(path string) error {
	if reason := badPath(path); reason != "" {
		return &coordkit.PathError{Path: path, Reason: reason}
	}
	if path == "/zookeeper" || strings.HasPrefix(path, "/zookeeper/") {
		return &coordkit.PathError{Path: path, Reason: "the /zookeeper tree is reserved by ZooKeeper"}
	}
	return nil
}

// badPath returns why path is not valid, or "", for every rule of
// ValidatePath except the reserved /zookeeper tree.
func badPath(path string) string {
	switch {
	case path == "":
		return "empty"
	case path[0] != '/':
		return "must be absolute (start with /)"
	case path == "/":
		return "the root itself cannot be used"
	case len(path) > MaxPathLength:
		return "longer than " + strconv.Itoa(MaxPathLength) + " bytes"
	case path[len(path)-1] == '/':
		return "must not end with /"
	case !utf8.ValidString(path):
		return "not valid UTF-8"
	}
	for _, r := range path {
		switch {
		case r == 0:
			return "contains NUL"
		case r < 0x20, r >= 0x7f && r <= 0x9f:
			return "contains a control character"
		case r >= 0xd800 && r <= 0xf8ff, r >= 0xfff0 && r <= 0xffff:
			return "contains a code point ZooKeeper refuses"
		}
	}
	for _, c := range strings.Split(path[1:], "/") {
		switch c {
		case "":
			return "empty component (//)"
		case ".", "..":
			return "relative component " + c
		}
	}
	return ""
}

// ValidateName checks one path element a recipe appends to a valid path:
// non-empty, no "/", not "." or "..", the same characters as ValidatePath,
// and at most MaxPathLength-1 bytes. "zookeeper" is a valid name: only the
// path /zookeeper and the paths below it are reserved, and ValidatePath
// refuses those whatever built them.
func ValidateName(name string) error {
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return &coordkit.PathError{Path: name, Reason: "not a single path element"}
	}
	if reason := badPath("/" + name); reason != "" {
		return &coordkit.PathError{Path: name, Reason: reason}
	}
	return nil
}

// Join returns parent + "/" + name.
func Join(parent, name string) string { return parent + "/" + name }

// Split returns the parent and last element of a valid path; the parent of
// "/a" is "/".
func Split(path string) (parent, name string) {
	i := strings.LastIndexByte(path, '/')
	if i <= 0 {
		return "/", path[i+1:]
	}
	return path[:i], path[i+1:]
}

// ValidateData checks node data against MaxDataSize.
func ValidateData(data []byte) error {
	if len(data) > MaxDataSize {
		return fmt.Errorf("%w: %d bytes, limit %d (%w)", ErrDataTooLarge, len(data), MaxDataSize, coordkit.ErrInvalidArgument)
	}
	return nil
}
