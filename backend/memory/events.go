package memory

import (
	"sync"

	"github.com/coordkit/coordkit/backend"
)

// eventBuffer is how many state events wait in a Conn's channel before a
// goroutine takes over the backlog. Few tests produce more, so most Conns
// never start one.
const eventBuffer = 64

// eventQueue is an ordered, unbounded queue of state events in front of a
// buffered channel. While the channel has room, push sends directly; once it
// is full, the backlog grows and a pump goroutine feeds the channel until
// the backlog is empty. The channel is closed right after the terminal
// event, by whoever delivers it.
type eventQueue struct {
	out chan backend.ConnEvent

	mu      sync.Mutex
	backlog []backend.ConnEvent
	pumping bool // a pump goroutine owns the backlog
	ended   bool // the terminal event was pushed
}

func newEventQueue() *eventQueue {
	return &eventQueue{out: make(chan backend.ConnEvent, eventBuffer)}
}

// push appends ev. Events after the terminal one are ignored. A pump
// started here registers with wg and stops at abort (Driver.Close).
func (q *eventQueue) push(ev backend.ConnEvent, wg *sync.WaitGroup, abort <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ended {
		return
	}
	q.ended = ev.State.Terminal()
	if !q.pumping {
		select {
		case q.out <- ev:
			if q.ended {
				close(q.out)
			}
			return
		default:
		}
		q.pumping = true
		wg.Add(1)
		go q.pump(wg, abort)
	}
	q.backlog = append(q.backlog, ev)
}

// pump feeds the backlog into the channel. At abort it closes the channel
// and drops what the reader has not taken: the Driver is closed and nobody
// is reading.
func (q *eventQueue) pump(wg *sync.WaitGroup, abort <-chan struct{}) {
	defer wg.Done()
	for {
		q.mu.Lock()
		if len(q.backlog) == 0 {
			q.pumping = false
			if q.ended {
				close(q.out)
			}
			q.mu.Unlock()
			return
		}
		ev := q.backlog[0]
		q.mu.Unlock()
		select {
		case q.out <- ev:
			q.mu.Lock()
			q.backlog = q.backlog[1:]
			q.mu.Unlock()
		case <-abort:
			q.mu.Lock()
			q.backlog, q.pumping, q.ended = nil, false, true
			close(q.out)
			q.mu.Unlock()
			return
		}
	}
}
