package waitq

import (
	"slices"
	"testing"

	"github.com/coordkit/coordkit/backend"
)

func lockNode(name string, seq int64) backend.Node {
	return backend.Node{Name: name, Path: "/locks/fair/" + name, Seq: seq, Sequential: true}
}

func nodeNames(nodes []backend.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Name
	}
	return out
}

// TestMembersOrderIgnoresForeignChildren: the listing is in a wrong order
// (as a sort by SeqLess left it with a foreign child antipodal to the queue:
// B before A), and a foreign sequential child sits between them; members
// puts the members in queue order on their own, so B waits for A.
func TestMembersOrderIgnoresForeignChildren(t *testing.T) {
	a := lockNode("_c_aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa-lock--2147483647", -2147483647)
	b := lockNode("_c_bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb-lock--2147483640", -2147483640)
	c := lockNode("_c_cccccccc-cccc-cccc-cccc-cccccccccccc-lock--2147483638", -2147483638)
	job := lockNode("job-0000000003", 3)
	config := backend.Node{Name: "config", Path: "/locks/fair/config"}
	spec := &Spec{Dir: "/locks/fair", Name: "lock-", Member: NamedMember("lock-"), Decide: Predecessor(1)}
	for _, listing := range [][]backend.Node{
		{b, job, a, c, config},
		{job, b, c, a, config},
		{c, b, a, job},
		{a, b, c, job},
	} {
		for _, own := range []backend.Node{a, b, c} {
			e := &Entry{spec: spec, node: own, named: Named(own, "lock-"), kids: slices.Clone(listing)}
			if !e.named {
				t.Fatalf("%s not taken as named", own.Name)
			}
			queue, ours := e.members()
			if got, want := nodeNames(queue), nodeNames([]backend.Node{a, b, c}); !slices.Equal(got, want) {
				t.Errorf("listing %v: members %v, want %v", nodeNames(listing), got, want)
			}
			if ours < 0 || queue[ours].Path != own.Path {
				t.Errorf("listing %v: ours = %d for %s", nodeNames(listing), ours, own.Name)
			}
			if own.Path == a.Path && spec.Decide(queue, ours) != -1 {
				t.Errorf("listing %v: A is not granted", nodeNames(listing))
			}
			if own.Path == b.Path && (ours != 1 || spec.Decide(queue, ours) != 0) {
				t.Errorf("listing %v: B at %d does not wait for A", nodeNames(listing), ours)
			}
		}
	}

	// Our node missing from the listing.
	e := &Entry{spec: spec, node: c, named: true, kids: []backend.Node{b, job, a}}
	if queue, ours := e.members(); ours != -1 || !slices.Equal(nodeNames(queue), nodeNames([]backend.Node{a, b})) {
		t.Errorf("without our node: %v, %d", nodeNames(queue), ours)
	}

	// etcd: names carry no order, every child takes part, by create
	// revision, whatever the listing's order.
	r1 := backend.Node{Name: "k1", Path: "/locks/fair/k1", Seq: 1 << 32, Sequential: true}
	r2 := backend.Node{Name: "k2", Path: "/locks/fair/k2", Seq: 1<<32 + 9, Sequential: true}
	r3 := backend.Node{Name: "k0", Path: "/locks/fair/k0", Seq: 12, Sequential: true}
	e = &Entry{spec: spec, node: r2, named: false, kids: []backend.Node{r2, r1, r3}}
	if queue, ours := e.members(); ours != 2 || !slices.Equal(nodeNames(queue), []string{"k0", "k1", "k2"}) {
		t.Errorf("etcd: %v, %d", nodeNames(queue), ours)
	}
}
