package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/zap"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
)

const (
	// maxCreateAttempts bounds the create / create-parents / recover loop.
	maxCreateAttempts = 10
	// maxReadAttempts bounds the retries of the reads a create needs after
	// it succeeded (token, listing).
	maxReadAttempts = 5
)

var worldACL = zk.WorldACL(zk.PermAll)

var errNilContext = fmt.Errorf("nil context: %w", coordkit.ErrInvalidArgument)

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// createReq is one Create call as the driver carries it out.
type createReq struct {
	parent string // parent of the new node
	name   string // last element asked for, with the protected prefix
	full   string // parent + name: the path sent to the server
	prefix string // the protected prefix "_c_<uuid>-", or ""
	data   []byte
	flags  int32
	opts   backend.CreateOptions
	// watch asks createOnce to send an ExistsW of a non-sequential node
	// right behind the create; pipelined is its outcome for the create
	// that succeeded.
	watch     bool
	pipelined *existsW
	haveStat  bool // set by create: the Stat of the new node is known
	// list asks createOnce to send a Children of the parent right behind
	// the create (CreateAndList); listed is its outcome for the create that
	// succeeded. A sequential create then stamps the parent (see createOnce).
	list   bool
	listed *childrenResult
	// stamp asks createOnce to write the parent in the create's multi
	// (CreateStamped); stampVersion is the parent's version after it, and
	// stamped reports that the create that succeeded carried the stamp.
	// pin is the path of the pin a stamped create makes with the node.
	stamp        bool
	pin          string
	stamped      bool
	stampVersion int32
	// handOff, for a create of a fixed path, releases the path's lease
	// (see leasePath) once the create's outcome is known. createLoop
	// calls it when it returns, unless a background goroutine took it
	// over (handedOff).
	handOff   func()
	handedOff bool
}

// fixedPath reports whether the create's node is told apart from others
// of the same path by its owner alone (see leasePath).
func (r *createReq) fixedPath() bool { return r.prefix == "" && !r.opts.Sequential }

// resolveLater runs cleanupPending for r on a tracked goroutine, which
// takes the path's lease over.
func (c *conn) resolveLater(r *createReq) {
	release := r.handOff
	r.handedOff = c.goTracked(func() {
		defer release()
		c.cleanupPending(r)
	})
}

// childrenResult is the outcome of a Children call.
type childrenResult struct {
	kids []string
	err  error
}

// existsW is the outcome of an ExistsW.
type existsW struct {
	ok  bool
	st  *zk.Stat
	ch  <-chan zk.Event
	err error
}

// recoverable reports whether a create whose outcome was lost can be
// resolved: a protected node is found by its prefix, a fixed-path ephemeral
// node by its owner.
func (r *createReq) recoverable() bool {
	return r.prefix != "" || (r.opts.Ephemeral && !r.opts.Sequential)
}

// Create implements backend.Conn.
func (c *conn) Create(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, error) {
	const op = "create"
	n, r, err := c.create(ctx, op, path, data, opts, readNothing)
	if err != nil || r.haveStat {
		return n, err
	}
	return c.readToken(ctx, op, n)
}

// CreateStamped implements backend.ParentStamps with one multi: the create,
// the create of the pin (ephemeral, see backend.PinPath) and a setData of
// the parent (no data, any version). Every op of a multi shares one zxid,
// so the parent's mzxid in that setData's Stat is the new node's czxid (its
// token) and the parent's version is the stamp: one round trip, no read.
// The new node's version is 0. A parent the session may not write makes
// this and every later CreateStamped of the Conn return backend.ErrNoStamp
// (the failed multi created nothing), as does the root.
func (c *conn) CreateStamped(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, backend.Stamp, error) {
	const op = "create stamped"
	n, r, err := c.create(ctx, op, path, data, opts, stampOnly)
	if err != nil {
		return backend.Node{}, backend.Stamp{}, err
	}
	if !r.haveStat {
		if n, err = c.readToken(ctx, op, n); err != nil {
			c.unpinLater(r.pin)
			return backend.Node{}, backend.Stamp{}, err
		}
	}
	st := backend.Stamp{Pin: r.pin}
	if r.stamped {
		st.Parent, st.Known = backend.Guard{Path: r.parent, Version: int64(r.stampVersion)}, true
	} // else found after a lost reply: the stamp is unknown
	return n, st, nil
}

