// Package sessionlocal keeps the state that the recipes on one session share,
// without a package-level registry: a session makes one Table and carries it
// in its own context (WithTable), and a recipe finds its entry there (Get).
// The mutex, for instance, keeps the local queues of all its handles on one
// session in the entry it makes, so that two handles on one path and session
// share one queue; a second session gets a second Table, and the entries go
// with the session once nothing refers to it.
package sessionlocal

import (
	"context"
	"sync"
)

// Table holds one value per key for the recipes of one session. It is safe
// for concurrent use; make it with New.
type Table struct {
	mu     sync.Mutex
	values map[any]any
}

// New returns an empty Table.
func New() *Table { return &Table{values: map[any]any{}} }

// tableKey is the context key of WithTable.
type tableKey struct{}

// WithTable returns ctx carrying t.
func WithTable(ctx context.Context, t *Table) context.Context {
	return context.WithValue(ctx, tableKey{}, t)
}

// From returns the Table ctx carries (see WithTable), or nil.
func From(ctx context.Context) *Table {
	t, _ := ctx.Value(tableKey{}).(*Table)
	return t
}

// Get returns the value of key in the Table ctx carries, made by newValue on
// the first call for key: every later Get of key on that Table returns the
// same value. key should be of a type of the calling package, as with
// context keys, so that packages cannot collide. If ctx carries no Table
// there is nothing to share with, and Get returns newValue's value, unshared.
// A value of another type than T under key is a programming error of the
// calling package, and Get panics then.
func Get[T any](ctx context.Context, key any, newValue func() T) T {
	t := From(ctx)
	if t == nil {
		return newValue()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.values[key]; ok {
		return v.(T)
	}
	v := newValue()
	t.values[key] = v
	return v
}
