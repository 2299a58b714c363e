package mutex

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/coordkit/coordkit/internal/detach"
	"github.com/coordkit/coordkit/recipes"
)

// The solo path: the uncontended case without the loop. A Lock on a path
// that no goroutine of the process uses registers the path's state as solo
// and does the server work on its own goroutine (the acquisition, and later
// its Guard's release), so that an uncontended Lock and Unlock cost the
// server round trips and nothing more: no loop to start, no helper to
// spawn, no channel hops between them.
//
// The state stays in the registry while the solo goroutine acquires, holds
// and releases, so that a second goroutine never works on the same path at
// the same time: it starts the loop (attach), in the handover phase, and
// queues there. The solo goroutine checks for a loop at each of its steps'
// ends, under reg.mu, and hands its state over (adoptMsg) instead of
// finishing alone; the loop then grants, hands off locally or acquires again
// as usual. Without a loop, the state leaves the registry when the solo
// goroutine is done.

// soloState is what a solo goroutine is doing, for Inspect.
type soloState int

const (
	soloNone      soloState = iota // no solo goroutine
	soloAcquiring                  // in Lock, at the server
	soloHolding                    // its Guard holds
	soloReleasing                  // its Guard's Unlock deletes the owner node
	soloFinishing                  // its Lock has returned; the attempt, or the removal of what it may have left, goes on in the background
)

// adoptMsg hands the solo goroutine's state to the loop. Exactly one of
// req, holder and released is set.
type adoptMsg struct {
	// req: the solo Lock ended; acq is its acquisition (grant it to req) or
	// nil (it failed: req is not answered, the caller returns its error).
	req *request
	acq *acquisition
	// holder: the solo Guard is being unlocked; the loop takes its
	// acquisition over with it as the holder, and an unlockMsg for it
	// follows.
	holder *Guard
	// released: the solo Guard's release has finished (or the solo
	// attempt ended with nothing to release); contended as in workResult,
	// if learnt (a release took place).
	released  bool
	contended bool
	learnt    bool
}

// attachSolo registers a solo state for (m's session, m's path) and
// returns it, if no goroutine of the process uses the path; else nil.
func attachSolo(m *Mutex) *pathState {
	reg := m.reg
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if reg.loops[m.path] != nil {
		return nil
	}
	p := newPathState(m)
	p.solo, p.users = soloAcquiring, 1
	reg.loops[m.path] = p
	return p
}

// soloStep records the solo goroutine's next state, unless the loop has
// started: then the solo goroutine stops being one, and soloStep reports
// that it must hand over. With soloNone and no loop, the state leaves the
// registry.
func (p *pathState) soloStep(next soloState, acq *acquisition) (handOver bool) {
	p.reg.mu.Lock()
	defer p.reg.mu.Unlock()
	if p.started {
		p.solo, p.soloAcq = soloNone, nil
		return true
	}
	p.solo, p.soloAcq = next, acq
	if next == soloNone {
		delete(p.reg.loops, p.path)
	}
	return false
}

// soloSnapshot fills s with what the solo goroutine does. Called with
// reg.mu held.
func (p *pathState) soloSnapshot(s *Snapshot) {
	switch p.solo {
	case soloAcquiring:
		s.Waiting++
	case soloHolding:
		s.Held = true
	case soloReleasing, soloFinishing:
		s.Finishing = true
	}
	if p.soloAcq != nil && s.Token == 0 {
		s.Token = p.soloAcq.node.Token
	}
}

// lockSolo is Mutex.lock on the solo path.
//
// Creates are never abandoned in flight (see server.acquire), so a create
// the server does not answer would keep its caller past ctx's end, until
// the connection is declared lost. Under a ctx that can end, the acquisition
// therefore runs on another goroutine (the Mutex's detach.Runner) and the
// caller waits for it or for ctx: when ctx ends first, Lock returns at once
// and the goroutine finishes the attempt in the background, releases what
// it got, and only then lets the path state go (or hands it to the loop).
// Under a ctx that can never end (context.Background) nothing is waited for
// but the acquisition itself, which then runs on the caller's goroutine.
func (p *pathState) lockSolo(ctx context.Context, m *Mutex, try bool, op string) (*Guard, error) {
	// Set before the state was registered; nothing else writes it until
	// the solo goroutine hands the state over.
	queue := p.contended && !try
	if ctx.Done() == nil {
		acq, err := p.srv.acquire(ctx, try, queue)
		return p.soloAcquired(ctx, m, try, op, acq, err)
	}
	p.wg.Add(1) // until the attempt is handed back, or abandoned and undone
	r, ok := detach.Call(ctx, m.runner, func() soloAttempt {
		acq, err := p.srv.acquire(ctx, try, queue)
		return soloAttempt{acq, err}
	}, func(r soloAttempt) {
		defer p.wg.Done()
		p.soloAbandoned(r.acq)
	})
	if !ok {
		p.soloFinishing()
		return nil, fmt.Errorf("mutex: %s %s: %w", op, m.path, ctxErr(ctx))
	}
	p.wg.Done()
	return p.soloAcquired(ctx, m, try, op, r.acq, r.err)
}

// soloAttempt is the outcome of a solo acquisition.
type soloAttempt struct {
	acq *acquisition
	err error
}

