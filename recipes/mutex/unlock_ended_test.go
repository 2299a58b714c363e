package mutex_test

import (
	"context"
	"errors"
	"testing"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/recipes"
)

// TestUnlockAfterSessionEndedEndsGuard: a solo holder's Guard, whose loop
// started for a local waiter (the handover phase), is unlocked right after
// its session ended (Close, or an expiry the session has seen) and before
// anything asked the Guard how it is doing. Unlock finds the loop gone and
// returns nil; by then the Guard must have ended: Done closed, Context done,
// and Err released or lost (lost: the session's end got there first), never
// nil, with Context's cause equal to Err.
//
// The loop ends in that phase without ending the hold, so only the session
// (the Guard's context is a child of its HoldContext) and Unlock's own
// cancel on finding the loop gone end the Guard; the rounds catch an
// ordering in which neither has by the time Unlock returns. Done is checked
// first: Err would end a lagging hold itself.
func TestUnlockAfterSessionEndedEndsGuard(t *testing.T) {
	const rounds = 100
	w := newWorld(t)
	for i := range 2 * rounds {
		s := w.session()
		m := w.mutex(s)
		g := lock(t, m)
		errs := lockErrs(m)
		waitFor(t, "the local waiter", func() bool { return m.Inspect().Waiting == 1 })
		reason := coordkit.ErrClosed
		if i%2 == 0 {
			if err := s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		} else {
			reason = coordkit.ErrSessionLost
			w.Expire(s)
			<-s.Done()
		}
		if err := <-errs; !errors.Is(err, reason) {
			t.Fatalf("round %d: local waiter: %v, want %v", i, err, reason)
		}
		if err := g.Unlock(context.Background()); err != nil {
			t.Fatalf("round %d: Unlock after the session ended: %v, want nil", i, err)
		}
		select {
		case <-g.Done():
		default:
			t.Fatalf("round %d: Unlock returned but the guard's Done is still open", i)
		}
		if g.Context().Err() == nil {
			t.Fatalf("round %d: Unlock returned but the guard's Context is not done", i)
		}
		err := g.Err()
		if !errors.Is(err, recipes.ErrReleased) && !(errors.Is(err, recipes.ErrLost) && errors.Is(err, reason)) {
			t.Fatalf("round %d: Err after Unlock: %v, want ErrReleased or ErrLost (%v)", i, err, reason)
		}
		if cause := context.Cause(g.Context()); cause != err {
			t.Fatalf("round %d: Context's cause %v, Err %v", i, cause, err)
		}
		if err := g.Unlock(context.Background()); !errors.Is(err, recipes.ErrReleased) {
			t.Fatalf("round %d: second Unlock: %v, want ErrReleased", i, err)
		}
	}
	w.empty()
}
