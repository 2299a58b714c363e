package mutex

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/coordkit/coordkit/internal/sessionlocal"
	"github.com/coordkit/coordkit/recipes"
	"github.com/coordkit/coordkit/session"
)

// The local side of the lock. One goroutine per (session, path), the loop
// of a pathState, owns all local state: the FIFO of waiting goroutines, the
// local holder and the process's acquisition on the server. Lock, Unlock and
// cancellations talk to it over channels. Server calls run on helper
// goroutines the loop starts and waits for (one at a time: an acquirer, a
// checker or a releaser), so the loop itself never blocks on the network.
// The loop exits, and leaves the session's registry, once nothing is held,
// waited for or running and no Lock or Guard refers to it, or once the
// session has ended and no helper runs.
//
// The loop starts only when two goroutines of the process use the path at
// once: a Lock on a path nobody in the process uses takes the solo path
// (solo.go), where the calling goroutine does the server work itself, with
// no loop and no helper to talk to. If another goroutine comes meanwhile,
// the loop starts in the handover phase: it queues requests and waits until
// the solo goroutine hands its state over (adoptMsg), then carries on as
// usual.

// registry holds the state shared by the Mutexes of one session, one
// pathState per path in use. The session carries it (see registryOf), so a
// second session has its own, and there is no package-level state.
type registry struct {
	mu    sync.Mutex
	loops map[string]*pathState
	// recent keeps, per path, what the process's acquisitions learnt about
	// the server, for the next one: the path's state leaves loops as soon
	// as nobody in the process uses it (between the uncontended
	// acquisitions of one goroutine, say).
	recent map[string]recollection
	// pruneAt is the size of recent at which update forgets the
	// recollections with nothing left to remember (0: 256).
	pruneAt int
}

// recollection is what the process remembers of a path between
// acquisitions.
type recollection struct {
	// contendedAt is when a release last found another process waiting
	// (zero if the last release found none). For contentionMemory after
	// it, the next acquisition queues behind that process instead of
	// racing the head of the queue for P/owner (see the fairness bound in
	// the package documentation).
	contendedAt time.Time
	// suspect: an owner node of this session may be left on the server (a
	// create whose outcome is unknown, a delete that failed), so a create
	// that finds P/owner reads it before it queues (removeLeftover).
	suspect bool
}

// contentionMemory is how long the process remembers that a release of a
// path found another process waiting.
const contentionMemory = time.Minute

// recentlyContended reports whether a release of path found another process
// waiting within contentionMemory. Called with r.mu held.
func (r *registry) recentlyContended(path string) bool {
	at := r.recent[path].contendedAt
	return !at.IsZero() && time.Since(at) < contentionMemory
}

// noteRelease records whether a release of path found another process
// waiting.
func (r *registry) noteRelease(path string, contended bool) {
	r.update(path, func(rec *recollection) {
		rec.contendedAt = time.Time{}
		if contended {
			rec.contendedAt = time.Now()
		}
	})
}

// setSuspect records whether an owner node of this session may be left at
// path.
func (r *registry) setSuspect(path string, suspect bool) {
	r.update(path, func(rec *recollection) { rec.suspect = suspect })
}

// suspect reports whether an owner node of this session may be left at path.
func (r *registry) suspect(path string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recent[path].suspect
}

// update changes the recollection of path, and forgets those with nothing
// left to remember once there are many.
func (r *registry) update(path string, change func(*recollection)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.recent[path]
	change(&rec)
	if rec == (recollection{}) {
		delete(r.recent, path)
		return
	}
	r.recent[path] = rec
	if len(r.recent) > max(r.pruneAt, 256) {
		for k, v := range r.recent {
			if !v.suspect && time.Since(v.contendedAt) >= contentionMemory {
				delete(r.recent, k)
			}
		}
		// Scan again only once as many more have come: a scan costs
		// in proportion to what it keeps.
		r.pruneAt = 2 * len(r.recent)
	}
}

// registryKey is the registry's key in the session's sessionlocal.Table.
type registryKey struct{}

