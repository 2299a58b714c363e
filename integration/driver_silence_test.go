package integration_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/integration"
	"github.com/coordkit/coordkit/session"
)

// TestDriverCallsServerSilent: the seam's promise that every call which
// talks to the server returns ctx's error when ctx ends first (backend.Conn),
// checked on both drivers while the server does not answer: the session's
// traffic is paused (held, delivered when the pause ends), so every request
// is in flight when the call's 300ms deadline passes. Each call, and opening
// a session, must return an error matching context.DeadlineExceeded before
// the session could be Suspended (the documented bound), not when the server
// answers again. After the pauses the session is still connected and serves
// calls.
func TestDriverCallsServerSilent(t *testing.T) {
	// The pauses add up to more than 3s: T leaves the keepalives room.
	const T = 15 * time.Second
	for _, bc := range backendCases {
		t.Run(bc.name, func(t *testing.T) {
			t.Parallel()
			addrs := sharedAddrs(t, bc.name)
			obs := observerConn(t, bc.driver(t, addrs))
			proxy := integration.NewProxy(t, addrs[0])
			drv := bc.driver(t, []string{proxy.Addr()})
			bound := bc.suspendBound(T)
			// silent runs call under silentDeadline with the session's
			// traffic paused, and checks that it returns the deadline's
			// error before the session could be Suspended.
			silent := func(what string, call func(ctx context.Context) error) {
				t.Helper()
				proxy.Pause()
				cctx, ccancel := context.WithTimeout(context.Background(), silentDeadline)
				t0 := time.Now()
				err := call(cctx)
				took := time.Since(t0)
				ccancel()
				proxy.Resume()
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("%s with the server silent = %v, want context.DeadlineExceeded", what, err)
				} else if took >= bound {
					t.Errorf("%s returned %v after its %v deadline, not before the session could be Suspended (%v)", what, took, silentDeadline, bound)
				}
			}
			silent("session.New", func(ctx context.Context) error {
				s, err := session.New(ctx, drv, session.WithTTL(T))
				if err == nil {
					s.Close(context.Background())
				}
				return err
			})
			o := openObserved(t, drv, session.WithTTL(T))
			c := o.s.Conn()
			root := faultRoot(t)
			data := root + "/data"
			relNode(t, obs, data, "")
			ctx, cancel := context.WithTimeout(context.Background(), lockBound)
			defer cancel()
			mine, err := c.Create(ctx, root+"/mine", nil, backend.CreateOptions{Ephemeral: true})
			if err != nil {
				t.Fatal(err)
			}
			eph := backend.CreateOptions{Ephemeral: true}
			queued := backend.CreateOptions{Ephemeral: true, Sequential: true, Protected: true}
			calls := []struct {
				name string
				call func(ctx context.Context) error
			}{
				{"Create", func(ctx context.Context) error { _, err := c.Create(ctx, root+"/c", nil, eph); return err }},
				{"CreateAndList", func(ctx context.Context) error {
					_, _, err := c.CreateAndList(ctx, root+"/q/n-", nil, queued)
					return err
				}},
				{"CreateAndWatch", func(ctx context.Context) error {
					_, w, err := c.CreateAndWatch(ctx, root+"/w", nil, eph)
					if w != nil {
						w.Stop()
					}
					return err
				}},
				{"Get", func(ctx context.Context) error { _, err := c.Get(ctx, data); return err }},
				{"Children", func(ctx context.Context) error { _, err := c.Children(ctx, root); return err }},
				{"Set", func(ctx context.Context) error {
					_, err := c.Set(ctx, data, []byte("s"), backend.AnyVersion)
					return err
				}},
				{"GuardedSet", func(ctx context.Context) error {
					_, err := c.GuardedSet(ctx, []backend.Guard{backend.GuardOf(mine)}, data, []byte("g"), backend.AnyVersion)
					return err
				}},
				{"Watch", func(ctx context.Context) error {
					_, _, w, err := c.Watch(ctx, data)
					if w != nil {
						w.Stop()
					}
					return err
				}},
				{"WatchChildren", func(ctx context.Context) error {
					_, w, err := c.WatchChildren(ctx, root)
					if w != nil {
						w.Stop()
					}
					return err
				}},
				{"Delete", func(ctx context.Context) error { return c.Delete(ctx, mine.Path, backend.AnyVersion) }},
			}
			if ps, ok := c.(backend.ParentStamps); ok {
				calls = append(calls, struct {
					name string
					call func(ctx context.Context) error
				}{"CreateStamped", func(ctx context.Context) error {
					_, _, err := ps.CreateStamped(ctx, root+"/stamped/owner", nil, eph)
					return err
				}})
			}
			for _, cl := range calls {
				silent(cl.name, cl.call)
			}
			if st := o.s.State(); st != session.StateConnected {
				t.Fatalf("the session is %v after the pauses, want Connected", st)
			}
			if _, err := c.Get(ctx, data); err != nil {
				t.Fatalf("Get after the pauses: %v", err)
			}
		})
	}
}