// DeleteStamped implements backend.ParentStamps with one multi: check the
// parent's version, delete the pin, delete the node.
func (c *conn) DeleteStamped(ctx context.Context, path string, version int64, st backend.Stamp) error {
	const op = "delete stamped"
	if err := c.pre(ctx, op, path); err != nil {
		return err
	}
	if !st.Known || st.Pin == "" {
		return fmt.Errorf("zookeeper: %s %s: %w: the stamp is unknown", op, path, backend.ErrGuardFailed)
	}
	_, err := c.guarded(ctx, op, path,
		[]any{
			&zk.CheckVersionRequest{Path: st.Parent.Path, Version: zkVersion(st.Parent.Version)},
			&zk.DeleteRequest{Path: st.Pin, Version: -1},
		},
		[]string{st.Parent.Path, st.Pin},
		&zk.DeleteRequest{Path: path, Version: zkVersion(version)})
	return err
}

// Unpin implements backend.ParentStamps.
func (c *conn) Unpin(ctx context.Context, st backend.Stamp) error {
	return backend.UnpinByDelete(ctx, c, st)
}

// unpinLater deletes pin, if not "", in the background (see deleteLater):
// the pin of a node this Conn created but could not return.
func (c *conn) unpinLater(pin string) {
	c.deleteLater(pin, -1, true)
}

// readToken reads the Stat of n, a node this Conn has just created whose
// create returned only its name (a plain sequential create).
func (c *conn) readToken(ctx context.Context, op string, n backend.Node) (backend.Node, error) {
	for attempt := 0; ; attempt++ {
		type exists struct {
			ok bool
			st *zk.Stat
		}
		e, err := do(ctx, c, func(z *zk.Conn) (exists, error) {
			ok, st, err := z.Exists(n.Path)
			return exists{ok, st}, err
		}, nil)
		switch {
		case err == nil && e.ok:
			fillStat(&n, e.st)
			return n, nil
		case err == nil:
			return backend.Node{}, c.wrap(op, n.Path, fmt.Errorf("created, then deleted before its token was read: %w", zk.ErrNoNode))
		case c.isConnLoss(err) && attempt < maxReadAttempts:
			if werr := c.waitConnected(ctx); werr == nil {
				continue
			}
		}
		c.discard(n)
		return backend.Node{}, c.wrap(op, n.Path, err)
	}
}

// CreateAndWatch implements backend.Conn. For a non-sequential node the
// ExistsW is sent right behind the create (see createOnce), so both replies
// arrive within the create's round trip. The watch is used only if the
// ExistsW found this incarnation (its czxid is the create's): if the server
// answered it before the create, it watches for a creation instead, and the
// driver arms a watch again with a read (backend.WatchCreated). A sequential
// node's path is unknown until the create returns: it is created, then
// watched.
func (c *conn) CreateAndWatch(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, *backend.Watch, error) {
	if opts.Sequential {
		return backend.CreateThenWatch(ctx, c, path, data, opts)
	}
	n, r, err := c.create(ctx, "create", path, data, opts, readWatch)
	if err != nil {
		return backend.Node{}, nil, err
	}
	if e := r.pipelined; e != nil && e.err == nil && e.ok && e.st.Czxid == n.Token && int64(e.st.Version) == n.Version {
		return n, c.newWatch(n.Path, e.ch, false), nil
	}
	// The ExistsW went first, or failed: its watch, if any, is left to
	// go-zookeeper (it fires once and is dropped).
	return n, backend.WatchCreated(ctx, c, n), nil
}

