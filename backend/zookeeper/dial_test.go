package zookeeper

import (
	"net"
	"os"
	"testing"
	"time"
)

// A read that fails (a receive timeout) closes the connection, so that a
// write blocked at the same time (a full socket buffer towards a server
// that no longer reads) returns at once instead of at its own deadline.
func TestCloseOnReadErrorUnblocksWrite(t *testing.T) {
	client, server := net.Pipe() // synchronous: a write blocks until read
	defer server.Close()
	c := closeOnReadError{client}
	wrote := make(chan error, 1)
	go func() {
		_ = c.SetWriteDeadline(time.Now().Add(time.Minute))
		_, err := c.Write(make([]byte, 1<<10)) // nobody reads the server end
		wrote <- err
	}()
	if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !os.IsTimeout(err) {
		t.Fatalf("read: %v, want a timeout", err)
	}
	select {
	case err := <-wrote:
		if err == nil {
			t.Fatal("the blocked write succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked write did not return after the read failed")
	}
}