// soloAcquired ends a solo Lock whose caller is still there with the
// acquisition's outcome.
func (p *pathState) soloAcquired(ctx context.Context, m *Mutex, try bool, op string, acq *acquisition, err error) (*Guard, error) {
	if err == nil && ctx.Err() != nil {
		// Granted as ctx ended: nobody wants it. It is released in the
		// background, as the loop does with a grant that crosses a
		// cancellation, and Lock returns at once; the state stays
		// registered until the release is done.
		p.soloFinishing()
		p.spawn(func() { p.soloAbandoned(acq) })
		return nil, fmt.Errorf("mutex: %s %s: %w", op, m.path, ctxErr(ctx))
	}
	if err != nil && p.srv.mayHaveLeftover() {
		// The attempt may have left an owner node nobody holds: it is
		// removed in the background, and the state stays registered
		// until then (Snapshot.Finishing).
		p.soloFinishing()
		p.spawn(func() { p.soloAbandoned(nil) })
		return nil, fmt.Errorf("mutex: %s %s: %w", op, m.path, err)
	}
	next := soloNone
	if acq != nil {
		next = soloHolding
	}
	if !p.soloStep(next, acq) {
		if err != nil {
			return nil, fmt.Errorf("mutex: %s %s: %w", op, m.path, err)
		}
		gctx, cancel := context.WithCancelCause(acq.hold.Context())
		return &Guard{p: p, m: m, acq: acq, ctx: gctx, cancel: cancel, solo: true}, nil
	}
	// Another goroutine started the loop meanwhile.
	r := &request{m: m, try: try, reply: make(chan result, 1)}
	p.adopt <- adoptMsg{req: r, acq: acq}
	if err != nil {
		return nil, fmt.Errorf("mutex: %s %s: %w", op, m.path, err)
	}
	res := <-r.reply
	return res.g, nil
}

// soloFinishing records that the solo Lock has returned while its attempt
// goes on (see Snapshot.Finishing), unless the attempt is over or the loop
// has taken the state over.
func (p *pathState) soloFinishing() {
	p.reg.mu.Lock()
	defer p.reg.mu.Unlock()
	if p.solo == soloAcquiring {
		p.solo = soloFinishing
	}
}

// soloAbandoned ends a solo acquisition whose Lock has returned (its ctx
// ended first): what it got is released, then the state leaves the registry
// or goes to the loop.
func (p *pathState) soloAbandoned(acq *acquisition) {
	if acq == nil {
		// Nothing to release, and nothing learnt: what the process
		// remembers of the path stays as it is. But the attempt may
		// have left an owner node (see server.clearLeftover).
		p.srv.clearLeftover()
		p.soloEnded(false, false)
		return
	}
	contended, err := p.srv.release(nil, acq)
	if err != nil {
		p.log.Warn("could not release a grant nobody wanted", zap.Error(err))
	}
	p.soloReleased(contended)
}

// unlockSolo is Guard.Unlock of a solo Guard. It reports false, doing
// nothing else, if the loop has started: it has handed the acquisition over
// to the loop, with g as its holder, and g unlocks through the loop (or
// finds it gone: the session ended).
func (g *Guard) unlockSolo(ctx context.Context) (done bool, err error) {
	p := g.p
	if p.soloStep(soloReleasing, g.acq) {
		select {
		case p.adopt <- adoptMsg{holder: g}:
		case <-p.exited:
		}
		return false, nil
	}
	g.cancel(recipes.ErrReleased)
	// The release runs here, bounded by ctx; if ctx ends first it goes on
	// in the background (as a release by the loop does) and keeps the state
	// registered until it is done.
	var within context.Context
	if ctx.Done() != nil {
		within = ctx
	}
	contended, err := p.srv.release(within, g.acq)
	if errors.Is(err, errInterrupted) {
		p.spawn(func() {
			contended, err := p.srv.release(nil, g.acq)
			if err != nil {
				p.log.Warn("release after Unlock's context ended", zap.Error(err))
			}
			p.soloReleased(contended)
		})
		return true, fmt.Errorf("release not confirmed yet (it goes on): %w", ctxErr(ctx))
	}
	p.soloReleased(contended)
	return true, err
}

// soloReleased ends the solo goroutine's release: the state leaves the
// registry, or, if the loop has started, the loop takes it over.
func (p *pathState) soloReleased(contended bool) { p.soloEnded(contended, true) }

// soloEnded ends the solo goroutine's work on the path, after a release
// (learnt: contended says whether it found another process waiting) or an
// attempt that got nothing: the state leaves the registry, or, if the loop
// has started, the loop takes it over.
func (p *pathState) soloEnded(contended, learnt bool) {
	if learnt {
		p.reg.noteRelease(p.path, contended)
	}
	if p.soloStep(soloNone, nil) {
		p.adopt <- adoptMsg{released: true, contended: contended, learnt: learnt}
	}
}

// onAdopt takes the solo goroutine's state over (see adoptMsg). The loop is
// in the handover phase.
func (p *pathState) onAdopt(a adoptMsg) {
	switch {
	case a.holder != nil:
		p.acq, p.holder, p.phase = a.holder.acq, a.holder, held
	case a.req != nil && a.acq != nil:
		p.acq = a.acq
		p.grant(a.req)
	case a.req != nil:
		p.detach(1) // the solo Lock failed; its caller returns the error
		p.phase = idle
		p.startAcquire(false)
	case a.released:
		if a.learnt {
			p.contended = a.contended
		}
		p.detach(1)
		p.phase = idle
		p.startAcquire(false)
	}
}