// CreateAndList implements backend.Conn. The listing is sent right behind
// the create and a sequential node's token comes with the create (see
// createOnce): one round trip. If the listing was answered first (it lacks
// the new node), or the token is unknown (the parent was not writable, the
// node was found after a lost reply), the token read and the listing are
// sent at once from two goroutines, so they share one more round trip:
// go-zookeeper writes them on the session's connection one after the other
// and the server answers a session's requests in order, after the create.
func (c *conn) CreateAndList(ctx context.Context, path string, data []byte, opts backend.CreateOptions) (backend.Node, []backend.Node, error) {
	const op = "create"
	n, r, err := c.create(ctx, op, path, data, opts, readListing)
	if err != nil {
		return n, nil, err
	}
	haveStat := r.haveStat
	parent, _ := backend.Split(n.Path)
	if l := r.listed; haveStat && l != nil && l.err == nil {
		// The listing sent behind the create: it must show the new node
		// (else the server answered it first, and the loop lists again).
		nodes := childNodes(parent, l.kids)
		for _, k := range nodes {
			if k.Name == n.Name {
				return n, nodes, nil
			}
		}
	}
	type listing struct {
		kids   []string
		exists bool
		st     *zk.Stat
	}
	for attempt := 0; ; attempt++ {
		needStat := !haveStat
		l, err := do(ctx, c, func(z *zk.Conn) (listing, error) {
			var (
				l    listing
				serr error
				wg   sync.WaitGroup
			)
			if needStat {
				wg.Add(1)
				go func() {
					defer wg.Done()
					l.exists, l.st, serr = z.Exists(n.Path)
				}()
			}
			kids, _, err := z.Children(parent)
			wg.Wait()
			l.kids = kids
			if serr != nil {
				return l, serr
			}
			return l, err
		}, nil)
		if err == nil && needStat && !l.exists {
			err = fmt.Errorf("created, then deleted before it was listed: %w", zk.ErrNoNode)
		}
		if err == nil {
			if needStat {
				fillStat(&n, l.st)
				haveStat = true
			}
			nodes := childNodes(parent, l.kids)
			for _, k := range nodes {
				if k.Name == n.Name {
					return n, nodes, nil
				}
			}
			// The session's own create must be in its later listing; if
			// it is not, list again.
			if attempt < maxReadAttempts {
				continue
			}
			err = fmt.Errorf("the listing of %s lacks the new node: %w", parent, zk.ErrNoNode)
		} else if c.isConnLoss(err) && attempt < maxReadAttempts {
			if werr := c.waitConnected(ctx); werr == nil {
				continue
			}
		}
		if !errors.Is(err, zk.ErrNoNode) {
			c.discard(n)
		}
		return backend.Node{}, nil, c.wrap(op, n.Path, err)
	}
}

// fillStat sets the fields of n that come from the server's Stat.
func fillStat(n *backend.Node, st *zk.Stat) {
	n.Token = st.Czxid
	n.Version = int64(st.Version)
	n.Owner = ownerOf(st.EphemeralOwner)
}

// behind says which read, if any, createOnce sends right behind a create.
type behind int

const (
	readNothing behind = iota
	readWatch          // ExistsW of a non-sequential node (CreateAndWatch): r.pipelined
	readListing        // Children of the parent (CreateAndList): r.listed; a sequential create stamps the parent
	stampOnly          // no read; the create stamps its parent (CreateStamped): r.stamped
)

// create validates and creates the node, with the read b behind it (see
// createOnce). r.haveStat reports whether the Token, Version and Owner are
// known (a sequential create needs a read unless it stamped its parent).
func (c *conn) create(ctx context.Context, op, path string, data []byte, opts backend.CreateOptions, b behind) (backend.Node, *createReq, error) {
	if ctx == nil {
		return backend.Node{}, nil, c.wrap(op, path, errNilContext)
	}
	if err := backend.ValidatePath(path); err != nil {
		return backend.Node{}, nil, fmt.Errorf("zookeeper: %s: %w", op, err)
	}
	if err := backend.ValidateData(data); err != nil {
		return backend.Node{}, nil, fmt.Errorf("zookeeper: %s %s: %w", op, path, err)
	}
	if err := c.usable(); err != nil {
		return backend.Node{}, nil, c.wrap(op, path, err)
	}
	parent, name := backend.Split(path)
	r := &createReq{parent: parent, name: name, data: clone(data), opts: opts,
		watch: b == readWatch && !opts.Sequential, list: b == readListing, stamp: b == stampOnly}
	if opts.Protected {
		r.prefix = newProtectedPrefix()
		r.name = r.prefix + name
	}
	r.full = joinPath(parent, r.name)
	if r.stamp {
		r.pin = backend.PinPath(r.full, c.SessionID(), c.pins.Add(1))
	}
	if opts.Ephemeral {
		r.flags |= zk.FlagEphemeral
	}
	if opts.Sequential {
		r.flags |= zk.FlagSequence
	}
	n, haveStat, err := c.createLoop(ctx, r)
	if err != nil {
		return backend.Node{}, nil, c.wrap(op, r.full, err)
	}
	r.haveStat = haveStat
	return n, r, nil
}

