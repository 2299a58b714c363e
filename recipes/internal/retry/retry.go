// Package retry is how every recipe waits after a failed call before it
// tries again on the same session: for the session to reconnect, or, while
// the session still looks connected (it has not processed the disconnect
// yet, or the loss was a single broken call), for a backoff that doubles
// from 50ms to 1s.
package retry

import (
	"context"
	"time"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/session"
)

const (
	first   = 50 * time.Millisecond
	longest = time.Second
)

// Wait waits until it is worth trying again on s: s reconnected (the
// backoff starts over), or s looks connected and can hold and *backoff has
// passed (the backoff doubles). It returns ctx.Err() when ctx ends first,
// and s's terminal error (coordkit.ErrClosed if not recorded yet) when s
// ends. *backoff is the caller's; zero means the first wait.
func Wait(ctx context.Context, s *session.Session, backoff *time.Duration) error {
	changes, stop := s.Changes()
	defer stop()
	if *backoff == 0 {
		*backoff = first
	}
	for {
		var timer *time.Timer
		var elapsed <-chan time.Time
		if st := s.State(); (st == session.StateConnected || st == session.StateReconnected) && s.HoldContext().Err() == nil {
			timer = time.NewTimer(*backoff)
			elapsed = timer.C
			*backoff = min(2**backoff, longest)
		}
		select {
		case c, ok := <-changes:
			if timer != nil {
				timer.Stop()
			}
			if !ok || c.State.Terminal() {
				if err := s.Err(); err != nil {
					return err
				}
				return coordkit.ErrClosed
			}
			if c.State == session.StateReconnected {
				*backoff = 0
				return nil
			}
		case <-elapsed:
			return nil
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return ctx.Err()
		}
	}
}
