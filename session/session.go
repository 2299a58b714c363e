package session

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/clock"
	"github.com/coordkit/coordkit/internal/detach"
	"github.com/coordkit/coordkit/internal/sessionlocal"
)

// State is a state of a Session.
type State int

// The states of a Session; see the package documentation.
const (
	StateConnected State = iota + 1
	StateSuspended
	StateReconnected
	StateLost
	StateClosed
)

// String returns the state's name.
func (s State) String() string {
	switch s {
	case StateConnected:
		return "Connected"
	case StateSuspended:
		return "Suspended"
	case StateReconnected:
		return "Reconnected"
	case StateLost:
		return "Lost"
	case StateClosed:
		return "Closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Terminal reports whether no state follows s.
func (s State) Terminal() bool { return s == StateLost || s == StateClosed }

// Change is one state change of a Session.
type Change struct {
	State State
	// Err says why, for Suspended, Lost and Closed.
	Err error
	// At is when the change was observed.
	At time.Time
}

// Sentinel errors of the session package. ErrSuspended, ErrExpired and
// ErrLostByTimer all match coordkit.ErrSessionLost with errors.Is; ErrClosed
// is coordkit.ErrClosed.
var (
	// ErrSuspended: the connection to the server is suspended, so under
	// StandardPolicy every hold on the session may be gone.
	ErrSuspended = fmt.Errorf("session: connection suspended, holds may be gone: %w", coordkit.ErrSessionLost)
	// ErrExpired: the server ended the session (ZooKeeper session expired,
	// etcd lease revoked, expired or not found).
	ErrExpired = fmt.Errorf("session: expired on the server: %w", coordkit.ErrSessionLost)
	// ErrLostByTimer: the session stayed suspended longer than LostAfter,
	// so it is presumed expired on the server.
	ErrLostByTimer = fmt.Errorf("session: suspended longer than the session timeout: %w", coordkit.ErrSessionLost)
	// ErrClosed: the session was closed by its owner.
	ErrClosed = coordkit.ErrClosed
)

// Session is a connection with a lease. It is safe for concurrent use.
type Session struct {
	conn   backend.Conn
	opts   options
	log    *zap.Logger
	ctx    context.Context // cancelled with the terminal cause
	cancel context.CancelCauseFunc

	closeReq  chan struct{} // closed by Close to ask the loop to close
	closeOnce sync.Once
	closeErr  error // set once, inside closeOnce
	loopDone  chan struct{}

	mu       sync.Mutex // guards the fields below; written only by the loop
	state    State
	err      error
	hold     context.Context // current hold epoch
	holdStop context.CancelCauseFunc
	subs     map[*subscriber]struct{}
	final    Change // the terminal change, for a subscriber that comes after it
}

// New opens a session on the driver and returns it once it is Connected.
// ctx bounds the connection attempt only. The session lives until Close or
// until it is Lost.
func New(ctx context.Context, d backend.Driver, opts ...Option) (*Session, error) {
	if ctx == nil {
		return nil, fmt.Errorf("session: nil context: %w", coordkit.ErrInvalidArgument)
	}
	if d == nil {
		return nil, fmt.Errorf("session: nil driver: %w", coordkit.ErrInvalidArgument)
	}
	o := defaultOptions()
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	conn, err := d.Open(ctx, o.ttl)
	if err != nil {
		return nil, fmt.Errorf("session: open %s session: %w", d.Name(), err)
	}
	s := &Session{
		conn:     conn,
		opts:     o,
		closeReq: make(chan struct{}),
		loopDone: make(chan struct{}),
		subs:     make(map[*subscriber]struct{}),
	}
	s.log = o.logger.With(zap.String("backend", d.Name()), zap.String("session", conn.SessionID()))
	ctx, cancel := context.WithCancelCause(context.Background())
	// The recipes on the session keep their shared state in one
	// sessionlocal.Table, which they find in s.ctx. One entry is the
	// session's detach.Runner, made here so that its idle goroutine exits
	// when the session ends.
	s.ctx, s.cancel = sessionlocal.WithTable(ctx, sessionlocal.New()), cancel
	detach.From(s.ctx)
	s.hold, s.holdStop = context.WithCancelCause(s.ctx)
	s.state = StateConnected
	// The driver's first event is StateConnected; the loop consumes it.
	go s.loop()
	s.log.Info("session connected", zap.Duration("timeout", conn.Timeout()))
	return s, nil
}

// Conn returns the backend connection the session owns, for recipes. Do not
// close it directly; close the Session.
func (s *Session) Conn() backend.Conn { return s.conn }

// ID returns the session id (ZooKeeper session id or etcd lease id, hex).
func (s *Session) ID() string { return s.conn.SessionID() }

// Timeout returns the session timeout in force (negotiated by the server).
func (s *Session) Timeout() time.Duration { return s.conn.Timeout() }

// State returns the current state.
func (s *Session) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Done returns a channel closed when the session is Lost or Closed.
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Err returns nil while the session lives; afterwards why it ended: an error
// matching coordkit.ErrSessionLost (ErrExpired, ErrLostByTimer) or
// coordkit.ErrClosed.
func (s *Session) Err() error {
	select {
	case <-s.ctx.Done():
		return context.Cause(s.ctx)
	default:
		return nil
	}
}

// Context returns a context cancelled when the session ends; its
// context.Cause is Err().
func (s *Session) Context() context.Context { return s.ctx }

// HoldContext returns the context a recipe ties a hold (lock, permit,
// leadership) to: it is cancelled, with the cause, as soon as the session's
// ErrorPolicy says that holds may be gone, and never comes back, even if the
// session reconnects. A hold taken after a reconnect gets a fresh one
// (not once Close has begun). To
// close the race with a suspension, take it before sending the request that
// decides a grant and check it after the grant.
//
// Its cause matches coordkit.ErrHoldLost and the reason (ErrSuspended,
// ErrExpired, coordkit.ErrClosed, ...); HoldEndReason gives the reason
// alone. A recipe's hold derives its context from it, so the hold is done
// by the time the session's call that ended this context returns.
func (s *Session) HoldContext() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hold
}

// Close ends the session: every live hold ends with an error matching
// coordkit.ErrClosed (a hold the policy already ended keeps its reason), no
// new hold epoch starts even if the connection comes back meanwhile, and
// then the driver asks the server to end the session, which deletes its
// ephemeral nodes at once (so that no hold outlives them). ctx bounds that
// goodbye (with a context that has no deadline, the session timeout bounds
// it); the session is closed locally whatever the server says. If the
// server could not be told (the client is cut off, or ctx ended first),
// Close returns an error matching backend.ErrConnectionLoss (ZooKeeper
// within about a second, the memory driver at once) or ctx's error (etcd,
// whose client retries the revoke until ctx ends: give Close a short
// deadline when the server may be unreachable); the server may then keep
// the session and its ephemeral nodes, lock nodes included, until it times
// out. Close is idempotent; every call returns the first call's error
// (closing a session that is already Lost is not an error).
func (s *Session) Close(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	s.closeOnce.Do(func() {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, s.conn.Timeout())
			defer cancel()
		}
		close(s.closeReq)
		// Every hold ends before the server deletes the session's nodes:
		// once they are gone another process can be granted the lock, and
		// no Guard of this session may still look held then.
		s.mu.Lock()
		s.holdStop(holdLost(coordkit.ErrClosed))
		s.mu.Unlock()
		err := s.conn.Close(ctx)
		<-s.loopDone
		// Closing a session that is already lost is not an error, whatever
		// the driver says of the goodbye it could not deliver.
		if err != nil && !errors.Is(err, coordkit.ErrClosed) && !errors.Is(err, coordkit.ErrSessionLost) && s.State() != StateLost {
			s.closeErr = fmt.Errorf("session: close: %w", err)
		}
	})
	<-s.loopDone
	return s.closeErr
}