// createLoop creates r.full, creating missing parents as containers and
// resolving creates whose outcome a connection loss hid.
func (c *conn) createLoop(ctx context.Context, r *createReq) (backend.Node, bool, error) {
	r.handOff = func() {}
	if r.fixedPath() {
		release, err := c.leasePath(ctx, r.full)
		if err != nil {
			return backend.Node{}, false, err
		}
		r.handOff = release
		defer func() {
			if !r.handedOff {
				release()
			}
		}()
	}
	pending := false // a create was sent and its outcome is unknown
	var last error
	for attempt := 0; attempt < maxCreateAttempts; attempt++ {
		if pending {
			if err := c.waitConnected(ctx); err != nil {
				c.resolveLater(r)
				return backend.Node{}, false, err
			}
			n, found, err := c.lookup(ctx, r)
			switch {
			case err == nil && found:
				return n, true, nil
			case err == nil:
				pending = false // it was not applied: create again
			case c.isConnLoss(err):
				last = err
				continue
			default:
				if ctx.Err() != nil {
					c.resolveLater(r)
				}
				return backend.Node{}, false, err
			}
		}
		n, haveStat, err := c.createOnce(ctx, r)
		switch {
		case err == nil:
			return n, haveStat, nil
		case errors.Is(err, zk.ErrNoNode):
			// The parent is missing (or an empty container parent was
			// reaped since we made it): make the parents and retry.
			last = err
			if perr := c.ensureParents(ctx, r.parent); perr != nil && !errors.Is(perr, zk.ErrNoNode) {
				if !c.isConnLoss(perr) {
					return backend.Node{}, false, perr
				}
				last = perr
				if werr := c.waitConnected(ctx); werr != nil {
					return backend.Node{}, false, werr
				}
			}
		case c.isConnLoss(err) && r.recoverable():
			last = err
			pending = true
		default:
			// Includes ctx errors: do hands a late result to
			// abandonedCreate.
			return backend.Node{}, false, err
		}
	}
	if pending {
		c.resolveLater(r)
	}
	return backend.Node{}, false, last
}

