package backendtest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/backendtest"
)

// A suite that passes a broken driver proves nothing. Each mutant breaks
// the memory driver in one way; TestMutants runs the suite on it in a child
// process and checks that the subtests that must notice fail.

const mutantEnv = "BACKENDTEST_MUTANT"

type mutant struct {
	name  string
	wrap  func(backend.Conn) backend.Conn
	fails []string // subtests that must fail
}

var mutants = []mutant{
	{"reversed-children", func(c backend.Conn) backend.Conn { return reversed{c} }, []string{"SequentialOrder", "CreateAndList", "Concurrency"}},
	{"unguarded", func(c backend.Conn) backend.Conn { return unguarded{c} }, []string{"GuardedSet"}},
	{"ignored-stamp", func(c backend.Conn) backend.Conn { return ignoredStamp{c} }, []string{"ParentStamps"}},
	{"pinless-stamp", func(c backend.Conn) backend.Conn { return pinlessStamp{ignoredStamp{c}} }, []string{"ParentStamps"}},
	{"lazy-delete", func(c backend.Conn) backend.Conn { return lazyDelete{c} }, []string{"Create", "Children", "Versions"}},
	{"opaque-errors", func(c backend.Conn) backend.Conn { return opaque{c} }, []string{"InvalidInput", "Versions", "SessionClose", "Context"}},
	{"constant-token", func(c backend.Conn) backend.Conn { return constToken{c} }, []string{"Create", "Tokens"}},
	{"silent-watch", func(c backend.Conn) backend.Conn { return silentWatch{c} }, []string{"Watch", "WatchChildren", "SessionClose"}},
}

func TestMutants(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the suite once per mutant in a child process")
	}
	for _, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMutantHelper$", "-test.v")
			cmd.Env = append(os.Environ(), mutantEnv+"="+m.name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a driver broken by %s:\n%s", m.name, out)
			}
			for _, sub := range m.fails {
				if !strings.Contains(string(out), "--- FAIL: TestMutantHelper/"+sub+" ") {
					t.Errorf("subtest %s passed a driver broken by %s", sub, m.name)
				}
			}
			if t.Failed() {
				t.Logf("child output:\n%s", out)
			}
		})
	}
}

// TestMutantHelper runs the suite on the mutant named in the environment.
func TestMutantHelper(t *testing.T) {
	name := os.Getenv(mutantEnv)
	if name == "" {
		t.Skip("run by TestMutants")
	}
	i := slices.IndexFunc(mutants, func(m mutant) bool { return m.name == name })
	if i < 0 {
		t.Fatalf("no mutant %q", name)
	}
	backendtest.RunWithOptions(t, func(t *testing.T) backend.Driver {
		return mutantDriver{newMemory(t), mutants[i].wrap}
	}, backendtest.Options{Timeout: time.Second})
}

type mutantDriver struct {
	backend.Driver
	wrap func(backend.Conn) backend.Conn
}

func (d mutantDriver) Open(ctx context.Context, ttl time.Duration) (backend.Conn, error) {
	c, err := d.Driver.Open(ctx, ttl)
	if err != nil {
		return nil, err
	}
	return d.wrap(c), nil
}

type reversed struct{ backend.Conn }

func (c reversed) Children(ctx context.Context, p string) ([]backend.Node, error) {
	kids, err := c.Conn.Children(ctx, p)
	slices.Reverse(kids)
	return kids, err
}

func (c reversed) CreateAndList(ctx context.Context, p string, d []byte, o backend.CreateOptions) (backend.Node, []backend.Node, error) {
	n, kids, err := c.Conn.CreateAndList(ctx, p, d, o)
	slices.Reverse(kids)
	return n, kids, err
}

type unguarded struct{ backend.Conn }

func (c unguarded) GuardedSet(ctx context.Context, _ []backend.Guard, p string, d []byte, v int64) (backend.Node, error) {
	return c.Set(ctx, p, d, v)
}

// ignoredStamp stamps its creates but deletes by version alone.
type ignoredStamp struct{ backend.Conn }

func (c ignoredStamp) CreateStamped(ctx context.Context, p string, d []byte, o backend.CreateOptions) (backend.Node, backend.Stamp, error) {
	return c.Conn.(backend.ParentStamps).CreateStamped(ctx, p, d, o)
}