// registryOf returns the registry of s's Mutexes.
func registryOf(s *session.Session) *registry {
	return sessionlocal.Get(s.Context(), registryKey{}, func() *registry {
		return &registry{loops: map[string]*pathState{}, recent: map[string]recollection{}}
	})
}

// attach returns the running state for (s, path), starting it if needed
// (in the handover phase if a solo goroutine owns the state), and counts
// the caller as a user until the loop detaches it (when the request fails or
// is cancelled, or the Guard it got is released).
func attach(m *Mutex) *pathState {
	reg := m.reg
	reg.mu.Lock()
	defer reg.mu.Unlock()
	p := reg.loops[m.path]
	if p == nil {
		p = newPathState(m)
		reg.loops[m.path] = p
	}
	if !p.started {
		// The loop's channels are made only now: a solo goroutine alone
		// (the uncontended case) never needs them, and everything that
		// uses them sees started under reg.mu first.
		p.reqs = make(chan *request)
		p.cancels = make(chan cancelMsg)
		p.unlocks = make(chan unlockMsg)
		p.work = make(chan workResult)
		p.adopt = make(chan adoptMsg)
		p.inspect = make(chan chan Snapshot)
		p.exited = make(chan struct{})
		p.started = true
		if p.solo != soloNone {
			p.phase = handover
		}
		go p.run()
	}
	p.users++
	return p
}

// newPathState makes the state of m's session and path, for m (whose server
// side it copies), not registered and with no loop running. Called with
// m.reg.mu held.
func newPathState(m *Mutex) *pathState {
	srv := *m.srv
	p := &pathState{reg: m.reg, path: m.path, sess: m.sess, srv: &srv, log: m.log,
		contended: m.reg.recentlyContended(m.path)}
	p.srv.spawn = p.spawn
	return p
}

// detach forgets n users.
func (p *pathState) detach(n int) {
	p.reg.mu.Lock()
	p.users -= n
	p.reg.mu.Unlock()
}

type phase int

const (
	idle      phase = iota // nothing held, no helper running
	acquiring              // an acquirer runs
	held                   // acq is granted to holder
	checking               // acq is held by nobody while a checker asks the server whether another process waits
	releasing              // a releaser deletes the owner node
	clearing               // a failed attempt may have left an owner node: a helper removes it (server.clearLeftover)
	handover               // a solo goroutine owns the server state; the loop waits for its adoptMsg
)

type reqState int

const (
	pending reqState = iota
	granted
	answered // failed, or cancelled while pending
)

// request is one Lock or TryLock call.
type request struct {
	m     *Mutex
	try   bool
	reply chan result // cap 1: the loop never blocks on it
	// Owned by the loop:
	state reqState
	guard *Guard
}

type result struct {
	g   *Guard
	err error
}

type cancelMsg struct {
	req *request
	ack chan struct{} // closed once the cancellation left nothing behind
}

type unlockMsg struct {
	g     *Guard
	reply chan error // cap 1
}

type workKind int

const (
	acquired workKind = iota
	checked
	released
	cleared
)

// workResult is what a helper reports when it is done.
type workResult struct {
	kind      workKind
	acq       *acquisition // acquired
	err       error        // acquired, released
	contended bool         // checked, released: another process waits
	try       bool         // acquired: the attempt was a TryLock's one shot
}

