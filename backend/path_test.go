package backend_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
)

func TestValidatePath(t *testing.T) {
	valid := []string{"/a", "/a/b", "/locks/orders-42", "/a.b/c..d", "/zookeeperx", "/x/zookeeper", "/ünïcode/路径", strings.Repeat("/a", backend.MaxPathLength/2)}
	for _, p := range valid {
		if err := backend.ValidatePath(p); err != nil {
			t.Errorf("ValidatePath(%q) = %v, want nil", p, err)
		}
	}
	invalid := map[string]string{
		"":                 "empty",
		"a/b":              "absolute",
		"/":                "root",
		"/a/":              "end with /",
		"//a":              "empty component",
		"/a//b":            "empty component",
		"/a/./b":           "relative component",
		"/a/..":            "relative component",
		"/a\x00b":          "NUL",
		"/a\nb":            "control",
		"/a\x7fb":          "control",
		"/a\u0085b":        "control",
		"/a\ud7ff\ue000":   "ZooKeeper refuses",
		"/a\ufff0":         "ZooKeeper refuses",
		"/a\xff":           "UTF-8",
		"/zookeeper":       "reserved",
		"/zookeeper/quota": "reserved",
		"/" + strings.Repeat("a", backend.MaxPathLength): "longer",
	}
	for p, want := range invalid {
		err := backend.ValidatePath(p)
		if err == nil {
			t.Errorf("ValidatePath(%q) = nil, want an error about %q", p, want)
			continue
		}
		if !errors.Is(err, coordkit.ErrInvalidPath) {
			t.Errorf("ValidatePath(%q) = %v, does not match ErrInvalidPath", p, err)
		}
		var pe *coordkit.PathError
		if !errors.As(err, &pe) || pe.Path != p || !strings.Contains(pe.Reason, want) {
			t.Errorf("ValidatePath(%q) = %#v, want a *PathError whose reason mentions %q", p, err, want)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, n := range []string{"lock-", "_c_x-lock-0000000001", "a.b", "zookeeper", "zookeeperx", strings.Repeat("a", backend.MaxPathLength-1)} {
		if err := backend.ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v", n, err)
		}
	}
	for _, n := range []string{"", "a/b", ".", "..", "a\x00", "a\n", "zookeeper/quota", strings.Repeat("a", backend.MaxPathLength)} {
		if err := backend.ValidateName(n); !errors.Is(err, coordkit.ErrInvalidPath) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidPath", n, err)
		}
	}
}

// TestReservedZooKeeperTree: only the path /zookeeper and the paths below it
// are reserved. A name "zookeeper" is valid; joined to a parent other than
// the root it makes a valid path, joined to the root the reserved one.
func TestReservedZooKeeperTree(t *testing.T) {
	if err := backend.ValidateName("zookeeper"); err != nil {
		t.Fatalf("ValidateName(\"zookeeper\") = %v, want nil", err)
	}
	for _, p := range []string{backend.Join("/app", "zookeeper"), "/app/zookeeper/locks", "/zookeeper2", "/zookeeper-locks/a"} {
		if err := backend.ValidatePath(p); err != nil {
			t.Errorf("ValidatePath(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"/zookeeper", "/zookeeper/config", "/zookeeper/quota/app"} {
		var pe *coordkit.PathError
		if err := backend.ValidatePath(p); !errors.As(err, &pe) || !strings.Contains(pe.Reason, "reserved") {
			t.Errorf("ValidatePath(%q) = %v, want the reserved-tree error", p, err)
		}
	}
}

func TestValidateData(t *testing.T) {
	if err := backend.ValidateData(make([]byte, backend.MaxDataSize)); err != nil {
		t.Fatalf("data at the limit refused: %v", err)
	}
	err := backend.ValidateData(make([]byte, backend.MaxDataSize+1))
	if !errors.Is(err, backend.ErrDataTooLarge) || !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Fatalf("oversized data: %v, want ErrDataTooLarge and ErrInvalidArgument", err)
	}
}

func TestSplitJoin(t *testing.T) {
	for _, c := range []struct{ path, parent, name string }{
		{"/a", "/", "a"}, {"/a/b", "/a", "b"}, {"/a/b/c-0000000001", "/a/b", "c-0000000001"},
	} {
		parent, name := backend.Split(c.path)
		if parent != c.parent || name != c.name {
			t.Errorf("Split(%q) = %q, %q; want %q, %q", c.path, parent, name, c.parent, c.name)
		}
		if parent != "/" && backend.Join(parent, name) != c.path {
			t.Errorf("Join(Split(%q)) = %q", c.path, backend.Join(parent, name))
		}
	}
}

func TestSeqLess(t *testing.T) {
	cases := []struct {
		a, b int64
		less bool
	}{
		{1, 2, true}, {2, 1, false}, {5, 5, false},
		{2147483646, 2147483647, true},
		{2147483647, -2147483648, true}, // the counter wrapped: -2^31 comes after 2^31-1
		{-2147483648, 2147483647, false},
		{2147483000, -2147483000, true},
		{-1, 0, true},
		{1 << 40, 1<<40 + 1, true}, // etcd revisions beyond 32 bits
		{1<<40 + 1, 1 << 40, false},
	}
	for _, c := range cases {
		if got := backend.SeqLess(c.a, c.b); got != c.less {
			t.Errorf("SeqLess(%d, %d) = %v, want %v", c.a, c.b, got, c.less)
		}
	}
}

// FuzzValidatePath checks that the validator never panics and that every
// path it accepts has the shape the drivers rely on.
func FuzzValidatePath(f *testing.F) {
	for _, s := range []string{"/a", "/a/b", "", "/", "//", "/a/", "/./", "/..", "/zookeeper", "/a\x00", "/\u00e9", "/a\xff", "/zookeeper2/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		err := backend.ValidatePath(p)
		if err != nil {
			if !errors.Is(err, coordkit.ErrInvalidPath) {
				t.Fatalf("ValidatePath(%q) error %v does not match ErrInvalidPath", p, err)
			}
			_ = err.Error()
			return
		}
		if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.Contains(p, "//") || !utf8.ValidString(p) || len(p) > backend.MaxPathLength {
			t.Fatalf("ValidatePath accepted malformed %q", p)
		}
		for _, c := range strings.Split(p[1:], "/") {
			if c == "." || c == ".." {
				t.Fatalf("ValidatePath accepted relative component in %q", p)
			}
		}
		for _, r := range p {
			if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
				t.Fatalf("ValidatePath accepted control character in %q", p)
			}
		}
		if p == "/zookeeper" || strings.HasPrefix(p, "/zookeeper/") {
			t.Fatalf("ValidatePath accepted reserved %q", p)
		}
		parent, name := backend.Split(p)
		if name == "" || (parent != "/" && backend.ValidatePath(parent) != nil) {
			t.Fatalf("Split(%q) = %q, %q: parent of a valid path must be valid", p, parent, name)
		}
	})
}