// createOnce sends one create. A non-sequential node is created with a
// multi of create (no data) and setData (the data, version 0): one round
// trip whose setData result carries the new node's Stat, hence its czxid.
// The data is sent once, so the request stays within the server's
// jute.maxbuffer; the version of the new node is 1.
//
// A sequential node's final path is unknown before the create, so no
// setData of it can ride along. For a queue join (r.list) the multi sets the
// parent's data instead (to nothing, any version): every op of a multi
// shares one zxid, so the parent's mzxid in that setData's Stat is the new
// node's czxid, and the token needs no read. A queue's directory therefore
// holds no data (Curator's lock directories hold none either). Where the
// session may not write the parent (an ACL without WRITE) the driver falls
// back, for good, to a plain create and a read of the token. Other
// sequential creates are plain creates.
//
// With r.watch (ExistsW of the node) or r.list (Children of the parent), the
// read is sent right behind the create, from a goroutine started just
// before it: the new goroutine runs once this one has queued the create and
// blocks on its reply (the scheduler runs it next on this thread, and
// another thread waits a few microseconds before it takes it), so the read
// almost always reaches the server second and sees the new node; the
// server answers a session's requests in order, so both replies arrive
// within the create's round trip. The callers check that it did.
func (c *conn) createOnce(ctx context.Context, r *createReq) (backend.Node, bool, error) {
	stampParent := (r.stamp || r.opts.Sequential && r.list) && r.parent != "/" && !c.noParentStamp.Load()
	if r.stamp && !stampParent {
		return backend.Node{}, false, backend.ErrNoStamp
	}
	type created struct {
		res    []zk.MultiResponse
		path   string // a plain sequential create's answer
		exists *existsW
		listed *childrenResult
	}
	send := func(z *zk.Conn) (created, error) {
		var (
			pipeW chan existsW
			pipeL chan childrenResult
		)
		if r.watch {
			pipeW = make(chan existsW, 1)
			go func() {
				ok, st, ch, err := z.ExistsW(r.full)
				pipeW <- existsW{ok, st, ch, err}
			}()
		}
		if r.list {
			pipeL = make(chan childrenResult, 1)
			go func() {
				kids, _, err := z.Children(r.parent)
				pipeL <- childrenResult{kids, err}
			}()
		}
		var (
			out created
			err error
		)
		switch {
		case stampParent && r.stamp:
			out.res, err = z.Multi(
				&zk.CreateRequest{Path: r.full, Data: r.data, Acl: worldACL, Flags: r.flags},
				&zk.CreateRequest{Path: r.pin, Data: nil, Acl: worldACL, Flags: zk.FlagEphemeral},
				&zk.SetDataRequest{Path: r.parent, Data: nil, Version: -1},
			)
		case stampParent:
			out.res, err = z.Multi(
				&zk.CreateRequest{Path: r.full, Data: r.data, Acl: worldACL, Flags: r.flags},
				&zk.SetDataRequest{Path: r.parent, Data: nil, Version: -1},
			)
		case !r.opts.Sequential:
			out.res, err = z.Multi(
				&zk.CreateRequest{Path: r.full, Data: nil, Acl: worldACL, Flags: r.flags},
				&zk.SetDataRequest{Path: r.full, Data: r.data, Version: 0},
			)
		default:
			out.path, err = z.Create(r.full, r.data, r.flags, worldACL)
		}
		if pipeW != nil {
			e := <-pipeW
			out.exists = &e
		}
		if pipeL != nil {
			l := <-pipeL
			out.listed = &l
		}
		return out, err
	}
	release := r.handOff
	out, abandoned, err := doAbandonable(ctx, c, send, func(out created, err error) {
		defer release()
		switch {
		case !r.opts.Sequential && stampParent:
			c.abandonedCreate(r, r.full, 0, err)
		case !r.opts.Sequential:
			c.abandonedCreate(r, r.full, 1, err)
		case len(out.res) > 0:
			c.abandonedCreate(r, out.res[0].String, 0, err)
		default:
			c.abandonedCreate(r, out.path, 0, err)
		}
	})
	if abandoned {
		r.handedOff = true // to abandonedCreate
	}
	if stampParent && errors.Is(err, zk.ErrNoAuth) && len(out.res) >= 2 && errors.Is(out.res[len(out.res)-1].Error, zk.ErrNoAuth) {
		// Not allowed to write the parent: create without the stamp, now
		// and from now on (a CreateStamped returns ErrNoStamp: nothing was
		// created, the multi failed as a whole).
		c.noParentStamp.Store(true)
		return c.createOnce(ctx, r)
	}
	if err != nil {
		return backend.Node{}, false, err
	}
	switch {
	case !r.opts.Sequential && !stampParent:
		if len(out.res) != 2 || out.res[1].Stat == nil {
			return backend.Node{}, false, fmt.Errorf("unexpected multi response (%d results): %w", len(out.res), zk.ErrAPIError)
		}
		r.pipelined, r.listed = out.exists, out.listed
		return nodeOf(r.full, clone(r.data), out.res[1].Stat), true, nil
	case stampParent:
		if len(out.res) < 2 || out.res[0].String == "" || out.res[len(out.res)-1].Stat == nil {
			return backend.Node{}, false, fmt.Errorf("unexpected multi response (%d results): %w", len(out.res), zk.ErrAPIError)
		}
		out.path = out.res[0].String
	}
	r.listed = out.listed
	_, name := backend.Split(out.path)
	n := backend.Node{Path: out.path, Name: name, Data: clone(r.data)}
	if strings.HasPrefix(name, r.name) {
		n.Seq, n.Sequential = parseSuffix(name[len(r.name):])
	}
	if !n.Sequential {
		n.Seq, n.Sequential = parseSeq(name)
	}
	if r.opts.Ephemeral {
		n.Owner = c.SessionID()
	}
	if stampParent {
		st := out.res[len(out.res)-1].Stat
		r.stamped, r.stampVersion = r.stamp, st.Version
		n.Token = st.Mzxid  // the multi's zxid: the new node's czxid
		return n, true, nil // a new node's version is 0
	}
	return n, false, nil
}

// abandonedCreate runs, on do's goroutine, when the caller's ctx ended
// before the server answered a create: it deletes the node the create made
// (or, after a connection loss, looks for it) so the call leaves nothing
// behind.
func (c *conn) abandonedCreate(r *createReq, path string, version int32, err error) {
	switch {
	case err == nil && path != "":
		c.deleteUntilGone(path, version, r.opts.Sequential || r.opts.Protected)
		if r.pin != "" {
			c.deleteUntilGone(r.pin, -1, true)
		}
	case c.isConnLoss(err) && r.recoverable():
		c.cleanupPending(r)
	}
}

// createResolved is what cleanupPending logs once it knows whether the create
// was applied.
const createResolved = "resolved a create whose outcome was lost"

// cleanupPending finds and deletes the node of a create whose outcome is
// unknown and whose caller has gone. It runs on a tracked goroutine and,
// like deleteUntilGone, retries through connection loss (waiting for the
// connection, a little longer each time) until it knows: it gives up only
// when the session ends, whose ephemeral nodes go with it, or on an error
// that is not a connection loss.
func (c *conn) cleanupPending(r *createReq) {
	for attempt := 0; ; attempt++ {
		if !backend.Sleep(c.bgCtx, deleteBackoff.Pause(attempt)) || c.waitConnected(c.bgCtx) != nil {
			return
		}
		n, found, err := c.lookup(c.bgCtx, r)
		if err == nil {
			c.log.Debug(createResolved, zap.String("path", r.full), zap.Bool("applied", found))
			if found {
				c.deleteUntilGone(n.Path, zkVersion(n.Version), r.opts.Sequential || r.opts.Protected)
			}
			if r.pin != "" {
				c.deleteUntilGone(r.pin, -1, true)
			}
			return
		}
		if !c.isConnLoss(err) {
			c.log.Debug("cannot resolve a create whose outcome was lost", zap.String("path", r.full), zap.Error(err))
			return
		}
	}
}

