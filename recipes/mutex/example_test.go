package mutex_test

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// Lock, work under the guard's context, unlock. The in-memory backend
// stands in for ZooKeeper or etcd.
func Example() {
	drv := memory.New()
	defer drv.Close()
	ctx := context.Background()
	s, err := session.New(ctx, drv)
	if err != nil {
		panic(err)
	}
	defer s.Close(ctx)

	m, err := mutex.New(s, "/locks/inventory")
	if err != nil {
		panic(err)
	}
	g, err := m.Lock(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("held:", g.Err() == nil, "token > 0:", g.Token() > 0)
	// ... do the work under g.Context(), pass g.Token() to the store ...
	if err := g.Unlock(ctx); err != nil {
		panic(err)
	}
	fmt.Println("after Unlock:", g.Err())
	// Output:
	// held: true token > 0: true
	// after Unlock: recipes: already released
}

// Goroutines of one process share the process's acquisition: the lock
// passes between them without a server round trip, and they share its
// fencing token.
func Example_goroutines() {
	drv := memory.New()
	defer drv.Close()
	ctx := context.Background()
	s, _ := session.New(ctx, drv)
	defer s.Close(ctx)
	m, _ := mutex.New(s, "/locks/counter")

	counter := 0
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				g, err := m.Lock(ctx)
				if err != nil {
					panic(err)
				}
				counter++
				g.Unlock(ctx)
			}
		}()
	}
	wg.Wait()
	fmt.Println("counter:", counter)
	// Output:
	// counter: 1000
}

// TryLock does not wait: it reports recipes.ErrLocked when another session
// (or another goroutine of this one) holds the lock.
func ExampleMutex_TryLock() {
	drv := memory.New()
	defer drv.Close()
	ctx := context.Background()
	a, _ := session.New(ctx, drv)
	defer a.Close(ctx)
	b, _ := session.New(ctx, drv)
	defer b.Close(ctx)
	ma, _ := mutex.New(a, "/locks/report")
	mb, _ := mutex.New(b, "/locks/report")

	g, _ := ma.Lock(ctx)
	_, err := mb.TryLock(ctx)
	fmt.Println("b while a holds:", errors.Is(err, recipes.ErrLocked))
	g.Unlock(ctx)
	gb, err := mb.TryLock(ctx)
	fmt.Println("b after a unlocked:", err == nil, "larger token:", gb.Token() > g.Token())
	gb.Unlock(ctx)
	// Output:
	// b while a holds: true
	// b after a unlocked: true larger token: true
}
