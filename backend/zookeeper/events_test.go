package zookeeper

import (
	"testing"

	"github.com/coordkit/coordkit/backend"
)

// TestDriverCloseDropsUnreadEvents: a Conn whose Events nobody reads, with
// more state events than the channel buffers (a connection that flapped),
// leaves no goroutine behind Driver.Close (goleak runs in the env's
// cleanup): the unread events are dropped and the channel is closed.
func TestDriverCloseDropsUnreadEvents(t *testing.T) {
	e := newZKEnv(t)
	for range 2 * eventBuffer {
		e.c.events.Push(backend.ConnEvent{State: backend.StateDisconnected})
		e.c.events.Push(backend.ConnEvent{State: backend.StateReconnected})
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