// pathState is the local state of one (session, path). The fields below
// "owned by the loop" are touched only by the loop goroutine.
type pathState struct {
	reg  *registry // the session's, which holds this state while in use
	path string
	sess *session.Session
	srv  *server
	log  *zap.Logger
	// The loop's channels, made when it starts (see attach); nil before.
	reqs    chan *request
	cancels chan cancelMsg
	unlocks chan unlockMsg
	work    chan workResult
	adopt   chan adoptMsg      // the solo goroutine's handover
	inspect chan chan Snapshot // for tests: see Inspect
	exited  chan struct{}      // closed when the loop has exited
	users   int                // guarded by reg.mu
	started bool               // guarded by reg.mu: the loop runs
	solo    soloState          // guarded by reg.mu: see solo.go
	soloAcq *acquisition       // guarded by reg.mu: the solo goroutine's acquisition
	wg      sync.WaitGroup

	// Owned by the loop:
	phase        phase
	waiters      []*request // blocking Lock calls, FIFO
	tryReq       *request   // the TryLock a try-mode acquirer works for
	acqCancel    context.CancelFunc
	acqCancelled bool // the running acquirer was cancelled: nobody wants its grant
	acq          *acquisition
	holder       *Guard
	contended    bool       // the last release saw another process waiting
	unlockReply  chan error // the Unlock waiting for the running check or release
}

func (p *pathState) run() {
	defer close(p.exited)
	sessDone := p.sess.Done()
	for {
		select {
		case r := <-p.reqs:
			p.onRequest(r)
		case c := <-p.cancels:
			p.onCancel(c)
		case u := <-p.unlocks:
			p.onUnlock(u)
		case w := <-p.work:
			p.onWork(w)
		case a := <-p.adopt:
			p.onAdopt(a)
		case c := <-p.inspect:
			c <- p.snapshot()
		case <-sessDone:
			sessDone = nil // checked below, on every turn
		}
		if p.exit() {
			p.wg.Wait()
			return
		}
	}
}

// exit reports whether the loop is done, and if so leaves the registry.
func (p *pathState) exit() bool {
	ended := p.sess.Err() != nil
	switch {
	case p.phase == handover:
		if !ended {
			return false
		}
		p.failAll(sessionErr(p.sess))
		// A solo goroutine that acquires or releases comes back once its
		// server calls see the end of the session: wait for it. A solo
		// holder's Guard may never be unlocked: its hold ended with the
		// session, and its Unlock finds the loop gone.
		p.reg.mu.Lock()
		holding := p.solo == soloHolding
		if holding {
			p.solo, p.soloAcq = soloNone, nil
		}
		p.reg.mu.Unlock()
		if !holding {
			return false
		}
		p.phase = idle
	case p.phase == idle:
	case p.phase == held && ended:
		// The session took the lock with it; the holder's Guard has ended
		// (its hold watched the session). Its Unlock finds the loop gone.
		p.failAll(sessionErr(p.sess))
		p.acq.hold.End(fmt.Errorf("%w: %w", recipes.ErrLost, sessionErr(p.sess)))
		p.acq, p.holder = nil, nil
		p.phase = idle
	default:
		return false
	}
	p.reg.mu.Lock()
	defer p.reg.mu.Unlock()
	if p.users > 0 && !ended {
		return false
	}
	delete(p.reg.loops, p.path)
	return true
}

func (p *pathState) onRequest(r *request) {
	if err := p.sess.Err(); err != nil {
		p.fail(r, err)
		return
	}
	if r.try {
		if p.phase != idle {
			p.fail(r, recipes.ErrLocked)
			return
		}
		p.tryReq = r
		p.startAcquire(true)
		return
	}
	p.waiters = append(p.waiters, r)
	if p.phase == idle {
		p.startAcquire(false)
	}
}

func (p *pathState) onCancel(c cancelMsg) {
	r := c.req
	switch r.state {
	case answered:
		close(c.ack)
		return
	case granted:
		// The grant crossed the cancellation: release it as Unlock would
		// (in the background: the Lock returns at once, as it does when
		// its ctx ends while an attempt is at the server).
		r.state = answered
		if r.guard.released.CompareAndSwap(false, true) {
			p.unlock(r.guard, nil)
		}
		close(c.ack)
		return
	}
	r.state = answered
	p.detach(1)
	if r == p.tryReq {
		p.tryReq = nil
	} else {
		for i, w := range p.waiters {
			if w == r {
				p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
				break
			}
		}
	}
	if p.phase == acquiring && p.tryReq == nil && len(p.waiters) == 0 && !p.acqCancelled {
		// Nobody wants the attempt any more: the acquirer stops waiting
		// and removes what it made, in the background (Snapshot.Finishing
		// until it is done).
		p.acqCancelled = true
		p.acqCancel()
	}
	close(c.ack)
}

