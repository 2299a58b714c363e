package backend_test

import (
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit/backend"
)

func TestEventQueueOrderedUnboundedClosed(t *testing.T) {
	defer goleak.VerifyNone(t)
	const buffer, n = 4, 200
	q := backend.NewEventQueue(buffer)
	for i := 0; i < n; i++ {
		st := backend.StateDisconnected
		if i%2 == 1 {
			st = backend.StateReconnected
		}
		q.Push(backend.ConnEvent{State: st, At: time.Unix(int64(i), 0)}) // never blocks
	}
	q.Push(backend.ConnEvent{State: backend.StateExpired, At: time.Unix(n, 0)})
	q.Push(backend.ConnEvent{State: backend.StateClosed}) // after the terminal one: ignored
	i := 0
	for ev := range q.C() {
		if ev.At.Unix() != int64(i) {
			t.Fatalf("event %d out of order: %v", i, ev)
		}
		i++
	}
	if i != n+1 {
		t.Fatalf("got %d events, want %d", i, n+1)
	}
	q.Abort() // after the end: a no-op
}

func TestEventQueueTerminalWithinBuffer(t *testing.T) {
	q := backend.NewEventQueue(4)
	q.Push(backend.ConnEvent{State: backend.StateConnected})
	q.Push(backend.ConnEvent{State: backend.StateClosed})
	var got []backend.ConnState
	for ev := range q.C() {
		got = append(got, ev.State)
	}
	if len(got) != 2 || got[0] != backend.StateConnected || got[1] != backend.StateClosed {
		t.Fatalf("got %v, want [Connected Closed]", got)
	}
}

// Abort with a backlog nobody reads stops the pump and closes the channel.
func TestEventQueueAbortStopsPump(t *testing.T) {
	defer goleak.VerifyNone(t)
	q := backend.NewEventQueue(1)
	for i := 0; i < 10; i++ {
		q.Push(backend.ConnEvent{State: backend.StateDisconnected})
	}
	q.Abort()
	n := 0
	for range q.C() {
		n++
	}
	if n >= 10 {
		t.Fatalf("read %d events after Abort; the backlog should be dropped", n)
	}
	q.Push(backend.ConnEvent{State: backend.StateClosed}) // ignored, no panic
	q.Abort()
}

// Abort before any terminal event closes the channel itself.
func TestEventQueueAbortWithoutBacklog(t *testing.T) {
	q := backend.NewEventQueue(4)
	q.Push(backend.ConnEvent{State: backend.StateConnected})
	q.Abort()
	got := 0
	for range q.C() {
		got++
	}
	if got != 1 {
		t.Fatalf("got %d events, want the 1 buffered before Abort", got)
	}
}

// TestEventQueueAbortWhileSending: Abort comes while the pump is handing an
// event to a reader that takes it. Whichever of the two the pump sees
// first, the channel is closed when Abort returns.
func TestEventQueueAbortWhileSending(t *testing.T) {
	defer goleak.VerifyNone(t)
	for i := 0; i < 2000; i++ {
		q := backend.NewEventQueue(0)
		q.Push(backend.ConnEvent{State: backend.StateDisconnected})
		took := make(chan struct{})
		go func() {
			defer close(took)
			<-q.C() // the event, or the close if Abort won
		}()
		q.Abort()
		<-took
		select {
		case _, ok := <-q.C():
			if ok {
				t.Fatalf("round %d: an event after Abort returned", i)
			}
		default:
			t.Fatalf("round %d: the channel is still open after Abort returned", i)
		}
	}
}

// TestUnreadEvents: a closed Conn is kept while its events are undelivered,
// forgotten once they are, and Take hands over what is kept.
func TestUnreadEvents(t *testing.T) {
	delivered := map[string]bool{"read": true}
	u := backend.NewUnreadEvents(func(c string) bool { return delivered[c] })
	u.Closed("read")   // all taken: not kept
	u.Closed("behind") // kept
	u.Closed("later")  // kept
	delivered["behind"] = true
	u.Closed("third") // "behind" has been read since: forgotten
	got := u.Take()
	slices.Sort(got)
	if want := []string{"later", "third"}; !slices.Equal(got, want) {
		t.Fatalf("kept %v, want %v", got, want)
	}
	if got := u.Take(); len(got) != 0 {
		t.Fatalf("a second Take returned %v", got)
	}
}
