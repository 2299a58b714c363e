package lockpath_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/recipes/internal/lockpath"
)

func TestCheck(t *testing.T) {
	for _, p := range []string{"/locks/inventory", "/a", "/owner", "/queue", "/_c_x", "/owners", "/a/queued", "/a/owner-x", "/c_/x", "/owner/a", "/queue/a/b", "/a/" + strings.Repeat("x", backend.MaxPathLength-3-50)} {
		if err := lockpath.Check(p, 50); err != nil {
			t.Errorf("Check(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"", "a", "/a/", "//a", "/a/owner", "/a/queue", "/a/owner-pin-1-2", "/a/_c_x-lock-1",
		// below another lock's node: a mutex at /x has /x/owner and /x/queue
		"/x/owner/b", "/x/queue/y", "/x/owner/b/c", "/x/_c_u-lock-1/y", "/a/b/queue/c", "/a/" + strings.Repeat("x", backend.MaxPathLength-3-49)} {
		err := lockpath.Check(p, 50)
		var pe *coordkit.PathError
		if !errors.Is(err, coordkit.ErrInvalidPath) || !errors.As(err, &pe) {
			t.Errorf("Check(%.40q) = %v, want a *coordkit.PathError", p, err)
		}
	}
}
