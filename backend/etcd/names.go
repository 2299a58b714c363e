package etcd

import (
	"fmt"
	"sync"

	"github.com/google/uuid"
)

// namePool hands out the keys of one Conn's sequential creates and takes
// back those whose node the Conn has deleted, so that a session that joins
// and leaves a queue again and again (a lock taken and released in a loop)
// uses a few keys instead of a new one each time. etcd keeps every deleted
// key in its index until the next compaction, and every listing of the
// directory walks them: with a new key per call, a lock's listing grows
// slower with every acquisition since the last compaction.
//
// A key is taken back only after a Delete by its Conn found it gone, so two
// live nodes of a Conn never share a key, and never after a Delete whose
// outcome was unknown (see retire), so a late delete never meets a newer
// node. A key whose create found it
// already there (someone else re-created it) is dropped for good. The pool
// forgets a base once none of its keys is live (unless one was dropped), so
// its size follows the Conn's live nodes, not every path it ever used.
type namePool struct {
	mu      sync.Mutex
	protect string              // this Conn's "_c_<uuid>-" prefix for protected sequential names
	next    map[string]uint64   // per base: the next suffix never handed out
	free    map[string][]uint64 // per base: suffixes free again, last freed on top
	live    map[string]int      // per base: keys handed out and not yet taken back
	pinned  map[string]bool     // bases with a dropped key: never forgotten
	inUse   map[string]poolSlot // key → where it came from
	orphans map[string]bool     // keys deleteOrphan has not finished with
}

type poolSlot struct {
	base string
	n    uint64
}

// protectedPrefix returns the Conn's protected prefix, "_c_<uuid>-": one
// uuid per Conn, since the suffix already makes each live name unique.
func (p *namePool) protectedPrefix() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.protect == "" {
		p.protect = protectedPrefix + uuid.NewString() + "-"
	}
	return p.protect
}

// take returns a key for a sequential create of base (the full path without
// its suffix) by the Conn of lease, and whether it is a recycled one.
func (p *namePool) take(base string, lease int64) (key string, recycled bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next == nil {
		p.next, p.free, p.inUse = map[string]uint64{}, map[string][]uint64{}, map[string]poolSlot{}
		p.live, p.pinned = map[string]int{}, map[string]bool{}
	}
	p.live[base]++
	var n uint64
	if f := p.free[base]; len(f) > 0 {
		n, recycled = f[len(f)-1], true
		if len(f) == 1 {
			delete(p.free, base)
		} else {
			p.free[base] = f[:len(f)-1]
		}
	} else {
		p.next[base]++
		n = p.next[base]
	}
	key = base + fmt.Sprintf("%016x-%d", uint64(lease), n)
	p.inUse[key] = poolSlot{base, n}
	return key, recycled
}

// orphan marks key as the node of a create whose outcome is unknown: until
// releaseOrphan or drop, release leaves it taken (a late create may still
// land on it, see deleteOrphan).
func (p *namePool) orphan(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.inUse[key]; !ok {
		return
	}
	if p.orphans == nil {
		p.orphans = map[string]bool{}
	}
	p.orphans[key] = true
}

// releaseOrphan takes back a key marked by orphan, once deleteOrphan is done
// with it.
func (p *namePool) releaseOrphan(key string) {
	p.mu.Lock()
	delete(p.orphans, key)
	p.mu.Unlock()
	p.release(key)
}

// release takes key back once a Delete by the Conn found it gone. Keys the
// pool did not hand out, and orphans (see orphan), are ignored.
func (p *namePool) release(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.orphans[key] {
		return
	}
	s, ok := p.inUse[key]
	if !ok {
		return
	}
	delete(p.inUse, key)
	p.live[s.base]--
	if p.live[s.base] == 0 && !p.pinned[s.base] {
		// Nothing of this base is live: start over next time.
		delete(p.live, s.base)
		delete(p.next, s.base)
		delete(p.free, s.base)
		return
	}
	p.free[s.base] = append(p.free[s.base], s.n)
}

// retire keeps key from ever being handed out again: a Delete of it failed
// with its outcome unknown (a reply lost, a request timed out), and such a
// request may still be applied later, after a later Delete has found the
// key gone: had the key gone to a new node of the Conn meanwhile, the late
// delete would remove that node.
func (p *namePool) retire(key string) { p.drop(key) }

// drop forgets key without making it free again: its create found a node
// there that the pool cannot account for, or a delete of it may still be
// applied (retire).
func (p *namePool) drop(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.orphans, key)
	if s, ok := p.inUse[key]; ok {
		delete(p.inUse, key)
		p.pinned[s.base] = true // its next must never come back to key
	}
}
