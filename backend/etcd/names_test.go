package etcd

import (
	"strings"
	"testing"
)

func TestNamePoolRecyclesOnlyReleasedKeys(t *testing.T) {
	var p namePool
	a, recycled := p.take("/q/lock-", 0xab)
	if recycled || a != "/q/lock-00000000000000ab-1" {
		t.Fatalf("first key %q (recycled %v)", a, recycled)
	}
	b, _ := p.take("/q/lock-", 0xab)
	if b == a {
		t.Fatalf("two live nodes share %q", a)
	}
	p.release("/q/other") // not handed out: ignored
	p.release(a)
	c, recycled := p.take("/q/lock-", 0xab)
	if c != a || !recycled {
		t.Fatalf("after release got %q (recycled %v), want %q again", c, recycled, a)
	}
	p.release(a)
	p.release(a) // a second release of the same key must not free it twice
	d, _ := p.take("/q/lock-", 0xab)
	e, _ := p.take("/q/lock-", 0xab)
	if d == e {
		t.Fatalf("a double release handed %q out twice", d)
	}
	p.drop(e)
	p.release(e) // dropped: never free again
	f, recycled := p.take("/q/lock-", 0xab)
	if f == e || recycled {
		t.Fatalf("a dropped key came back: %q (recycled %v)", f, recycled)
	}
	if other, _ := p.take("/r/lock-", 0xab); !strings.HasSuffix(other, "-1") {
		t.Fatalf("bases share suffixes: %q", other)
	}
	if pp := p.protectedPrefix(); !strings.HasPrefix(pp, "_c_") || len(pp) != len("_c_")+36+1 || pp != p.protectedPrefix() {
		t.Fatalf("protected prefix %q is not one stable _c_<uuid>-", pp)
	}
}

// A session that locks many distinct paths keeps no pool state for the
// paths it has let go.
func TestNamePoolForgetsIdleBases(t *testing.T) {
	var p namePool
	for i := range 100 {
		base := "/locks/order-" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "/lock-"
		k, _ := p.take(base, 1)
		p.release(k)
	}
	if len(p.next) != 0 || len(p.free) != 0 || len(p.live) != 0 || len(p.inUse) != 0 {
		t.Fatalf("pool keeps state for idle bases: next %d, free %d, live %d, inUse %d", len(p.next), len(p.free), len(p.live), len(p.inUse))
	}
	a, _ := p.take("/q/lock-", 1)
	b, _ := p.take("/q/lock-", 1)
	p.release(a)
	if len(p.next) != 1 || len(p.free["/q/lock-"]) != 1 {
		t.Fatalf("a base with a live key lost its state: next %v, free %v", p.next, p.free)
	}
	p.release(b)
	if len(p.next) != 0 {
		t.Fatalf("base kept after its last key went: %v", p.next)
	}
	// A dropped key pins its base, so its suffix is never handed out again.
	c, _ := p.take("/r/lock-", 1)
	p.drop(c)
	d, _ := p.take("/r/lock-", 1)
	p.release(d)
	if e, _ := p.take("/r/lock-", 1); e == c {
		t.Fatalf("dropped key %q handed out again", c)
	}
}
