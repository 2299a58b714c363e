package backendtest_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/backendtest"
	"github.com/coordkit/coordkit/backend/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newMemory(t *testing.T) backend.Driver {
	d := memory.New()
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func TestMemory(t *testing.T) { backendtest.Run(t, newMemory) }

// memoryFaults is backendtest.Faults on a memory.Driver, which injects the
// faults into a session by its id and leaves its other sessions alone.
type memoryFaults struct {
	d *memory.Driver
	// wrap, if set, wraps each session opened (the mutants).
	wrap func(backend.Conn) backend.Conn
}

func (f memoryFaults) Open(ctx context.Context, ttl time.Duration) (backend.Conn, error) {
	c, err := f.d.Open(ctx, ttl)
	if err != nil || f.wrap == nil {
		return c, err
	}
	return f.wrap(c), nil
}

func (f memoryFaults) Disconnect(t testing.TB, c backend.Conn) {
	t.Helper()
	if err := f.d.Disconnect(c.SessionID()); err != nil {
		t.Fatalf("memory Disconnect: %v", err)
	}
}

func (f memoryFaults) Reconnect(t testing.TB, c backend.Conn) {
	t.Helper()
	if err := f.d.Reconnect(c.SessionID()); err != nil {
		t.Fatalf("memory Reconnect: %v", err)
	}
}

func (f memoryFaults) Expire(t testing.TB, c backend.Conn) {
	t.Helper()
	if err := f.d.Expire(c.SessionID()); err != nil {
		t.Fatalf("memory Expire: %v", err)
	}
}

// memoryFaultOptions: a short TTL, since a session closed while cut off
// ends only when the server (on the real clock) times it out.
var memoryFaultOptions = backendtest.Options{TTL: time.Second}

func newMemoryFaults(t *testing.T) (backend.Driver, backendtest.Faults) {
	d := memory.New()
	t.Cleanup(func() { _ = d.Close() })
	return d, memoryFaults{d: d}
}

func TestMemoryFaults(t *testing.T) {
	backendtest.RunFaultsWithOptions(t, newMemoryFaults, memoryFaultOptions)
}
