package backend

import (
	"context"
	"time"
)

// Backoff paces a driver's repeated attempts at a call: no pause before the
// first attempt, then Min, doubling each time up to Max, so that a server
// or a connection that keeps failing at once is not asked in a tight loop.
type Backoff struct {
	Min, Max time.Duration
}

// Pause returns the pause before attempt n (counted from 0).
func (b Backoff) Pause(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	d := b.Min
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Sleep waits for d, or less if ctx ends first, and reports whether ctx is
// still live.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return ctx.Err() == nil
}
