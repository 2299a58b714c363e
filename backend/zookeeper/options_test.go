package zookeeper

import (
	"testing"

	"go.uber.org/zap"
)

// TestNewNilOption: New skips nil options, as the other packages do, and
// needs no server (it does no network I/O).
func TestNewNilOption(t *testing.T) {
	log := zap.NewExample()
	d, err := New([]string{"127.0.0.1:1"}, nil, WithLogger(log), nil)
	if err != nil {
		t.Fatalf("New with nil options: %v", err)
	}
	if d.opts.log != log {
		t.Errorf("the option after a nil one was not applied")
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close of a driver that opened nothing: %v", err)
	}
}
