package session_test

import (
	"context"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/session"
)

// loopGate is a zap core that holds the session's loop at its log line of
// one state change ("session state" with to=at) until the test lets go,
// and reports, at the log line of a Reconnected, whether the session had a
// live hold epoch then.
type loopGate struct {
	zapcore.LevelEnabler
	at       string
	held     chan struct{} // the loop reached the line
	release  chan struct{}
	s        **session.Session
	liveHold chan bool
}

func (g *loopGate) With([]zapcore.Field) zapcore.Core { return g }
func (g *loopGate) Sync() error                       { return nil }
func (g *loopGate) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return ce.AddCore(e, g)
}

func (g *loopGate) Write(e zapcore.Entry, fields []zapcore.Field) error {
	if e.Message != "session state" {
		return nil
	}
	for _, f := range fields {
		if f.Key != "to" {
			continue
		}
		switch f.Interface.(session.State).String() {
		case g.at:
			close(g.held)
			<-g.release
		case session.StateReconnected.String():
			g.liveHold <- (*g.s).HoldContext().Err() == nil
		}
	}
	return nil
}

// TestNoHoldEpochStartsDuringClose: a reconnect that the session's loop
// handles after Close has ended the hold epoch (the loop was busy when both
// became ready) must not start a new one: Close deletes the session's nodes
// next, and no hold may start, or look live, meanwhile.
func TestNoHoldEpochStartsDuringClose(t *testing.T) {
	ctx := context.Background()
	for i := range 20 {
		drv := memory.New()
		var s *session.Session
		g := &loopGate{LevelEnabler: zapcore.DebugLevel, at: session.StateSuspended.String(),
			held: make(chan struct{}), release: make(chan struct{}), s: &s, liveHold: make(chan bool, 1)}
		var err error
		s, err = session.New(ctx, drv, session.WithErrorPolicy(session.SessionPolicy), session.WithLogger(zap.New(g)))
		if err != nil {
			t.Fatal(err)
		}
		drv.Disconnect(s.ID())
		<-g.held // the loop is busy with Suspended
		drv.Reconnect(s.ID())
		closed := make(chan struct{})
		go func() { s.Close(ctx); close(closed) }()
		<-s.HoldContext().Done() // Close has ended the epoch
		close(g.release)         // the loop now finds the reconnect and Close's request both ready
		<-closed
		select {
		case live := <-g.liveHold:
			if live {
				t.Fatalf("round %d: the loop handled the reconnect after Close had begun and started a live hold epoch", i)
			}
		default: // the loop took Close's request first
		}
		drv.Close()
	}
}
