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
	bad := func(reason string) error { return &coordkit.PathError{Path: path, Reason: reason} }
	switch {
	case path == "":
		return bad("empty")
	case path[0] != '/':
		return bad("must be absolute (start with /)")
	case path == "/":
		return bad("the root itself cannot be used")
	case len(path) > MaxPathLength:
		return bad("longer than " + strconv.Itoa(MaxPathLength) + " bytes")
	case path[len(path)-1] == '/':
		return bad("must not end with /")
	case !utf8.ValidString(path):
		return bad("not valid UTF-8")
	}
	for _, r := range path {
		switch {
		case r == 0:
			return bad("contains NUL")
		case r < 0x20, r >= 0x7f && r <= 0x9f:
			return bad("contains a control character")
		case r >= 0xd800 && r <= 0xf8ff, r >= 0xfff0 && r <= 0xffff:
			return bad("contains a code point ZooKeeper refuses")
		}
	}
	for _, c := range strings.Split(path[1:], "/") {
		switch c {
		case "":
			return bad("empty component (//)")
		case ".", "..":
			return bad("relative component " + c)
		}
	}
	if path == "/zookeeper" || strings.HasPrefix(path, "/zookeeper/") {
		return bad("the /zookeeper tree is reserved by ZooKeeper")
	}
	return nil
}

// ValidateName checks one path element a recipe appends to a valid path:
// non-empty, no "/", not "." or "..", and the same characters as ValidatePath.
func ValidateName(name string) error {
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return &coordkit.PathError{Path: name, Reason: "not a single path element"}
	}
	if err := ValidatePath("/" + name); err != nil {
		return &coordkit.PathError{Path: name, Reason: err.(*coordkit.PathError).Reason}
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