func (p *pathState) onUnlock(u unlockMsg) {
	if u.g != p.holder {
		// Cannot happen: a Guard is released once, and only its holder's.
		u.reply <- errors.New("internal error: unlock of a guard that does not hold")
		return
	}
	p.unlock(u.g, u.reply)
}

// unlock ends the holder's Guard and passes the lock on: to the next local
// waiter, through a check, or to the server. reply, if not nil, receives the
// outcome.
func (p *pathState) unlock(g *Guard, reply chan error) {
	g.cancel(recipes.ErrReleased)
	p.holder = nil
	p.detach(1)
	acq := p.acq
	if acq.hold.Err() == nil && len(p.waiters) > 0 && p.sess.Err() == nil {
		if acq.handoffs < g.m.opts.maxHandoffs {
			acq.handoffs++
			p.grant(p.popWaiter())
			answer(reply, nil)
			return
		}
		// Bound reached: is another process waiting? The Unlock waits
		// for the answer: if one is, it returns once the release is done.
		p.phase = checking
		p.unlockReply = reply
		p.spawn(func() {
			contended := p.srv.check(acq)
			p.work <- workResult{kind: checked, contended: contended}
		})
		return
	}
	p.startRelease(reply)
}

func (p *pathState) onWork(w workResult) {
	switch w.kind {
	case acquired:
		p.acqCancel()
		p.acqCancelled = false
		if w.err == nil {
			p.acq = w.acq
			switch {
			case p.tryReq != nil:
				r := p.tryReq
				p.tryReq = nil
				p.grant(r)
			case len(p.waiters) > 0:
				p.grant(p.popWaiter())
			default:
				// Everybody who wanted it has gone.
				p.startRelease(nil)
			}
			return
		}
		if r := p.tryReq; r != nil {
			p.tryReq = nil
			p.fail(r, w.err)
		} else if !w.try && (!errors.Is(w.err, context.Canceled) || p.sess.Err() != nil) {
			// A blocking acquirer fails only when the session ends or on
			// an unexpected error: every waiter gets it. (Canceled: we
			// stopped it because its waiters had gone.) A TryLock's one
			// shot says nothing to blocking waiters that came meanwhile
			// (ErrLocked, a suspension): they get a blocking acquirer,
			// which fails them itself if the session has ended.
			p.failAll(w.err)
		}
		if p.srv.mayHaveLeftover() {
			// The attempt may have left an owner node nobody holds:
			// remove it before anything else of this process runs on
			// the path.
			p.phase = clearing
			p.spawn(func() {
				p.srv.clearLeftover()
				p.work <- workResult{kind: cleared}
			})
			return
		}
		p.startAcquire(false)
	case cleared:
		p.startAcquire(false)
	case checked:
		if w.contended {
			p.acq.flagged = true
		}
		reply := p.unlockReply
		p.unlockReply = nil
		if w.contended || p.acq.hold.Err() != nil || len(p.waiters) == 0 || p.sess.Err() != nil {
			p.startRelease(reply)
			return
		}
		answer(reply, nil)
		p.acq.handoffs = 0
		p.grant(p.popWaiter())
	case released:
		p.contended = w.contended
		p.reg.noteRelease(p.path, w.contended)
		answer(p.unlockReply, w.err)
		p.unlockReply = nil
		p.startAcquire(false)
	}
}

