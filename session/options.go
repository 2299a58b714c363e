package session

import (
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/clock"
)

// DefaultTTL is the session timeout asked of the server when WithTTL is not
// given. ZooKeeper's default server settings (tickTime 2s) accept 4s–40s.
const DefaultTTL = 15 * time.Second

// ErrorPolicy decides whether a state ends every hold taken on the session.
// Lost and Closed always end them, whatever the policy says, without asking
// it. It is called on the session's own goroutine for every change to
// Suspended or Reconnected, before the session records it: it should return
// at once. It may read the Session (State, Err, HoldContext report the state
// before the change), but must not call Close, which waits for that
// goroutine.
type ErrorPolicy func(State) bool

// StandardPolicy ends holds on Suspended and Lost: Curator's standard
// policy, and the default. A holder stops as soon as it cannot reach the
// server, before the server can expire its session.
func StandardPolicy(s State) bool {
	return s == StateSuspended || s == StateLost || s == StateClosed
}

// SessionPolicy ends holds only when the session is Lost (or Closed). Holds
// survive a short disconnect, but a holder learns of a partition only when
// the local timer or the server declares the session lost, which can be
// after the server gave the hold to someone else.
func SessionPolicy(s State) bool { return s == StateLost || s == StateClosed }

// Option configures a Session.
type Option func(*options)

type options struct {
	ttl       time.Duration
	lostAfter time.Duration
	policy    ErrorPolicy
	logger    *zap.Logger
	clock     clock.Clock
}

func defaultOptions() options {
	return options{ttl: DefaultTTL, policy: StandardPolicy, logger: zap.NewNop(), clock: clock.Real()}
}

func (o options) validate() error {
	if o.ttl <= 0 {
		return fmt.Errorf("session: TTL %v must be positive: %w", o.ttl, coordkit.ErrInvalidArgument)
	}
	if o.lostAfter < 0 {
		return fmt.Errorf("session: LostAfter %v must not be negative: %w", o.lostAfter, coordkit.ErrInvalidArgument)
	}
	return nil
}

// WithTTL sets the session timeout asked of the server (ZooKeeper session
// timeout, etcd lease TTL, rounded up to whole seconds). Default DefaultTTL.
// The server may adjust it; Session.Timeout tells the value in force.
func WithTTL(d time.Duration) Option { return func(o *options) { o.ttl = d } }

// WithErrorPolicy sets which states end holds. Default StandardPolicy.
func WithErrorPolicy(p ErrorPolicy) Option {
	return func(o *options) {
		if p != nil {
			o.policy = p
		}
	}
}

// WithLostAfter sets how long the session may stay Suspended before the
// local timer declares it Lost. Default (0): the session timeout in force,
// as Curator does.
func WithLostAfter(d time.Duration) Option { return func(o *options) { o.lostAfter = d } }

// WithLogger sets the logger for state changes. Default: no logging.
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithClock sets the clock behind the local loss timer (tests use
// clock.NewFake). Default clock.Real().
func WithClock(c clock.Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock = c
		}
	}
}
