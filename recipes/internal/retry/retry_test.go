package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes/internal/retry"
	"github.com/coordkit/coordkit/session"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T) (*memory.Driver, *session.Session) {
	t.Helper()
	drv := memory.New()
	t.Cleanup(func() { drv.Close() })
	s, err := session.New(context.Background(), drv, session.WithTTL(10*time.Second),
		session.WithErrorPolicy(session.SessionPolicy))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return drv, s
}

func TestWaitBacksOffWhileConnected(t *testing.T) {
	_, s := open(t)
	var backoff time.Duration
	for _, want := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond} {
		if err := retry.Wait(context.Background(), s, &backoff); err != nil {
			t.Fatal(err)
		}
		if backoff != want {
			t.Fatalf("backoff after a wait: %v, want %v (doubling from 50ms)", backoff, want)
		}
	}
	backoff = time.Second
	if err := retry.Wait(context.Background(), s, &backoff); err != nil || backoff != time.Second {
		t.Fatalf("at the cap: err %v, backoff %v, want 1s", err, backoff)
	}
}

func TestWaitReturnsOnReconnect(t *testing.T) {
	drv, s := open(t)
	if err := drv.Disconnect(s.ID()); err != nil {
		t.Fatal(err)
	}
	for s.State() != session.StateSuspended {
		changes, stop := s.Changes()
		<-changes
		stop()
	}
	backoff := 400 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- retry.Wait(context.Background(), s, &backoff) }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned while suspended: %v", err)
	case <-time.After(600 * time.Millisecond): // absence check: longer than the backoff
	}
	if err := drv.Reconnect(s.ID()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || backoff != 0 {
		t.Fatalf("after the reconnect: err %v, backoff %v, want nil and 0", err, backoff)
	}
}

func TestWaitEndsWithContextAndSession(t *testing.T) {
	drv, s := open(t)
	if err := drv.Disconnect(s.ID()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var backoff time.Duration
	if err := retry.Wait(ctx, s, &backoff); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- retry.Wait(context.Background(), s, &backoff) }()
	// Closing while disconnected reports that the server keeps the session
	// until it expires; the session is closed all the same.
	_ = s.Close(context.Background())
	if err := <-done; !errors.Is(err, coordkit.ErrClosed) {
		t.Fatalf("session closed: %v, want ErrClosed", err)
	}
}