// loop owns every state transition.
func (s *Session) loop() {
	defer close(s.loopDone)
	events := s.conn.Events()
	var lostTimer clock.Timer
	var lostC <-chan time.Time
	stopTimer := func() {
		if lostTimer != nil {
			lostTimer.Stop()
			lostTimer, lostC = nil, nil
		}
	}
	defer stopTimer()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				// The driver closed its events without a terminal event:
				// treat as expired rather than pretend to live on.
				s.finish(StateLost, fmt.Errorf("%w (driver stopped reporting)", ErrExpired))
				return
			}
			switch ev.State {
			case backend.StateConnected:
				// Initial state, already set by New.
			case backend.StateDisconnected:
				if s.State() == StateSuspended {
					continue
				}
				s.transition(StateSuspended, errJoin(ErrSuspended, ev.Err))
				stopTimer()
				lostTimer = s.opts.clock.NewTimer(s.lostAfter())
				lostC = lostTimer.C()
			case backend.StateReconnected:
				stopTimer()
				if s.State() == StateSuspended {
					s.transition(StateReconnected, nil)
				}
			case backend.StateExpired:
				s.finish(StateLost, errJoin(ErrExpired, ev.Err))
				return
			case backend.StateClosed:
				s.finish(StateClosed, ErrClosed)
				return
			}
		case <-lostC:
			lostTimer, lostC = nil, nil
			s.log.Warn("session lost: suspended longer than the session timeout", zap.Duration("after", s.lostAfter()))
			s.finish(StateLost, ErrLostByTimer)
			// Make sure the connection cannot come back to life under us:
			// close it (a ZooKeeper client that reconnects would otherwise
			// go on with a session we have declared lost).
			ctx, cancel := context.WithTimeout(context.Background(), s.conn.Timeout())
			_ = s.conn.Close(ctx)
			cancel()
			return
		case <-s.closeReq:
			// Close is closing the conn; its StateClosed event ends the loop.
			// Stop the local timer so Lost cannot race the close.
			stopTimer()
			s.drainUntilTerminal(events)
			return
		}
	}
}

