package main

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coordkit/coordkit/integration"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/recipes/fence"
)

func TestMain(m *testing.M) { integration.VerifyTestMain(m) }

// TestDemoEtcd runs the demo as `go run ./examples/inventory` does: on an
// embedded etcd.
func TestDemoEtcd(t *testing.T) {
	check(t, config{workers: 4, stock: 3})
}

// TestDemoZooKeeper runs the demo with -zk on a ZooKeeper server from the
// test kit (skipped where Java and ZooKeeper are not installed, failed when
// CI is set).
func TestDemoZooKeeper(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a ZooKeeper server")
	}
	zk := integration.StartZooKeeper(t)
	check(t, config{zk: zk.Addr(0), workers: 4, stock: 3})
}

func check(t *testing.T, cfg config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := run(ctx, &out, cfg)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if rep.UnlockedSold < cfg.stock {
		t.Errorf("without a lock: sold %d of %d", rep.UnlockedSold, cfg.stock)
	}
	if rep.LockedSold != cfg.stock || rep.LockedLeft != 0 {
		t.Errorf("with the lock: sold %d, %d left; want %d, 0", rep.LockedSold, rep.LockedLeft, cfg.stock)
	}
	if rep.NewToken <= rep.StaleToken {
		t.Errorf("new holder's token %d not above the paused holder's %d", rep.NewToken, rep.StaleToken)
	}
	if !errors.Is(rep.StaleErr, fence.ErrStaleToken) {
		t.Errorf("the paused holder's write: %v, want ErrStaleToken", rep.StaleErr)
	}
	if !errors.Is(rep.PausedErr, recipes.ErrLost) {
		t.Errorf("the paused holder's guard: %v, want ErrLost", rep.PausedErr)
	}
}
