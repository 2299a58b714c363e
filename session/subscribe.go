package session

import "sync"

// subscriber is one ordered, unbounded queue of changes with a forwarding
// goroutine. The session's loop appends under s.mu; the forwarder owns
// delivery.
type subscriber struct {
	mu      sync.Mutex
	queue   []Change
	closed  bool          // no more changes will be appended
	wake    chan struct{} // cap 1: something was appended or closed
	removed chan struct{} // closed by the subscriber's cancel
	once    sync.Once
}

func newSubscriber() *subscriber {
	return &subscriber{wake: make(chan struct{}, 1), removed: make(chan struct{})}
}

func (sub *subscriber) push(c Change) {
	sub.mu.Lock()
	sub.queue = append(sub.queue, c)
	sub.mu.Unlock()
	sub.poke()
}

func (sub *subscriber) closeQueue() {
	sub.mu.Lock()
	sub.closed = true
	sub.mu.Unlock()
	sub.poke()
}

func (sub *subscriber) poke() {
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

func (sub *subscriber) remove() { sub.once.Do(func() { close(sub.removed) }) }

// run calls deliver for every change in order until the queue is closed and
// drained, or the subscriber is removed. deliver returns false to stop.
func (sub *subscriber) run(deliver func(Change) bool) {
	for {
		sub.mu.Lock()
		var next []Change
		next, sub.queue = sub.queue, nil
		closed := sub.closed
		sub.mu.Unlock()
		for _, c := range next {
			if !deliver(c) {
				return
			}
		}
		if closed && len(next) == 0 {
			return
		}
		if len(next) > 0 {
			continue
		}
		select {
		case <-sub.wake:
		case <-sub.removed:
			return
		}
	}
}

// publishLocked queues c for every subscriber; s.mu is held.
func (s *Session) publishLocked(c Change) {
	for sub := range s.subs {
		sub.push(c)
	}
}

// subscribe registers a subscriber, or returns nil if the session has ended.
func (s *Session) subscribe() *subscriber {
	sub := newSubscriber()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs == nil { // ended: deliver the terminal change only
		sub.queue = append(sub.queue, s.final)
		sub.closed = true
		return sub
	}
	s.subs[sub] = struct{}{}
	return sub
}

func (s *Session) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	if s.subs != nil {
		delete(s.subs, sub)
	}
	s.mu.Unlock()
	sub.remove()
}

// Changes returns a channel that receives every state change from now on, in
// order, and is closed after the terminal change (Lost or Closed). If the
// session has already ended it receives only the terminal change. Nothing is
// dropped: changes queue up behind a slow reader. Call stop when you no
// longer read, to release the forwarding goroutine; the channel is then
// closed.
func (s *Session) Changes() (changes <-chan Change, stop func()) {
	sub := s.subscribe()
	ch := make(chan Change)
	go func() {
		defer close(ch)
		sub.run(func(c Change) bool {
			select {
			case ch <- c:
				return true
			case <-sub.removed:
				return false
			}
		})
	}()
	return ch, func() { s.unsubscribe(sub) }
}

// OnStateChange registers fn to be called with every state change from now
// on, in order, on a library goroutine (never on the caller's). fn must not
// block for long: later changes wait for it. The terminal change (Lost or
// Closed) is always delivered, after which the goroutine ends. remove stops
// further calls. A nil fn registers nothing (remove does nothing).
func (s *Session) OnStateChange(fn func(Change)) (remove func()) {
	if fn == nil {
		return func() {}
	}
	sub := s.subscribe()
	go sub.run(func(c Change) bool {
		select {
		case <-sub.removed:
			return false
		default:
		}
		fn(c)
		return true
	})
	return func() { s.unsubscribe(sub) }
}
