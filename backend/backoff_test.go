package backend

import (
	"context"
	"testing"
	"time"
)

func TestBackoffPause(t *testing.T) {
	b := Backoff{Min: 250 * time.Millisecond, Max: 2 * time.Second}
	want := []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 2 * time.Second}
	for n, w := range want {
		if got := b.Pause(n); got != w {
			t.Errorf("Pause(%d) = %v, want %v", n, got, w)
		}
	}
	if got := b.Pause(-1); got != 0 {
		t.Errorf("Pause(-1) = %v", got)
	}
	if got := b.Pause(1 << 20); got != b.Max {
		t.Errorf("Pause(huge) = %v", got)
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), 0) || !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep on a live ctx = false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if Sleep(ctx, time.Hour) || Sleep(ctx, 0) {
		t.Error("Sleep on a done ctx = true")
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("Sleep on a done ctx took %v", el)
	}
}