func (s *Session) lostAfter() time.Duration {
	if s.opts.lostAfter > 0 {
		return s.opts.lostAfter
	}
	return s.conn.Timeout()
}

// drainUntilTerminal waits for the driver's terminal event after Close.
func (s *Session) drainUntilTerminal(events <-chan backend.ConnEvent) {
	for ev := range events {
		if ev.State == backend.StateExpired {
			// Closing a session the server had already expired.
			s.finish(StateLost, errJoin(ErrExpired, ev.Err))
			return
		}
		if ev.State == backend.StateClosed {
			break
		}
	}
	s.finish(StateClosed, ErrClosed)
}

// transition records a non-terminal state and tells holds and subscribers.
func (s *Session) transition(st State, cause error) {
	endHolds := s.opts.policy(st) // the user's code: not under s.mu
	s.mu.Lock()
	prev := s.state
	s.state = st
	if st == StateReconnected && s.hold.Err() != nil && !s.closeRequested() {
		// Holds of the last epoch stay ended; new holds get a new epoch
		// (unless Close has begun: a reconnect the loop sees after that
		// must not let a hold start while the nodes are being deleted).
		s.hold, s.holdStop = context.WithCancelCause(s.ctx)
	}
	if endHolds {
		s.holdStop(holdLost(cause))
	}
	s.publishLocked(Change{State: st, Err: cause, At: s.opts.clock.Now()})
	s.mu.Unlock()
	s.log.Info("session state", zap.Stringer("from", prev), zap.Stringer("to", st), zap.Error(cause), zap.Bool("holds_ended", endHolds))
}

// closeRequested reports whether Close has begun.
func (s *Session) closeRequested() bool {
	select {
	case <-s.closeReq:
		return true
	default:
		return false
	}
}

// finish records the terminal state.
func (s *Session) finish(st State, cause error) {
	s.mu.Lock()
	if s.state.Terminal() {
		s.mu.Unlock()
		return
	}
	prev := s.state
	s.state = st
	s.err = cause
	s.holdStop(holdLost(cause))
	s.cancel(cause)
	s.final = Change{State: st, Err: cause, At: s.opts.clock.Now()}
	s.publishLocked(s.final)
	for sub := range s.subs {
		sub.closeQueue()
	}
	s.subs = nil
	s.mu.Unlock()
	if st == StateLost {
		s.log.Warn("session lost", zap.Stringer("from", prev), zap.Error(cause))
	} else {
		s.log.Info("session closed", zap.Stringer("from", prev))
	}
}

func errJoin(sentinel, detail error) error {
	if detail == nil || errors.Is(detail, sentinel) {
		return sentinel
	}
	return fmt.Errorf("%w: %w", sentinel, detail)
}

// holdLost is the cause a hold context ends with: it matches
// coordkit.ErrHoldLost, and unwraps to reason.
func holdLost(reason error) error {
	switch {
	case reason == nil:
		return coordkit.ErrHoldLost
	case errors.Is(reason, coordkit.ErrHoldLost):
		return reason
	}
	return &holdLostError{reason}
}

// holdLostError is a hold context's cause: see HoldContext.
type holdLostError struct{ reason error }

func (e *holdLostError) Error() string        { return coordkit.ErrHoldLost.Error() + ": " + e.reason.Error() }
func (e *holdLostError) Is(target error) bool { return target == coordkit.ErrHoldLost }
func (e *holdLostError) Unwrap() error        { return e.reason }

// HoldEndReason returns why the hold context epoch (a HoldContext of some
// session) ended, without coordkit.ErrHoldLost: the error a call that
// could not get a hold returns (it held nothing, so it lost nothing). It
// is nil while epoch lasts.
func HoldEndReason(epoch context.Context) error {
	cause := context.Cause(epoch)
	var e *holdLostError
	if errors.As(cause, &e) {
		return e.reason
	}
	return cause
}