// discard deletes, in the background (see deleteLater), a node this Conn
// created but could not return.
func (c *conn) discard(n backend.Node) {
	c.deleteLater(n.Path, zkVersion(n.Version), n.Sequential)
}

// Pauses between the attempts of deleteUntilGone and cleanupPending: none
// before the first, then deleteBackoffMin doubling up to deleteBackoffMax,
// so that a connection that keeps coming back and breaking at once cannot
// make them spin.
const (
	deleteBackoffMin = 50 * time.Millisecond
	deleteBackoffMax = time.Second
)

var deleteBackoff = backend.Backoff{Min: deleteBackoffMin, Max: deleteBackoffMax}

// deleteLater deletes path, if not "", at version (-1: any) in the
// background, on a goroutine Close waits for (see deleteUntilGone): a node
// of this Conn that nobody was given must not stay for the rest of the
// session, at the head of a queue.
func (c *conn) deleteLater(path string, version int32, unique bool) {
	if path == "" || c.usable() != nil {
		return
	}
	c.goTracked(func() { c.deleteUntilGone(path, version, unique) })
}

// deleteUntilGone deletes path at version (-1: any), retrying through
// connection loss: between attempts it pauses (deleteBackoff) and waits
// until the session is connected again. It stops once the node is deleted
// or gone (ErrNoNode), on any other server error (ErrBadVersion: the node
// has changed since, it is not the one to delete), or when the session ends
// (expired or closed: an ephemeral node goes with it). It blocks: callers
// run it on a tracked goroutine.
//
// unique says that no other node can ever have the path (a protected or
// sequential name, a pin). Otherwise a retry first reads the node and goes
// on only if it is an ephemeral node of this session: a delete whose reply
// was lost may have removed ours, and another session may have created the
// path since, at the same version.
func (c *conn) deleteUntilGone(path string, version int32, unique bool) {
	for attempt := 0; ; attempt++ {
		if !backend.Sleep(c.bgCtx, deleteBackoff.Pause(attempt)) || c.waitConnected(c.bgCtx) != nil {
			return
		}
		if attempt > 0 && !unique {
			ok, st, err := c.zk.Exists(path)
			switch {
			case err == nil && (!ok || st.EphemeralOwner != c.sid.Load()):
				c.log.Debug("background delete: the node is gone or not this session's", zap.String("path", path), zap.Bool("exists", ok))
				return
			case err != nil && (!isTransport(err) || c.usable() != nil):
				return
			case err != nil:
				continue
			}
		}
		err := c.zk.Delete(path, version)
		switch {
		case err == nil, errors.Is(err, zk.ErrNoNode):
			if attempt > 0 {
				c.log.Debug("deleted after connection loss", zap.String("path", path), zap.Int("attempts", attempt+1))
			}
			return
		case !isTransport(err) || c.usable() != nil:
			c.log.Debug("background delete given up", zap.String("path", path), zap.Int32("version", version), zap.Error(err))
			return
		}
		c.log.Debug("background delete lost to the connection; will retry", zap.String("path", path), zap.Error(err),
			zap.Duration("next-in", deleteBackoff.Pause(attempt+1)))
	}
}