func (c ignoredStamp) DeleteStamped(ctx context.Context, p string, v int64, st backend.Stamp) error {
	if err := c.Delete(ctx, p, v); err != nil {
		return err
	}
	return c.Unpin(ctx, st)
}

func (c ignoredStamp) Unpin(ctx context.Context, st backend.Stamp) error {
	return c.Conn.(backend.ParentStamps).Unpin(ctx, st)
}

// pinlessStamp checks the parent's version but not the pin, so it cannot
// tell a parent deleted and made again.
type pinlessStamp struct{ ignoredStamp }

func (c pinlessStamp) DeleteStamped(ctx context.Context, p string, v int64, st backend.Stamp) error {
	if !st.Known {
		return backend.ErrGuardFailed
	}
	if parent, err := c.Get(ctx, st.Parent.Path); err != nil || parent.Version != st.Parent.Version {
		return backend.ErrGuardFailed
	}
	return c.ignoredStamp.DeleteStamped(ctx, p, v, st)
}

type lazyDelete struct{ backend.Conn }

func (c lazyDelete) Delete(ctx context.Context, p string, v int64) error {
	if strings.HasSuffix(p, "/p") || strings.HasSuffix(p, "/x") || strings.HasSuffix(p, "/v") {
		return nil
	}
	return c.Conn.Delete(ctx, p, v)
}

type opaque struct{ backend.Conn }

func hide(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(err.Error())
}

func (c opaque) Get(ctx context.Context, p string) (backend.Node, error) {
	n, err := c.Conn.Get(ctx, p)
	return n, hide(err)
}

func (c opaque) Set(ctx context.Context, p string, d []byte, v int64) (backend.Node, error) {
	n, err := c.Conn.Set(ctx, p, d, v)
	return n, hide(err)
}

func (c opaque) Delete(ctx context.Context, p string, v int64) error {
	return hide(c.Conn.Delete(ctx, p, v))
}

type constToken struct{ backend.Conn }

func (c constToken) Create(ctx context.Context, p string, d []byte, o backend.CreateOptions) (backend.Node, error) {
	n, err := c.Conn.Create(ctx, p, d, o)
	n.Token = 1
	return n, err
}

type silentWatch struct{ backend.Conn }

func (c silentWatch) Watch(ctx context.Context, p string) (backend.Node, bool, *backend.Watch, error) {
	n, ok, w, err := c.Conn.Watch(ctx, p)
	if err != nil {
		return n, ok, w, err
	}
	return n, ok, backend.NewWatch(make(chan backend.WatchEvent), w.Stop), nil
}

func (c silentWatch) WatchChildren(ctx context.Context, p string) ([]backend.Node, *backend.Watch, error) {
	kids, w, err := c.Conn.WatchChildren(ctx, p)
	if err != nil {
		return kids, w, err
	}
	return kids, backend.NewWatch(make(chan backend.WatchEvent), w.Stop), nil
}

// TestLeftovers checks the leftover rule on its own: data or an owner makes
// a node a leftover, and so does a leftover below it; an empty parent does
// not.
func TestLeftovers(t *testing.T) {
	ctx := context.Background()
	c, err := newMemory(t).Open(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	root := backendtest.Root + "/leftovers"
	mk := func(p string, data string, o backend.CreateOptions) {
		t.Helper()
		if _, err := c.Create(ctx, root+p, []byte(data), o); err != nil {
			t.Fatal(err)
		}
	}
	mk("/empty/parent/leaf", "", backend.CreateOptions{})
	mk("/data/leaf", "x", backend.CreateOptions{})
	mk("/eph/leaf", "", backend.CreateOptions{Ephemeral: true})
	left, err := backendtest.Leftovers(ctx, c, root)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{root, root + "/data", root + "/data/leaf", root + "/eph", root + "/eph/leaf"}
	if !slices.Equal(left, want) {
		t.Errorf("Leftovers = %q, want %q", left, want)
	}
	backendtest.Cleanup(t, c, root)
	if kids, err := c.Children(ctx, backendtest.Root); err != nil || len(kids) != 0 {
		t.Errorf("after Cleanup: %v, %v", kids, err)
	}
	left, err = backendtest.Leftovers(ctx, c, root)
	if err != nil || len(left) != 0 {
		t.Errorf("Leftovers after Cleanup = %q, %v", left, err)
	}
}
