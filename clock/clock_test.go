package clock_test

import (
	"testing"
	"time"

	"github.com/coordkit/coordkit/clock"
)

func TestFakeFiresInOrderAndStops(t *testing.T) {
	start := time.Unix(100, 0)
	f := clock.NewFake(start)
	a := f.NewTimer(2 * time.Second)
	b := f.NewTimer(time.Second)
	c := f.NewTimer(3 * time.Second)
	if f.Timers() != 3 {
		t.Fatalf("Timers() = %d, want 3", f.Timers())
	}
	if !c.Stop() || c.Stop() {
		t.Fatal("Stop must report true once, then false")
	}
	f.Advance(time.Second)
	select {
	case got := <-b.C():
		if !got.Equal(start.Add(time.Second)) {
			t.Fatalf("b fired at %v", got)
		}
	default:
		t.Fatal("b did not fire at its deadline")
	}
	select {
	case <-a.C():
		t.Fatal("a fired early")
	default:
	}
	f.Advance(time.Second)
	select {
	case <-a.C():
	default:
		t.Fatal("a did not fire")
	}
	if a.Stop() {
		t.Fatal("Stop after firing must report false")
	}
	if f.Timers() != 0 || !f.Now().Equal(start.Add(2*time.Second)) {
		t.Fatalf("Timers() = %d, Now() = %v", f.Timers(), f.Now())
	}
	select {
	case <-f.NewTimer(0).C():
	default:
		t.Fatal("a zero timer must fire at once")
	}
}

func TestRealClock(t *testing.T) {
	c := clock.Real()
	before := time.Now()
	if c.Now().Before(before) {
		t.Fatal("Real().Now() went backwards")
	}
	tm := c.NewTimer(time.Millisecond)
	select {
	case <-tm.C():
	case <-time.After(5 * time.Second):
		t.Fatal("real timer did not fire")
	}
	if c.NewTimer(time.Hour).Stop() != true {
		t.Fatal("stopping a pending real timer must report true")
	}
}