// startAcquire starts an acquirer for the waiters, or goes idle if there
// are none (or fails them if the session has ended).
func (p *pathState) startAcquire(try bool) {
	if !try && len(p.waiters) == 0 {
		p.phase = idle
		return
	}
	if err := p.sess.Err(); err != nil {
		p.failAll(err)
		p.phase = idle
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.phase, p.acqCancel, p.acqCancelled = acquiring, cancel, false
	queue := p.contended && !try
	p.spawn(func() {
		acq, err := p.srv.acquire(ctx, try, queue)
		p.work <- workResult{kind: acquired, acq: acq, err: err, try: try}
	})
}

// startRelease starts a releaser for the acquisition; reply, if not nil,
// receives its outcome.
func (p *pathState) startRelease(reply chan error) {
	acq := p.acq
	p.acq = nil
	p.phase = releasing
	p.unlockReply = reply
	p.spawn(func() {
		contended, err := p.srv.release(nil, acq)
		p.work <- workResult{kind: released, contended: contended, err: err}
	})
}

// grant gives the acquisition to r.
func (p *pathState) grant(r *request) {
	ctx, cancel := context.WithCancelCause(p.acq.hold.Context())
	g := &Guard{p: p, m: r.m, acq: p.acq, ctx: ctx, cancel: cancel}
	p.holder, p.phase = g, held
	r.state, r.guard = granted, g
	r.reply <- result{g: g}
}

func (p *pathState) popWaiter() *request {
	r := p.waiters[0]
	p.waiters[0] = nil
	p.waiters = p.waiters[1:]
	return r
}

// fail answers r with err.
func (p *pathState) fail(r *request, err error) {
	r.state = answered
	r.reply <- result{err: err}
	p.detach(1)
}

// failAll answers every waiter with err.
func (p *pathState) failAll(err error) {
	for _, r := range p.waiters {
		p.fail(r, err)
	}
	p.waiters = nil
	if p.tryReq != nil {
		p.fail(p.tryReq, err)
		p.tryReq = nil
	}
}

// spawn runs f on a helper goroutine the loop waits for before it exits.
func (p *pathState) spawn(f func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
}

func answer(reply chan error, err error) {
	if reply != nil {
		reply <- err
	}
}

// Snapshot is the local state of a lock, as Inspect reports it.
type Snapshot struct {
	// Held reports whether a goroutine of this process holds the lock.
	Held bool
	// Waiting is the number of goroutines of this process waiting in Lock.
	Waiting int
	// Handoffs is the number of local handoffs since the process acquired
	// the lock on the server, or since its last check for other processes.
	Handoffs int
	// Token is the fencing token of the process's acquisition, 0 if none.
	Token int64
	// Finishing reports whether the process is still at the server for the
	// lock on behalf of no waiting goroutine: an attempt whose Lock has
	// returned (its ctx ended), a release, or the removal of an owner node
	// that a failed attempt may have left. Until it is done the process
	// may still have nodes of the lock on the server.
	Finishing bool
}

func (p *pathState) snapshot() Snapshot {
	s := Snapshot{Held: p.holder != nil, Waiting: len(p.waiters),
		Finishing: p.phase == releasing || p.phase == clearing || (p.phase == acquiring && p.acqCancelled)}
	if p.tryReq != nil {
		s.Waiting++
	}
	if p.acq != nil {
		s.Handoffs, s.Token = p.acq.handoffs, p.acq.node.Token
	}
	if p.phase == handover {
		p.reg.mu.Lock()
		p.soloSnapshot(&s)
		p.reg.mu.Unlock()
	}
	return s
}

// Inspect reports the local state of the lock at m's path on m's session:
// who holds and waits in this process. It is meant for tests, metrics and
// debugging: the state may change as soon as it returns. A lock that nobody
// in this process uses reports the zero Snapshot.
func (m *Mutex) Inspect() Snapshot {
	m.reg.mu.Lock()
	p := m.reg.loops[m.path]
	if p != nil && !p.started {
		// A solo goroutine alone: no loop to ask.
		var s Snapshot
		p.soloSnapshot(&s)
		m.reg.mu.Unlock()
		return s
	}
	m.reg.mu.Unlock()
	if p == nil {
		return Snapshot{}
	}
	c := make(chan Snapshot, 1)
	select {
	case p.inspect <- c:
		return <-c
	case <-p.exited:
		return Snapshot{}
	}
}
