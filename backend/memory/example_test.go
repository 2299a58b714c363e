package memory_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// The in-memory driver in a unit test of code that uses a lock: two
// sessions on one store, a fault injected into the holder's, and what the
// holder and the other session see.
func Example() {
	ctx := context.Background()
	drv := memory.New()
	defer drv.Close()
	open := func() *session.Session {
		s, err := session.New(ctx, drv, session.WithTTL(10*time.Second))
		if err != nil {
			panic(err)
		}
		return s
	}
	a, b := open(), open()
	defer a.Close(ctx)
	defer b.Close(ctx)
	ma, _ := mutex.New(a, "/locks/job")
	mb, _ := mutex.New(b, "/locks/job")

	g, err := ma.Lock(ctx)
	if err != nil {
		panic(err)
	}
	_, err = mb.TryLock(ctx)
	fmt.Println("b while a holds:", errors.Is(err, recipes.ErrLocked))

	_ = drv.Disconnect(a.ID()) // a's connection is cut
	<-g.Done()
	fmt.Println("a's hold ended:", errors.Is(g.Err(), session.ErrSuspended))

	_ = drv.Expire(a.ID()) // the server gives a's session up
	gb, err := mb.Lock(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("b's token is larger:", gb.Token() > g.Token())
	_ = gb.Unlock(ctx)
	// Output:
	// b while a holds: true
	// a's hold ended: true
	// b's token is larger: true
}
