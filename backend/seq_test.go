package backend_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/coordkit/coordkit/backend"
)

func seqNode(name string, seq int64) backend.Node {
	return backend.Node{Name: name, Path: "/q/" + name, Seq: seq, Sequential: true}
}

func plainNode(name string) backend.Node { return backend.Node{Name: name, Path: "/q/" + name} }

func names(nodes []backend.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Name
	}
	return out
}

// permutations calls f with every ordering of nodes.
func permutations(nodes []backend.Node, f func([]backend.Node)) {
	var rec func(k int)
	rec = func(k int) {
		if k == len(nodes) {
			f(slices.Clone(nodes))
			return
		}
		for i := k; i < len(nodes); i++ {
			nodes[k], nodes[i] = nodes[i], nodes[k]
			rec(k + 1)
			nodes[k], nodes[i] = nodes[i], nodes[k]
		}
	}
	rec(0)
}

func TestSortBySeq(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes []backend.Node
		want  []string
	}{
		{"no wrap", []backend.Node{seqNode("c", 5), seqNode("a", 1), seqNode("b", 3)}, []string{"a", "b", "c"}},
		{"negative, no wrap", []backend.Node{seqNode("c", 1), seqNode("a", -2), seqNode("b", -1)}, []string{"a", "b", "c"}},
		{"wrap crossing", []backend.Node{
			seqNode("c", math.MinInt32), seqNode("a", math.MaxInt32-1), seqNode("d", math.MinInt32+1), seqNode("b", math.MaxInt32),
		}, []string{"a", "b", "c", "d"}},
		{"foreign child antipodal to a wrapped queue", []backend.Node{
			seqNode("B", -2147483640), seqNode("job", 3), seqNode("A", math.MaxInt32),
		}, []string{"A", "B", "job"}},
		// The largest gap (2^31-1) ends at job: it comes first, and the
		// queue A, B, C stays in order after it.
		{"foreign child antipodal, queue across the wrap", []backend.Node{
			seqNode("job", 0), seqNode("C", math.MinInt32+1), seqNode("A", math.MaxInt32-1), seqNode("B", math.MinInt32),
		}, []string{"job", "A", "B", "C"}},
		// Members spanning < 2^31 inside a set that does not: the largest
		// gap is inside the members, so only a sort of the members alone
		// orders them (as waitq does).
		{"subset split by the largest gap", []backend.Node{
			seqNode("m1", 0), seqNode("m2", 1500000000), seqNode("f1", -2094967296), seqNode("f2", -1294967296), seqNode("f3", -594967296),
		}, []string{"m2", "f1", "f2", "f3", "m1"}},
		{"exactly antipodal: the smallest signed start wins", []backend.Node{
			seqNode("zero", 0), seqNode("min", math.MinInt32),
		}, []string{"min", "zero"}},
		{"etcd revisions above 2^31", []backend.Node{
			seqNode("c", 1<<40), seqNode("a", 3), seqNode("b", 1<<31+5),
		}, []string{"a", "b", "c"}},
		{"etcd revisions below 2^31", []backend.Node{
			seqNode("c", 1<<31-1), seqNode("a", 3), seqNode("b", 1<<30),
		}, []string{"a", "b", "c"}},
		{"non-sequential last by name", []backend.Node{
			plainNode("zeta"), seqNode("b", math.MinInt32), plainNode("alpha"), seqNode("a", math.MaxInt32),
		}, []string{"a", "b", "alpha", "zeta"}},
		{"equal Seq by name", []backend.Node{seqNode("y", 7), seqNode("x", 7), seqNode("w", 6)}, []string{"w", "x", "y"}},
		{"empty", nil, []string{}},
		{"only non-sequential", []backend.Node{plainNode("b"), plainNode("a")}, []string{"a", "b"}},
	} {
		// Every input order gives the same result: the order is total.
		permutations(tc.nodes, func(in []backend.Node) {
			backend.SortBySeq(in)
			if got := names(in); !slices.Equal(got, tc.want) {
				t.Errorf("%s: SortBySeq(%v) = %v, want %v", tc.name, names(in), got, tc.want)
			}
		})
	}
}

// TestSortBySeqLockExample is the case found by review: A (created first,
// holding) and B are lock nodes created after the counter wrapped,
// job-0000000003 a foreign node made early, antipodal to them. SeqLess orders job < A < B < job, so a sort
// by SeqLess put B before A for two of the listing orders the server can
// send. Every listing order must give A before B.
func TestSortBySeqLockExample(t *testing.T) {
	a := seqNode("_c_aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa-lock--2147483647", -2147483647)
	b := seqNode("_c_bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb-lock--2147483640", -2147483640)
	job := seqNode("job-0000000003", 3)
	if !backend.SeqLess(job.Seq, a.Seq) || !backend.SeqLess(a.Seq, b.Seq) || !backend.SeqLess(b.Seq, job.Seq) {
		t.Fatal("the example no longer makes SeqLess cyclic")
	}
	for _, in := range [][]backend.Node{{b, job, a}, {job, b, a}, {a, b, job}, {b, a, job}, {job, a, b}, {a, job, b}} {
		listing := names(in)
		backend.SortBySeq(in)
		if got := names(in); !slices.Equal(got, []string{a.Name, b.Name, job.Name}) {
			t.Errorf("listing %v sorted to %v", listing, got)
		}
	}
}

// TestSortBySeqAgreesWithSeqLess: for random sets spanning less than 2^31,
// anywhere on the circle, SortBySeq orders every pair as SeqLess does and
// does not depend on the input order.
func TestSortBySeqAgreesWithSeqLess(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 2000; round++ {
		start := int64(int32(r.Uint32()))
		span := int64(r.IntN(1 << 31))
		if round%4 == 0 {
			span = int64(r.IntN(64) + 1)
		}
		nodes := make([]backend.Node, r.IntN(12)+1)
		for i := range nodes {
			off := r.Int64N(span)
			nodes[i] = seqNode(string(rune('a'+i)), int64(int32(uint32(start)+uint32(off))))
		}
		got := slices.Clone(nodes)
		backend.SortBySeq(got)
		for i := range got {
			for _, later := range got[i+1:] {
				if backend.SeqLess(later.Seq, got[i].Seq) || (later.Seq == got[i].Seq && later.Name < got[i].Name) {
					t.Fatalf("round %d: %s (%d) sorted before %s (%d)", round, got[i].Name, got[i].Seq, later.Name, later.Seq)
				}
			}
		}
		r.Shuffle(len(nodes), func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
		backend.SortBySeq(nodes)
		if !slices.Equal(names(nodes), names(got)) {
			t.Fatalf("round %d: order depends on the input order: %v vs %v", round, names(nodes), names(got))
		}
	}
}
