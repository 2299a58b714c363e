package mutex_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// lateExpiry is a memory driver whose connections report StateExpired to
// the session only when release is closed: the connection already fails
// calls with coordkit.ErrSessionLost while the session has not heard of the
// expiry yet, as on a real server when the expiry races the event.
type lateExpiry struct {
	*memory.Driver
	release chan struct{}
}

type lateConn struct {
	backend.Conn
	events chan backend.ConnEvent
}

func (c *lateConn) Events() <-chan backend.ConnEvent { return c.events }

func (d *lateExpiry) Open(ctx context.Context, ttl time.Duration) (backend.Conn, error) {
	c, err := d.Driver.Open(ctx, ttl)
	if err != nil {
		return nil, err
	}
	lc := &lateConn{Conn: c, events: make(chan backend.ConnEvent)}
	go func() {
		defer close(lc.events)
		for ev := range c.Events() {
			if ev.State == backend.StateExpired {
				<-d.release
			}
			lc.events <- ev
		}
	}()
	return lc, nil
}

// TestUnlockOfLostGuardBeforeSessionKnows: the session expired on the
// server and the guard saw its node go, but the session has not processed
// the expiry yet. Unlock must return nil (documented for a lost guard), not
// the connection's "session lost" from its delete.
func TestUnlockOfLostGuardBeforeSessionKnows(t *testing.T) {
	d := &lateExpiry{Driver: memory.New(), release: make(chan struct{})}
	defer d.Close()
	ctx := context.Background()
	s, err := session.New(ctx, d, session.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	m, err := mutex.New(s, "/lock")
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Expire(s.ID()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the guard did not see its node deleted")
	}
	if !errors.Is(g.Err(), recipes.ErrLost) {
		t.Fatalf("guard ended with %v, want ErrLost", g.Err())
	}
	err = g.Unlock(ctx)
	close(d.release)
	if err != nil {
		t.Fatalf("Unlock of a lost guard = %v, want nil", err)
	}
}
