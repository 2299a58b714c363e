package memory

import (
	"fmt"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
)

// node is one znode. All fields are guarded by Driver.mu.
type node struct {
	path, name  string
	data        []byte
	czxid       int64
	version     int32
	owner       *conn // nil for a persistent node
	container   bool
	hadChildren bool  // a container is removed once this is set and it is empty
	cversion    int32 // the next sequence number of a child
	seq         int32
	sequential  bool
	parent      *node
	children    map[string]*node
}

// snapshot returns n as Get reports it.
func (n *node) snapshot() backend.Node {
	out := backend.Node{
		Path:       n.path,
		Name:       n.name,
		Data:       clone(n.data),
		Seq:        int64(n.seq),
		Sequential: n.sequential,
		Token:      n.czxid,
		Version:    int64(n.version),
	}
	if n.owner != nil {
		out.Owner = n.owner.id
	}
	return out
}

// watch is one armed Watch or WatchChildren. Its fields are guarded by
// Driver.mu; ch has room for its one event.
type watch struct {
	c        *conn
	path     string
	children bool
	ch       chan backend.WatchEvent
	armed    bool                // registered in Driver.dataW or childW
	held     *backend.WatchEvent // fired while c was disconnected
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

func join(parent, name string) string {
	if parent == "/" {
		return "/" + name
	}
	return backend.Join(parent, name)
}

// versionOK reports whether version matches n (AnyVersion always does).
func versionOK(n *node, version int64) bool {
	return version == backend.AnyVersion || version == int64(n.version)
}

// ensure returns the node at path, creating it and its missing ancestors as
// containers.
func (d *Driver) ensure(path string) (*node, error) {
	if n := d.nodes[path]; n != nil {
		if n.owner != nil {
			return nil, fmt.Errorf("%s is ephemeral and cannot have children (as on ZooKeeper): %w", path, coordkit.ErrInvalidArgument)
		}
		return n, nil
	}
	parentPath, name := backend.Split(path)
	p, err := d.ensure(parentPath)
	if err != nil {
		return nil, err
	}
	n := d.add(p, name, nil)
	n.container = true
	return n, nil
}

// create is the server side of Create: parent's missing ancestors become
// containers, name gets its sequence suffix, and the node is added.
func (d *Driver) create(c *conn, parent, name string, data []byte, opts backend.CreateOptions) (*node, error) {
	p, err := d.ensure(parent)
	if err != nil {
		return nil, err
	}
	seq := p.cversion
	if opts.Sequential {
		name += fmt.Sprintf("%010d", seq)
	}
	if p.children[name] != nil {
		return nil, backend.ErrNodeExists
	}
	n := d.add(p, name, data)
	if opts.Sequential {
		n.seq, n.sequential = seq, true
	}
	if opts.Ephemeral {
		n.owner = c
		c.ephemerals[n.path] = n
	}
	return n, nil
}

// add creates a persistent child of p and fires the watches it triggers.
func (d *Driver) add(p *node, name string, data []byte) *node {
	d.zxid++
	n := &node{
		path:     join(p.path, name),
		name:     name,
		data:     clone(data),
		czxid:    d.zxid,
		parent:   p,
		children: map[string]*node{},
	}
	p.children[name] = n
	p.cversion++
	p.hadChildren = true
	d.nodes[n.path] = n
	d.fire(d.dataW, n.path, backend.EventCreated)
	d.fire(d.childW, p.path, backend.EventChildren)
	return n
}

// remove deletes a childless n, fires the watches it triggers, and removes
// its parent too if that is a container left empty.
func (d *Driver) remove(n *node) {
	d.zxid++
	p := n.parent
	delete(p.children, n.name)
	p.cversion++
	delete(d.nodes, n.path)
	if n.owner != nil {
		delete(n.owner.ephemerals, n.path)
	}
	d.fire(d.dataW, n.path, backend.EventDeleted)
	d.fire(d.childW, n.path, backend.EventDeleted)
	d.fire(d.childW, p.path, backend.EventChildren)
	if p.container && p.hadChildren && len(p.children) == 0 {
		d.remove(p)
	}
}

// removable reports why the node at path cannot be deleted at version, or
// nil.
func (d *Driver) removable(path string, version int64) error {
	n := d.nodes[path]
	switch {
	case n == nil:
		return backend.ErrNoNode
	case !versionOK(n, version):
		return backend.ErrBadVersion
	case len(n.children) > 0:
		return backend.ErrNotEmpty
	}
	return nil
}

// set is the server side of Set.
func (d *Driver) set(path string, data []byte, version int64) (*node, error) {
	n := d.nodes[path]
	switch {
	case n == nil:
		return nil, backend.ErrNoNode
	case !versionOK(n, version):
		return nil, backend.ErrBadVersion
	}
	d.zxid++
	n.data = clone(data)
	n.version++
	d.fire(d.dataW, path, backend.EventChanged)
	return n, nil
}

// checkGuards reports the first guard that does not hold.
func (d *Driver) checkGuards(guards []backend.Guard) error {
	for _, g := range guards {
		n := d.nodes[g.Path]
		switch {
		case n == nil:
			return fmt.Errorf("%w: %s: %w", backend.ErrGuardFailed, g.Path, backend.ErrNoNode)
		case g.Token != 0 && g.Token != n.czxid:
			return fmt.Errorf("%w: %s is another node now (token %d, guard %d): %w", backend.ErrGuardFailed, g.Path, n.czxid, g.Token, backend.ErrNoNode)
		case !versionOK(n, g.Version):
			return fmt.Errorf("%w: %s: %w", backend.ErrGuardFailed, g.Path, backend.ErrBadVersion)
		}
	}
	return nil
}

// children lists parent's children as ZooKeeper's driver does
// (backend.SortBySeq): sequential ones by sequence number, then the others by
// name. Sorting by sequence rather than by czxid keeps the order ZooKeeper
// gives after the counter wraps, or after SetNextSequence moved it, so tests
// on this driver see the order recipes see on ZooKeeper.
func (d *Driver) children(parent string) []backend.Node {
	p := d.nodes[parent]
	if p == nil || len(p.children) == 0 {
		return nil
	}
	out := make([]backend.Node, 0, len(p.children))
	for _, n := range p.children {
		out = append(out, backend.Node{Path: n.path, Name: n.name, Seq: int64(n.seq), Sequential: n.sequential})
	}
	backend.SortBySeq(out)
	return out
}

// arm registers a one-shot watch of c on path.
func (d *Driver) arm(c *conn, path string, children bool) *watch {
	w := &watch{c: c, path: path, children: children, ch: make(chan backend.WatchEvent, 1), armed: true}
	table := d.dataW
	if children {
		table = d.childW
	}
	m := table[path]
	if m == nil {
		m = map[*watch]struct{}{}
		table[path] = m
	}
	m[w] = struct{}{}
	c.watches[w] = struct{}{}
	return w
}

// unarm takes w out of its table, if it is still there.
func (d *Driver) unarm(w *watch) {
	if !w.armed {
		return
	}
	w.armed = false
	table := d.dataW
	if w.children {
		table = d.childW
	}
	delete(table[w.path], w)
	if len(table[w.path]) == 0 {
		delete(table, w.path)
	}
}

// stopWatch is Watch.Stop: the watch will not deliver.
func (d *Driver) stopWatch(w *watch) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := w.c.watches[w]; !ok {
		return
	}
	d.unarm(w)
	w.held = nil
	delete(w.c.watches, w)
}

// fire triggers every watch on path in table.
func (d *Driver) fire(table map[string]map[*watch]struct{}, path string, typ backend.EventType) {
	ws := table[path]
	delete(table, path)
	for w := range ws {
		w.armed = false
		ev := backend.WatchEvent{Type: typ, Path: path}
		c := w.c
		c.stats.WatchEvents++
		d.total.WatchEvents++
		if c.state == stateDisconnected {
			w.held = &ev
			continue
		}
		w.ch <- ev
		delete(c.watches, w)
	}
}
