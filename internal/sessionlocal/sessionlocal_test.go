package sessionlocal

import (
	"context"
	"sync"
	"testing"
)

type keyA struct{}
type keyB struct{}

// One value per key and Table, made once even under concurrent first calls;
// another key or another Table has its own.
func TestGet(t *testing.T) {
	ctx := WithTable(context.Background(), New())
	made := 0
	newA := func() *int { made++; v := made; return &v }

	var wg sync.WaitGroup
	got := make([]*int, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = Get(ctx, keyA{}, newA)
		}()
	}
	wg.Wait()
	for i, p := range got {
		if p != got[0] {
			t.Fatalf("Get %d returned another value than Get 0", i)
		}
	}
	if made != 1 {
		t.Fatalf("the value was made %d times, want 1", made)
	}
	// A context derived from ctx finds the same Table.
	derived, cancel := context.WithCancel(ctx)
	defer cancel()
	if Get(derived, keyA{}, newA) != got[0] {
		t.Fatal("a derived context found another value")
	}
	if b := Get(ctx, keyB{}, func() string { return "b" }); b != "b" {
		t.Fatalf("another key: %q", b)
	}
	other := WithTable(context.Background(), New())
	if Get(other, keyA{}, newA) == got[0] {
		t.Fatal("another Table shared the value")
	}
	if made != 2 {
		t.Fatalf("made %d values, want 2 (one per Table)", made)
	}
}

// Without a Table there is nothing to share: every Get makes a new value.
func TestGetWithoutTable(t *testing.T) {
	ctx := context.Background()
	if From(ctx) != nil {
		t.Fatal("a bare context carries a Table")
	}
	newV := func() *int { return new(int) }
	if Get(ctx, keyA{}, newV) == Get(ctx, keyA{}, newV) {
		t.Fatal("two Gets without a Table returned the same value")
	}
}
