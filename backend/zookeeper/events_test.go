package zookeeper

import (
	"context"
	"fmt"
	"testing"

	"github.com/coordkit/coordkit/backend"
)

// TestDriverCloseDropsUnreadEvents: a Conn whose Events nobody reads, with
// more state events than the channel buffers (a connection that flapped),
// leaves no goroutine behind Driver.Close (goleak runs in the env's
// cleanup): the unread events are dropped and the channel is closed. So
// with a Conn that was closed before Driver.Close, its StateClosed queued
// behind the unread events.
func TestDriverCloseDropsUnreadEvents(t *testing.T) {
	for _, closedFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("conn-closed-first=%v", closedFirst), func(t *testing.T) {
			driverCloseDropsUnreadEvents(t, closedFirst)
		})
	}
}

func driverCloseDropsUnreadEvents(t *testing.T, closedFirst bool) {
	e := newZKEnv(t)
	for range 2 * eventBuffer {
		e.c.events.Push(backend.ConnEvent{State: backend.StateDisconnected})
		e.c.events.Push(backend.ConnEvent{State: backend.StateReconnected})
	}
	if closedFirst {
		if err := e.c.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.d.Close(); err != nil {
		t.Fatal(err)
	}
	n := 0
	for range e.c.Events() {
		n++
	}
	if n > eventBuffer+1 {
		t.Fatalf("read %d events after Driver.Close, want at most the buffer's %d and the terminal one", n, eventBuffer)
	}
}
