package fairlock_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/fairlock"
	"github.com/coordkit/coordkit/session"
)

// Two sessions (two processes, in real life) take the same fair lock. The
// second waits for the first, is granted next, and gets a larger fencing
// token. Run on the in-memory driver; pass a ZooKeeper or etcd driver to
// session.New to run it for real.
func Example() {
	ctx := context.Background()
	drv := memory.New()
	defer drv.Close()

	alice, _ := session.New(ctx, drv)
	defer alice.Close(ctx)
	bob, _ := session.New(ctx, drv)
	defer bob.Close(ctx)

	la, _ := fairlock.New(alice, "/locks/settlement")
	lb, _ := fairlock.New(bob, "/locks/settlement")

	ga, err := la.Lock(ctx)
	if err != nil {
		fmt.Println("alice:", err)
		return
	}
	fmt.Println("alice holds the lock")

	if _, err := lb.TryLock(ctx); errors.Is(err, recipes.ErrLocked) {
		fmt.Println("bob's TryLock: locked")
	}

	granted := make(chan *fairlock.Guard)
	go func() {
		gb, err := lb.Lock(ctx) // queues behind alice
		if err != nil {
			fmt.Println("bob:", err)
			close(granted)
			return
		}
		granted <- gb
	}()

	// Alice's work runs under ga.Context(), which is cancelled if the lock
	// may be lost; her writes carry ga.Token().
	_ = ga.Unlock(ctx)
	gb, ok := <-granted
	if !ok {
		return
	}
	fmt.Println("bob holds the lock; larger token:", gb.Token() > ga.Token())
	_ = gb.Unlock(ctx)
	fmt.Println("released:", errors.Is(gb.Err(), recipes.ErrReleased))

	// Output:
	// alice holds the lock
	// bob's TryLock: locked
	// bob holds the lock; larger token: true
	// released: true
}
