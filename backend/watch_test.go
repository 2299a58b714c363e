package backend_test

import (
	"testing"

	"github.com/coordkit/coordkit/backend"
)

// TestWatchFired: Fired does not wait, receives the event once it is there
// and keeps reporting it; a FiredWatch has fired already.
func TestWatchFired(t *testing.T) {
	c := make(chan backend.WatchEvent, 1)
	stopped := 0
	w := backend.NewWatch(c, func() { stopped++ })
	if w.Fired() {
		t.Fatal("Fired before any event")
	}
	c <- backend.WatchEvent{Type: backend.EventDeleted, Path: "/p"}
	if !w.Fired() || !w.Fired() {
		t.Fatal("Fired after the event: false")
	}
	select {
	case ev := <-w.C():
		t.Fatalf("C delivered %v after Fired received it", ev)
	default:
	}
	w.Stop()
	if stopped != 1 {
		t.Fatalf("Stop called the driver's stop %d times", stopped)
	}

	f := backend.FiredWatch(backend.WatchEvent{Type: backend.EventLost, Path: "/q"})
	if ev := <-f.C(); ev.Type != backend.EventLost || ev.Path != "/q" {
		t.Fatalf("FiredWatch delivered %+v", ev)
	}
	f.Stop() // no stop function: a no-op
	if !backend.FiredWatch(backend.WatchEvent{Type: backend.EventChanged}).Fired() {
		t.Fatal("FiredWatch: Fired false")
	}
}