// lookup resolves a create whose outcome was lost (ZOOKEEPER-1262): a
// protected node is the child of the parent that starts with our prefix;
// a fixed-path ephemeral node is ours if its owner is this session.
func (c *conn) lookup(ctx context.Context, r *createReq) (backend.Node, bool, error) {
	// The connection that lost the reply may have been to another server
	// of the ensemble than the one we read from now, which needs only be as
	// recent as what this session has seen: a sync brings it up to the
	// leader, so that the read cannot miss the create (and make us create
	// again, leaving the first node behind).
	if _, err := do(ctx, c, func(z *zk.Conn) (string, error) { return z.Sync(r.parent) }, nil); err != nil &&
		!errors.Is(err, zk.ErrNoNode) {
		return backend.Node{}, false, err
	}
	if r.prefix != "" {
		kids, err := do(ctx, c, func(z *zk.Conn) ([]string, error) {
			kids, _, err := z.Children(r.parent)
			return kids, err
		}, nil)
		if errors.Is(err, zk.ErrNoNode) {
			return backend.Node{}, false, nil
		}
		if err != nil {
			return backend.Node{}, false, err
		}
		for _, k := range kids {
			// Ours is exactly the name asked for (with a sequence suffix if
			// sequential); a pin of a stamped create starts with the same
			// prefix and is not it.
			if !strings.HasPrefix(k, r.name) {
				continue
			}
			if r.opts.Sequential {
				if _, ok := parseSuffix(k[len(r.name):]); !ok {
					continue
				}
			} else if k != r.name {
				continue
			}
			n, err := c.get(ctx, joinPath(r.parent, k))
			if errors.Is(err, zk.ErrNoNode) {
				return backend.Node{}, false, nil
			}
			if err != nil {
				return backend.Node{}, false, err
			}
			if r.opts.Sequential && strings.HasPrefix(k, r.name) {
				if seq, ok := parseSuffix(k[len(r.name):]); ok {
					n.Seq, n.Sequential = seq, true
				}
			}
			return n, true, nil
		}
		return backend.Node{}, false, nil
	}
	n, err := c.get(ctx, r.full)
	if errors.Is(err, zk.ErrNoNode) {
		return backend.Node{}, false, nil
	}
	if err != nil {
		return backend.Node{}, false, err
	}
	if n.Owner != c.SessionID() {
		return backend.Node{}, false, zk.ErrNodeExists
	}
	return n, true, nil
}

// ensureParents creates the missing ancestors of parent as container nodes,
// which the server deletes once they have had children and are empty again
// (so a queue's sequence counter restarts). It finds the deepest existing
// ancestor by trying from the bottom, then creates downwards.
func (c *conn) ensureParents(ctx context.Context, parent string) error {
	var missing []string
	for p := parent; p != "/"; p, _ = backend.Split(p) {
		err := c.createContainer(ctx, p)
		if err == nil || errors.Is(err, zk.ErrNodeExists) {
			break
		}
		if !errors.Is(err, zk.ErrNoNode) {
			return err
		}
		missing = append(missing, p)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := c.createContainer(ctx, missing[i]); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return err
		}
	}
	return nil
}

func (c *conn) createContainer(ctx context.Context, path string) error {
	_, err := do(ctx, c, func(z *zk.Conn) (string, error) {
		return z.CreateContainer(path, nil, zk.FlagContainer, worldACL)
	}, nil)
	return err
}

// get reads a node; errors are go-zookeeper's.
func (c *conn) get(ctx context.Context, path string) (backend.Node, error) {
	type got struct {
		data []byte
		st   *zk.Stat
	}
	g, err := do(ctx, c, func(z *zk.Conn) (got, error) {
		data, st, err := z.Get(path)
		return got{data, st}, err
	}, nil)
	if err != nil {
		return backend.Node{}, err
	}
	return nodeOf(path, g.data, g.st), nil
}

// pre validates a call that reads or writes existing nodes.
func (c *conn) pre(ctx context.Context, op string, paths ...string) error {
	for _, p := range paths {
		if err := backend.ValidatePath(p); err != nil {
			return fmt.Errorf("zookeeper: %s: %w", op, err)
		}
	}
	what := ""
	if len(paths) > 0 {
		what = paths[len(paths)-1]
	}
	if ctx == nil {
		return c.wrap(op, what, errNilContext)
	}
	if err := c.usable(); err != nil {
		return c.wrap(op, what, err)
	}
	return nil
}

// Get implements backend.Conn.
func (c *conn) Get(ctx context.Context, path string) (backend.Node, error) {
	if err := c.pre(ctx, "get", path); err != nil {
		return backend.Node{}, err
	}
	n, err := c.get(ctx, path)
	if err != nil {
		return backend.Node{}, c.wrap("get", path, err)
	}
	return n, nil
}

// Children implements backend.Conn.
func (c *conn) Children(ctx context.Context, parent string) ([]backend.Node, error) {
	if err := c.pre(ctx, "children", parent); err != nil {
		return nil, err
	}
	kids, err := do(ctx, c, func(z *zk.Conn) ([]string, error) {
		kids, _, err := z.Children(parent)
		return kids, err
	}, nil)
	if errors.Is(err, zk.ErrNoNode) {
		return []backend.Node{}, nil
	}
	if err != nil {
		return nil, c.wrap("children", parent, err)
	}
	return childNodes(parent, kids), nil
}

