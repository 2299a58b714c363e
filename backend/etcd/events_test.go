package etcd

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit/backend"
)

// TestPumpAbandoned: the events left after the terminal one wait for a
// reader in pump; Driver.Close abandons them (abandonEvents), and pump
// closes the channel and returns, so that nothing outlives Driver.Close
// waiting for a reader that never comes.
func TestPumpAbandoned(t *testing.T) {
	defer goleak.VerifyNone(t)
	c := &conn{events: make(chan backend.ConnEvent), abandoned: make(chan struct{}), eventsDone: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.pump([]backend.ConnEvent{{State: backend.StateDisconnected}, {State: backend.StateClosed}})
	}()
	c.abandonEvents()
	c.abandonEvents() // idempotent
	<-done
	if _, ok := <-c.events; ok {
		t.Fatal("an event after the pump was abandoned")
	}
	if !c.eventsDelivered() {
		t.Fatal("events closed, but not reported delivered")
	}
}
