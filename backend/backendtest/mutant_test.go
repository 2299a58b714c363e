package backendtest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/backendtest"
	"github.com/coordkit/coordkit/backend/memory"
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
	{"opaque-errors", func(c backend.Conn) backend.Conn { return opaque{c} }, []string{"InvalidInput", "Versions", "SessionClose", "Context", "Faults/Expire", "Faults/ExpireWhileDisconnected", "Faults/CloseWhileDisconnected"}},
	{"constant-token", func(c backend.Conn) backend.Conn { return constToken{c} }, []string{"Create", "Tokens"}},
	{"silent-watch", func(c backend.Conn) backend.Conn { return silentWatch{c} }, []string{"Watch", "WatchChildren", "SessionClose", "Faults/Disconnect", "Faults/Expire"}},
	// The mutants below break what only the fault suite exercises.
	{"expiry-as-close", func(c backend.Conn) backend.Conn {
		return newRelabeled(c, map[backend.ConnState]backend.ConnState{backend.StateExpired: backend.StateClosed})
	}, []string{"Faults/Expire", "Faults/ExpireWhileDisconnected"}},
	{"new-session-on-reconnect", func(c backend.Conn) backend.Conn { return newSession{newRelabeled(c, nil)} }, []string{"Faults/Disconnect", "Faults/CreateWhileDisconnected"}},
	{"no-lost-event", func(c backend.Conn) backend.Conn { return noLost{c} }, []string{"SessionClose", "Faults/Expire", "Faults/ExpireWhileDisconnected", "Faults/CloseWhileDisconnected"}},
}

// controlMutant names the run of TestMutantHelper that breaks nothing.
const controlMutant = "none"

func TestMutants(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the suite once per mutant in a child process")
	}
	run := func(name string) ([]byte, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMutantHelper$", "-test.v")
		cmd.Env = append(os.Environ(), mutantEnv+"="+name)
		return cmd.CombinedOutput()
	}
	// The control: the same run, with the same short timeouts, on the
	// unbroken driver must pass, or a mutant's failures could be timeouts.
	if out, err := run(controlMutant); err != nil {
		t.Fatalf("the suite failed the unbroken driver under the mutants' options:\n%s", out)
	}
	for _, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			out, err := run(m.name)
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
	wrap := func(c backend.Conn) backend.Conn { return c }
	if name != controlMutant {
		i := slices.IndexFunc(mutants, func(m mutant) bool { return m.name == name })
		if i < 0 {
			t.Fatalf("no mutant %q", name)
		}
		wrap = mutants[i].wrap
	}
	backendtest.RunWithOptions(t, func(t *testing.T) backend.Driver {
		return mutantDriver{newMemory(t), wrap}
	}, backendtest.Options{Timeout: time.Second})
	t.Run("Faults", func(t *testing.T) {
		backendtest.RunFaultsWithOptions(t, func(t *testing.T) (backend.Driver, backendtest.Faults) {
			d := memory.New()
			t.Cleanup(func() { _ = d.Close() })
			return mutantDriver{d, wrap}, memoryFaults{d: d, wrap: wrap}
		}, backendtest.Options{TTL: 300 * time.Millisecond, Timeout: 2 * time.Second})
	})
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

// relabeled forwards the Conn's events, with the states in relabel
// replaced, and records whether it has forwarded a StateReconnected.
type relabeled struct {
	backend.Conn
	evs         chan backend.ConnEvent
	reconnected atomic.Bool
}

func newRelabeled(c backend.Conn, relabel map[backend.ConnState]backend.ConnState) *relabeled {
	r := &relabeled{Conn: c, evs: make(chan backend.ConnEvent, 1024)}
	go func() { // ends when c's Events is closed, at the latest at Driver.Close
		defer close(r.evs)
		for ev := range c.Events() {
			if s, ok := relabel[ev.State]; ok {
				ev.State = s
			}
			if ev.State == backend.StateReconnected {
				r.reconnected.Store(true)
			}
			r.evs <- ev
		}
	}()
	return r
}

func (r *relabeled) Events() <-chan backend.ConnEvent { return r.evs }

// newSession reports another SessionID after a reconnect, as a driver that
// opened a new session would.
type newSession struct{ *relabeled }

func (c newSession) SessionID() string {
	if c.reconnected.Load() {
		return c.Conn.SessionID() + "1"
	}
	return c.Conn.SessionID()
}

// noLost drops its watches' EventLost: they fall silent instead.
type noLost struct{ backend.Conn }

func dropLost(w *backend.Watch) *backend.Watch {
	out := make(chan backend.WatchEvent, 1)
	stop := make(chan struct{})
	var once sync.Once
	go func() { // ends at the event (every memory watch gets one at Driver.Close) or Stop
		select {
		case ev := <-w.C():
			if ev.Type != backend.EventLost {
				out <- ev
			}
		case <-stop:
		}
	}()
	return backend.NewWatch(out, func() { once.Do(func() { close(stop) }); w.Stop() })
}

func (c noLost) Watch(ctx context.Context, p string) (backend.Node, bool, *backend.Watch, error) {
	n, ok, w, err := c.Conn.Watch(ctx, p)
	if err != nil {
		return n, ok, w, err
	}
	return n, ok, dropLost(w), nil
}

func (c noLost) WatchChildren(ctx context.Context, p string) ([]backend.Node, *backend.Watch, error) {
	kids, w, err := c.Conn.WatchChildren(ctx, p)
	if err != nil {
		return kids, w, err
	}
	return kids, dropLost(w), nil
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
