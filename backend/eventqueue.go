package backend

import "sync"

// EventQueue is for drivers: it delivers a Conn's state events in order,
// never drops one (until Abort) and never blocks the producer. Events go straight into a
// buffered channel while it has room; behind a slow reader they queue up in
// an unbounded backlog fed to the channel by a goroutine that exists only
// while the backlog is non-empty. The channel is closed right after the
// terminal event. The zero value is not usable; call NewEventQueue.
type EventQueue struct {
	out   chan ConnEvent
	abort chan struct{}

	mu       sync.Mutex
	backlog  []ConnEvent
	pumping  bool // a pump goroutine owns the head of the backlog
	ended    bool // the terminal event was pushed
	aborted  bool
	closed   bool          // out is closed
	pumpDone chan struct{} // closed when the current pump exits
}

// closeOut closes the channel. Called with q.mu held.
func (q *EventQueue) closeOut() {
	q.closed = true
	close(q.out)
}

// Delivered reports whether the channel is closed: the reader has been
// handed every event up to the terminal one, or Abort dropped the rest.
// A driver keeps a closed Conn's queue until then, to Abort it at
// Driver.Close.
func (q *EventQueue) Delivered() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

// NewEventQueue returns a queue whose channel buffers buffer events.
func NewEventQueue(buffer int) *EventQueue {
	return &EventQueue{out: make(chan ConnEvent, buffer), abort: make(chan struct{})}
}

// C is the channel Conn.Events returns.
func (q *EventQueue) C() <-chan ConnEvent { return q.out }

// Push queues ev. Events after the terminal one, or after Abort, are
// ignored.
func (q *EventQueue) Push(ev ConnEvent) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ended || q.aborted {
		return
	}
	q.ended = ev.State.Terminal()
	if !q.pumping {
		select {
		case q.out <- ev:
			if q.ended {
				q.closeOut()
			}
			return
		default:
		}
		q.pumping = true
		q.pumpDone = make(chan struct{})
		go q.pump(q.pumpDone)
	}
	q.backlog = append(q.backlog, ev)
}

// Abort is for a driver being closed while nobody reads: it stops the pump,
// drops what the reader has not taken and closes the channel if the terminal
// event has not closed it. It returns once the pump goroutine has exited.
func (q *EventQueue) Abort() {
	q.mu.Lock()
	if q.aborted {
		q.mu.Unlock()
		return
	}
	q.aborted = true
	close(q.abort)
	done := q.pumpDone
	pumping := q.pumping
	closedByTerminal := q.ended && !pumping
	q.mu.Unlock()
	if pumping {
		<-done // the pump closes the channel
		return
	}
	if !closedByTerminal {
		q.mu.Lock()
		q.ended = true
		q.closeOut()
		q.mu.Unlock()
	}
}

func (q *EventQueue) pump(done chan struct{}) {
	defer close(done)
	for {
		q.mu.Lock()
		if q.aborted {
			// Abort came while a send was under way: the send won, and
			// the channel must still close before Abort returns.
			q.backlog, q.pumping, q.ended = nil, false, true
			q.closeOut()
			q.mu.Unlock()
			return
		}
		if len(q.backlog) == 0 {
			q.pumping = false
			if q.ended {
				q.closeOut()
			}
			q.mu.Unlock()
			return
		}
		ev := q.backlog[0]
		q.mu.Unlock()
		select {
		case q.out <- ev:
			q.mu.Lock()
			q.backlog[0] = ConnEvent{}
			q.backlog = q.backlog[1:]
			q.mu.Unlock()
		case <-q.abort:
			q.mu.Lock()
			q.backlog, q.pumping, q.ended = nil, false, true
			q.closeOut()
			q.mu.Unlock()
			return
		}
	}
}

// UnreadEvents is for drivers: it keeps the Conns closed before
// Driver.Close whose Events still hold events nobody has read, so that
// Driver.Close can drop them and no goroutine outlives it waiting for a
// reader. delivered reports whether a Conn's Events is closed (every event
// taken, or dropped). The zero value is not usable; call NewUnreadEvents.
// It is not safe for concurrent use: the driver's lock guards it.
type UnreadEvents[C comparable] struct {
	delivered func(C) bool
	conns     map[C]struct{}
}

// NewUnreadEvents returns an empty set that asks delivered about its Conns.
func NewUnreadEvents[C comparable](delivered func(C) bool) *UnreadEvents[C] {
	return &UnreadEvents[C]{delivered: delivered, conns: map[C]struct{}{}}
}

// Closed records that c was closed: it is kept if its events are not all
// delivered, and those kept before whose events have been taken since are
// forgotten.
func (u *UnreadEvents[C]) Closed(c C) {
	for k := range u.conns {
		if u.delivered(k) {
			delete(u.conns, k)
		}
	}
	if !u.delivered(c) {
		u.conns[c] = struct{}{}
	}
}

// Take returns the Conns kept and forgets them (Driver.Close).
func (u *UnreadEvents[C]) Take() []C {
	out := make([]C, 0, len(u.conns))
	for c := range u.conns {
		out = append(out, c)
	}
	clear(u.conns)
	return out
}
