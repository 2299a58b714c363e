package integration_test

import (
	"context"
	"maps"
	"slices"
	"testing"

	"go.etcd.io/etcd/client/v3/concurrency"

	zkdrv "github.com/coordkit/coordkit/backend/zookeeper"
	"github.com/coordkit/coordkit/integration"
)

// The uncontended cost of both locks, pinned as requests and writes (not
// timings, which belong to the benchmarks): what the speed of an
// uncontended Lock+Unlock rests on, so that a change that adds a round
// trip fails here rather than in a benchmark nobody reads.

// lockCycles is how many uncontended cycles each case counts.
const lockCycles = 20

// TestLockUncontendedRequestsZooKeeper: on the wire, one cycle is two
// round trips. The mutex: the stamped create multi (create, pin, the
// directory's setData), then the stamped delete multi (check the
// directory's version, delete the pin and the owner node); no read at all.
// The fairlock: the create multi (with the directory's setData, for the
// token) with the listing pipelined behind it, then the delete. No other
// request: no token read, no read before the delete.
func TestLockUncontendedRequestsZooKeeper(t *testing.T) {
	zkc := sharedZK.Get(t)
	want := map[string]map[int32]int{ // recipe → opcode → requests per cycle
		"mutex":    {zkOpMulti: 2},
		"fairlock": {zkOpMulti: 1, zkOpGetChildren2: 1, zkOpDelete: 1},
	}
	for _, r := range lockRecipes {
		t.Run(r.name, func(t *testing.T) {
			wire := newLossyDialer(zkc.Addr(0), true)
			s := lockSession(t, openZooKeeperDriver(t, zkc.Addrs(), zkdrv.WithDialer(wire.dialZK)))
			cycle := lockCycle(r.open(t, s, r.path(t)))
			perCycle := want[r.name]
			ctx, cancel := context.WithTimeout(context.Background(), lockBound)
			defer cancel()
			if err := cycle(ctx); err != nil { // creates the lock's directory
				t.Fatal(err)
			}
			wire.drainRequests()
			for range lockCycles {
				if err := cycle(ctx); err != nil {
					t.Fatal(err)
				}
			}
			total := 0
			for _, n := range perCycle {
				total += n * lockCycles
			}
			got := map[int32]int{}
			for _, op := range wire.requestsSince(total) {
				got[op]++
			}
			t.Logf("%d uncontended cycles wrote %v (opcode: count)", lockCycles, got)
			// Exactly the writes; the reads as wanted, plus at most one
			// in ten cycles: a pipelined read that the server answered
			// before its create is sent again after it (a listing, or the
			// GetW that arms the watch). The server may also reap the
			// lock's directory, an empty container between two cycles, on
			// its own schedule (the kit's servers look every second): the
			// next create then makes it again (createContainer) and sends
			// its multi, and any read behind it, again.
			reaped := got[zkOpCreateContainer]
			if reaped > 2 {
				t.Fatalf("%d cycles wrote %v: the directory was made again %d times", lockCycles, got, reaped)
			}
			extra := 0
			for _, op := range slices.Sorted(maps.Keys(got)) {
				want := perCycle[op] * lockCycles
				switch op {
				case zkOpCreateContainer:
				case zkOpMulti:
					if got[op] != want+reaped {
						t.Fatalf("%d cycles wrote %v; want per cycle %v (opcode: count), and one multi more for each directory made again", lockCycles, got, perCycle)
					}
				case zkOpDelete:
					if got[op] != want {
						t.Fatalf("%d cycles wrote %v; want per cycle %v (opcode: count)", lockCycles, got, perCycle)
					}
				case zkOpExists, zkOpGetData, zkOpGetChildren2:
					if got[op] < want {
						t.Fatalf("%d cycles wrote %v; want per cycle %v (opcode: count)", lockCycles, got, perCycle)
					}
					extra += got[op] - want
				default:
					t.Fatalf("%d cycles wrote %v: unexpected opcode %d", lockCycles, got, op)
				}
			}
			if extra > lockCycles/10+reaped {
				t.Fatalf("%d cycles wrote %v: %d reads more than %v per cycle", lockCycles, got, extra, perCycle)
			}
		})
	}
}

// TestLockUncontendedWritesEtcd: on etcd, one cycle is exactly two writes
// (two revisions) for both locks, as for concurrency.Mutex: a create Txn
// and a delete.
func TestLockUncontendedWritesEtcd(t *testing.T) {
	// A member of its own: the revision counts every write to it.
	eps := integration.StartEtcd(t).Endpoints()
	cli := connectEtcd(t, eps...)
	ctx, cancel := context.WithTimeout(context.Background(), lockBound)
	defer cancel()
	s := lockSession(t, openEtcdDriver(t, eps))
	cm := concurrency.NewMutex(concurrencySession(t, eps...), mxPath(t)+"-concurrency")
	revision := func() int64 {
		r, err := cli.Get(ctx, "/coordkit-revision-probe")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	type lockCase struct {
		name  string
		cycle func(ctx context.Context) error
	}
	cases := []lockCase{
		{"concurrency.Mutex", func(ctx context.Context) error {
			if err := cm.Lock(ctx); err != nil {
				return err
			}
			return cm.Unlock(ctx)
		}},
	}
	for _, r := range lockRecipes {
		cases = append(cases, lockCase{r.name, lockCycle(r.open(t, s, r.path(t)))})
	}
	for _, tc := range cases {
		before := revision()
		for range lockCycles {
			if err := tc.cycle(ctx); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
		}
		per := float64(revision()-before) / lockCycles
		t.Logf("%s: %.2f writes per uncontended cycle", tc.name, per)
		if per != 2 {
			t.Fatalf("%s: %.2f writes per uncontended cycle, want 2 (a create Txn and a delete)", tc.name, per)
		}
	}
}

// lockCycle returns one uncontended Lock and Unlock of h.
func lockCycle(h lockHandle) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		g, err := h.lock(ctx)
		if err != nil {
			return err
		}
		return g.Unlock(ctx)
	}
}