// Set implements backend.Conn.
func (c *conn) Set(ctx context.Context, path string, data []byte, version int64) (backend.Node, error) {
	if err := c.pre(ctx, "set", path); err != nil {
		return backend.Node{}, err
	}
	if err := backend.ValidateData(data); err != nil {
		return backend.Node{}, fmt.Errorf("zookeeper: set %s: %w", path, err)
	}
	data = clone(data)
	st, err := do(ctx, c, func(z *zk.Conn) (*zk.Stat, error) {
		return z.Set(path, data, zkVersion(version))
	}, nil)
	if err != nil {
		return backend.Node{}, c.wrap("set", path, err)
	}
	return nodeOf(path, data, st), nil
}

// Delete implements backend.Conn.
func (c *conn) Delete(ctx context.Context, path string, version int64) error {
	if err := c.pre(ctx, "delete", path); err != nil {
		return err
	}
	_, err := do(ctx, c, func(z *zk.Conn) (struct{}, error) {
		return struct{}{}, z.Delete(path, zkVersion(version))
	}, nil)
	return c.wrap("delete", path, err)
}

// GuardedSet implements backend.Conn with one multi: a check op per guard
// (the guard's version, or -1 for existence only), then setData. ZooKeeper
// cannot compare a czxid in a multi, so a guard's Token is not compared: a
// guard holds if its node exists with the given version (see backend.Guard).
func (c *conn) GuardedSet(ctx context.Context, guards []backend.Guard, path string, data []byte, version int64) (backend.Node, error) {
	const op = "guarded set"
	if err := c.pre(ctx, op, guardedPaths(guards, path)...); err != nil {
		return backend.Node{}, err
	}
	if err := backend.ValidateData(data); err != nil {
		return backend.Node{}, fmt.Errorf("zookeeper: %s %s: %w", op, path, err)
	}
	data = clone(data)
	checks := make([]any, 0, len(guards))
	for _, g := range guards {
		checks = append(checks, &zk.CheckVersionRequest{Path: g.Path, Version: zkVersion(g.Version)})
	}
	res, err := c.guarded(ctx, op, path, checks, guardedPaths(guards, path), &zk.SetDataRequest{Path: path, Data: data, Version: zkVersion(version)})
	if err != nil {
		return backend.Node{}, err
	}
	if st := res[len(res)-1].Stat; st != nil {
		return nodeOf(path, data, st), nil
	}
	return backend.Node{}, c.wrap(op, path, fmt.Errorf("unexpected multi response (no Stat): %w", zk.ErrAPIError))
}

// guardedPaths returns the paths of guards and path, for validation.
func guardedPaths(guards []backend.Guard, path string) []string {
	paths := make([]string, 0, len(guards)+1)
	for _, g := range guards {
		paths = append(paths, g.Path)
	}
	return append(paths, path)
}

// guarded sends one multi: the checks (ops whose failure means a guard
// failed, on checkPaths[i]), then write, an op on path. It returns the
// multi's results, one per op.
func (c *conn) guarded(ctx context.Context, op, path string, checks []any, checkPaths []string, write any) ([]zk.MultiResponse, error) {
	ops := append(checks[:len(checks):len(checks)], write)
	res, err := do(ctx, c, func(z *zk.Conn) ([]zk.MultiResponse, error) {
		return z.Multi(ops...)
	}, nil)
	switch {
	case err != nil:
		return nil, c.multiErr(op, path, checkPaths[:len(checks)], res, err)
	case len(res) != len(ops):
		return nil, c.wrap(op, path, fmt.Errorf("unexpected multi response (%d results): %w", len(res), zk.ErrAPIError))
	}
	return res, nil
}

// multiErr maps the failure of a guarded multi: backend.ErrGuardFailed if
// a check (on checkPaths[i]) failed, else the write's error.
func (c *conn) multiErr(op, path string, checkPaths []string, res []zk.MultiResponse, err error) error {
	// The server reports, per op, ok for the ops before the one that
	// failed, its error, and "runtime inconsistency" for the ops after.
	failed := -1
	for i, r := range res {
		if r.Error != nil {
			failed = i
			err = r.Error
			break
		}
	}
	if failed >= 0 && failed < len(checkPaths) {
		return fmt.Errorf("zookeeper: %s %s: %w: guard on %s: %w", op, path,
			backend.ErrGuardFailed, checkPaths[failed], c.wrap("check", checkPaths[failed], err))
	}
	return c.wrap(op, path, err)
}

var _ backend.ParentStamps = (*conn)(nil)
