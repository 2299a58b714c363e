package fence_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/coordkit/coordkit/backend"
	"github.com/coordkit/coordkit/backend/memory"
	"github.com/coordkit/coordkit/recipes/fence"
	"github.com/coordkit/coordkit/recipes/mutex"
	"github.com/coordkit/coordkit/session"
)

// A register refuses a write whose token is older than one it has seen:
// what a resource must do to be safe against a holder that was paused past
// its session timeout.
func ExampleRegister() {
	stock := fence.NewRegister(3)

	// The old holder (token 100) reads, then pauses ...
	v, _ := stock.Load()
	// ... meanwhile its lease expires and a new holder (token 200) sells.
	if err := stock.Store(200, v-1); err != nil {
		panic(err)
	}
	// The old holder resumes and writes what it computed before.
	err := stock.Store(100, v-1)
	fmt.Println("stale write refused:", errors.Is(err, fence.ErrStaleToken))
	fmt.Println(err)
	v, highest := stock.Load()
	fmt.Println("stock:", v, "highest token:", highest)
	// Output:
	// stale write refused: true
	// fence: stale fencing token: token 100 < 200 already seen
	// stock: 2 highest token: 200
}

// Set writes data kept in the same backend only while the lock is held, in
// one server transaction.
func ExampleSet() {
	ctx := context.Background()
	drv := memory.New()
	defer drv.Close()
	s, _ := session.New(ctx, drv)
	defer s.Close(ctx)
	conn := s.Conn()
	conn.Create(ctx, "/config/limits", []byte("10"), backend.CreateOptions{})
	defer conn.Delete(ctx, "/config/limits", backend.AnyVersion)

	m, _ := mutex.New(s, "/locks/limits")
	g, _ := m.Lock(ctx)
	_, err := fence.Set(ctx, conn, g, "/config/limits", []byte("20"), backend.AnyVersion)
	fmt.Println("while held:", err)
	g.Unlock(ctx)
	_, err = fence.Set(ctx, conn, g, "/config/limits", []byte("30"), backend.AnyVersion)
	fmt.Println("after unlock:", errors.Is(err, fence.ErrStale))
	n, _ := conn.Get(ctx, "/config/limits")
	fmt.Println("value:", string(n.Data))
	// Output:
	// while held: <nil>
	// after unlock: true
	// value: 20
}
