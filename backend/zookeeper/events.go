package zookeeper

import (
	"sync"

	"github.com/coordkit/coordkit/backend"
)

// eventBuffer is the capacity of the Events channel. Events beyond it wait in
// an unbounded slice fed to the channel by a goroutine that exists only while
// that slice is non-empty.
const eventBuffer = 64

// eventQueue delivers ConnEvents in order, never drops one and never blocks
// the producer (go-zookeeper's event loop). The channel is closed right after
// the terminal event.
type eventQueue struct {
	ch chan backend.ConnEvent

	mu      sync.Mutex
	pending []backend.ConnEvent
	pumping bool
	ended   bool // the terminal event was pushed
}

func newEventQueue() *eventQueue {
	return &eventQueue{ch: make(chan backend.ConnEvent, eventBuffer)}
}

// push queues ev. Events after the terminal one are ignored.
func (q *eventQueue) push(ev backend.ConnEvent) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ended {
		return
	}
	terminal := ev.State.Terminal()
	if terminal {
		q.ended = true
	}
	if len(q.pending) == 0 && !q.pumping {
		select {
		case q.ch <- ev:
			if terminal {
				close(q.ch)
			}
			return
		default:
		}
	}
	q.pending = append(q.pending, ev)
	if !q.pumping {
		q.pumping = true
		go q.pump()
	}
}

// pump feeds pending events to the channel, in order, until none is left.
func (q *eventQueue) pump() {
	for {
		q.mu.Lock()
		if len(q.pending) == 0 {
			q.pumping = false
			if q.ended {
				close(q.ch)
			}
			q.mu.Unlock()
			return
		}
		ev := q.pending[0]
		q.mu.Unlock()

		q.ch <- ev

		q.mu.Lock()
		q.pending[0] = backend.ConnEvent{}
		q.pending = q.pending[1:]
		q.mu.Unlock()
	}
}
