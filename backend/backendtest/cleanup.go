package backendtest

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend"
)

// Leftovers returns the nodes at and below dirs that carry data or an owner
// (an ephemeral node), or lie above such a node. A node with neither, and
// only such nodes below it, is scaffolding: an empty parent that ZooKeeper
// reaps on its own when it is a container. Every node a test creates on
// purpose should carry data, so that Leftovers sees it.
//
// Nodes are reached with Children, so on etcd, where "/a/b" is not a child
// of "/" unless the key "/a" exists, pass every directory a test created
// nodes in.
func Leftovers(ctx context.Context, c backend.Conn, dirs ...string) ([]string, error) {
	seen := map[string]bool{}
	var left []string
	// visit reports whether path or a node below it is left over.
	var visit func(path string) (bool, error)
	visit = func(path string) (bool, error) {
		if seen[path] {
			return false, nil
		}
		seen[path] = true
		kids, err := c.Children(ctx, path)
		if err != nil {
			return false, err
		}
		below := false
		for _, k := range kids {
			l, err := visit(k.Path)
			if err != nil {
				return false, err
			}
			below = below || l
		}
		n, err := c.Get(ctx, path)
		switch {
		case errors.Is(err, backend.ErrNoNode):
			return below, nil // a directory that is no node, or reaped meanwhile
		case err != nil:
			return false, err
		}
		if below || len(n.Data) > 0 || n.Owner != "" {
			left = append(left, path)
			return true, nil
		}
		return false, nil
	}
	for _, d := range dirs {
		if _, err := visit(d); err != nil {
			return left, err
		}
	}
	slices.Sort(left)
	return left, nil
}

// Cleanup deletes every node reachable with Children at and below each of
// dirs, deepest first, including empty parents. Nodes that vanish meanwhile
// are fine; any other failure is reported with t.Errorf. See Leftovers for
// which nodes Children reaches on etcd.
func Cleanup(t testing.TB, c backend.Conn, dirs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dirs = slices.Clone(dirs)
	slices.SortFunc(dirs, func(a, b string) int {
		return cmp.Or(-cmp.Compare(strings.Count(a, "/"), strings.Count(b, "/")), cmp.Compare(a, b))
	})
	for _, d := range dirs {
		if err := deleteTree(ctx, c, d); err != nil {
			t.Errorf("cleanup %s: %v", d, err)
		}
	}
}

func deleteTree(ctx context.Context, c backend.Conn, path string) error {
	for attempt := 1; ; attempt++ {
		kids, err := c.Children(ctx, path)
		if err != nil {
			return err
		}
		for _, k := range kids {
			if err := deleteTree(ctx, c, k.Path); err != nil {
				return err
			}
		}
		err = c.Delete(ctx, path, backend.AnyVersion)
		switch {
		case err == nil, errors.Is(err, backend.ErrNoNode):
			return nil
		case errors.Is(err, backend.ErrNotEmpty) && attempt < 3:
			continue // a child appeared meanwhile
		default:
			return err
		}
	}
}
