package session_test

import (
	"context"
	"fmt"
	"time"

	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/session"
)

// A session reports its state changes in order. Here the in-memory driver
// cuts the connection and restores it (on ZooKeeper or etcd the network
// does); under the default StandardPolicy the hold context ends at
// Suspended, before the server could expire the session.
func Example() {
	ctx := context.Background()
	drv := memory.New()
	defer drv.Close()
	s, err := session.New(ctx, drv, session.WithTTL(10*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	changes, stop := s.Changes()
	defer stop()
	hold := s.HoldContext() // what a lock taken now would be tied to

	_ = drv.Disconnect(s.ID())
	fmt.Println((<-changes).State)
	<-hold.Done()
	fmt.Println("hold ended:", context.Cause(hold) != nil)

	_ = drv.Reconnect(s.ID())
	fmt.Println((<-changes).State)

	_ = s.Close(ctx)
	fmt.Println((<-changes).State, s.Err() != nil)
	// Output:
	// Suspended
	// hold ended: true
	// Reconnected
	// Closed true
}
