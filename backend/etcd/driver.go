package etcd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
)

// DefaultSessionPrefix is where session marker keys live unless
// [WithSessionPrefix] says otherwise.
const DefaultSessionPrefix = "/coordkit/sessions"

// Option configures a [Driver].
type Option func(*options)

type options struct {
	logger        *zap.Logger
	suspendAfter  time.Duration
	sessionPrefix string
}

// WithLogger sets the logger of the driver and its sessions. The default is
// a no-op logger. A client created by [Dial] without its own logger logs
// through it too.
func WithLogger(l *zap.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithSuspendAfter sets how long a session may go without a keepalive reply
// before its Conn reports StateDisconnected. Zero means the default below; a
// negative value makes New and Dial fail with an error matching
// coordkit.ErrInvalidArgument. A positive value must be at most 9/10 of the
// TTL passed to Open, or Open fails the same way (the rest covers the
// reply's travel time: the server renewed the lease before the reply left,
// and the session must report Disconnected before the lease can expire).
// The default is half the granted TTL, but at least TTL/3+800ms (etcd's
// client sends a keepalive every TTL/3, checked on a 500ms tick, so shorter
// values would report spurious disconnections; the 300ms over that are for
// the reply's travel and a loaded machine) and at most 9/10 of the TTL
// (which wins below a TTL of about 1.4s: such short TTLs leave no room for
// a loaded machine; etcd's default minimum TTL is 2s).
func WithSuspendAfter(d time.Duration) Option {
	return func(o *options) { o.suspendAfter = d }
}

// WithSessionPrefix sets the path below which each session puts its marker
// key, <prefix>/<lease hex>. The default is [DefaultSessionPrefix]. The
// prefix must be a valid path (see backend.ValidatePath).
func WithSessionPrefix(prefix string) Option {
	return func(o *options) { o.sessionPrefix = prefix }
}

// Driver opens coordkit sessions on an etcd cluster. It is safe for
// concurrent use.
type Driver struct {
	cli  *clientv3.Client
	kv   pb.KVClient // cli's KV stub, for Txns built directly (see commit)
	owns bool
	o    options

	// lateApplyWindow: see defaultLateApplyWindow (shorter in tests).
	lateApplyWindow time.Duration

	mu    sync.Mutex
	conns map[*conn]struct{}
	// unread are closed Conns whose Events still hold events nobody has
	// read: Close drops them.
	unread *backend.UnreadEvents[*conn]
	closed bool
}

var _ backend.Driver = (*Driver)(nil)

// New returns a driver that uses client. The driver does not own the client:
// Close closes the driver's sessions but leaves the client open, and the
// caller must keep it open until then.
func New(client *clientv3.Client, opts ...Option) (*Driver, error) {
	if client == nil {
		return nil, fmt.Errorf("etcd: nil client: %w", coordkit.ErrInvalidArgument)
	}
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	return newDriver(client, false, o), nil
}

// newDriver returns a driver on cli; owns says whether Close closes cli.
func newDriver(cli *clientv3.Client, owns bool, o options) *Driver {
	return &Driver{cli: cli, kv: clientv3.RetryKVClient(cli), owns: owns, o: o, lateApplyWindow: defaultLateApplyWindow,
		conns: make(map[*conn]struct{}), unread: backend.NewUnreadEvents((*conn).eventsDelivered)}
}

// Dial creates an etcd client from cfg and returns a driver that owns it:
// Close closes the client too. If cfg sets neither Logger nor LogConfig, the
// client logs through the driver's logger (see [WithLogger]).
func Dial(cfg clientv3.Config, opts ...Option) (*Driver, error) {
	o, err := buildOptions(opts)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil && cfg.LogConfig == nil {
		cfg.Logger = o.logger.Named("etcd-client")
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: dial: %w", err)
	}
	return newDriver(cli, true, o), nil
}

func buildOptions(opts []Option) (options, error) {
	o := options{logger: zap.NewNop(), sessionPrefix: DefaultSessionPrefix}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.logger == nil {
		o.logger = zap.NewNop()
	}
	if o.suspendAfter < 0 {
		return o, fmt.Errorf("etcd: suspend-after %v is not positive: %w", o.suspendAfter, coordkit.ErrInvalidArgument)
	}
	if err := backend.ValidatePath(o.sessionPrefix); err != nil {
		return o, fmt.Errorf("etcd: session prefix: %w", err)
	}
	return o, nil
}

// Name returns "etcd".
func (d *Driver) Name() string { return "etcd" }

// Client returns the etcd client the driver uses.
func (d *Driver) Client() *clientv3.Client { return d.cli }

// Open grants a lease of ttl (rounded up to whole seconds, at least one),
// keeps it alive, and returns the session as a Conn. Its first event is
// StateConnected. See the package documentation for how its states are
// detected.
func (d *Driver) Open(ctx context.Context, ttl time.Duration) (backend.Conn, error) {
	if ctx == nil {
		return nil, fmt.Errorf("etcd: open: nil context: %w", coordkit.ErrInvalidArgument)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("etcd: open: ttl %v is not positive: %w", ttl, coordkit.ErrInvalidArgument)
	}
	if d.o.suspendAfter != 0 && d.o.suspendAfter > maxSuspendAfter(ttl) {
		return nil, fmt.Errorf("etcd: open: suspend-after %v is longer than 9/10 of the ttl %v: %w",
			d.o.suspendAfter, ttl, coordkit.ErrInvalidArgument)
	}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("etcd: open: driver: %w", coordkit.ErrClosed)
	}

	secs := int64((ttl + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	grant, err := d.cli.Grant(ctx, secs)
	if err != nil {
		return nil, openErr(ctx, "grant lease", err)
	}
	grantedAt := time.Now()
	granted := time.Duration(grant.TTL) * time.Second
	c := &conn{
		d:            d,
		cli:          d.cli,
		kv:           d.kv,
		lease:        grant.ID,
		id:           fmt.Sprintf("%x", int64(grant.ID)),
		ttl:          granted,
		granted:      grantedAt,
		suspendAfter: d.o.suspendAfter,
	}
	if c.suspendAfter == 0 {
		c.suspendAfter = defaultSuspendAfter(granted)
	}
	c.lg = d.o.logger.With(zap.String("lease", c.id))
	c.marker = d.o.sessionPrefix + "/" + c.id

	c.kaCtx, c.kaCancel = context.WithCancel(context.Background())
	abort := func(step string, err error) (backend.Conn, error) {
		if c.sess != nil {
			c.sess.Orphan()
		}
		c.kaCancel()
		// The lease expires by itself within its TTL; a prompt revoke
		// just tidies up sooner.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_, _ = d.cli.Revoke(rctx, grant.ID)
		cancel()
		return nil, openErr(ctx, step, err)
	}

	ka, err := c.subscribe()
	if err != nil {
		return abort("keep lease alive", err)
	}
	c.sess = ka.sess
	put, err := d.cli.Put(ctx, c.marker, "", clientv3.WithLease(grant.ID))
	if err != nil {
		return abort("put session marker", err)
	}

	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	c.events = make(chan backend.ConnEvent, eventBuffer)
	c.abandoned = make(chan struct{})
	c.eventsDone = make(chan struct{})
	c.expireCh = make(chan error, 1)
	c.closeCh = make(chan struct{})
	c.loopDone = make(chan struct{})
	c.closed = make(chan struct{})

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return abort("open", fmt.Errorf("driver: %w", coordkit.ErrClosed))
	}
	d.conns[c] = struct{}{}
	c.wg.Add(1)
	d.mu.Unlock()

	go c.watchMarker(put.Header.Revision + 1)
	go c.run(ka)
	c.lg.Debug("etcd session opened", zap.Duration("ttl", granted), zap.Duration("suspend-after", c.suspendAfter))
	return c, nil
}

func openErr(ctx context.Context, step string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("etcd: open: %s: %w", step, cerr)
	}
	if isUnavailable(err) {
		return fmt.Errorf("etcd: open: %s: %w: %w", step, backend.ErrConnectionLoss, err)
	}
	return fmt.Errorf("etcd: open: %s: %w", step, err)
}

// defaultSuspendAfter is the default of WithSuspendAfter for a granted ttl.
func defaultSuspendAfter(ttl time.Duration) time.Duration {
	d := ttl / 2
	// etcd's client sends a keepalive TTL/3 after the last reply, on a 500ms
	// tick: replies may legitimately be TTL/3+500ms apart, plus the round
	// trip and the scheduling delays of a loaded machine.
	if lo := ttl/3 + 800*time.Millisecond; d < lo {
		d = lo
	}
	if hi := maxSuspendAfter(ttl); d > hi {
		d = hi
	}
	return d
}

// maxSuspendAfter is the longest suspend-after period for a ttl. The server
// renewed the lease when the keepalive request reached it, before the reply
// the period is counted from left, so the lease can expire up to a reply's
// travel time before ttl has passed since that reply: the tenth of the ttl
// left over is for that travel, so that a session reports Suspended (and
// ends its holds) before the server can expire it.
func maxSuspendAfter(ttl time.Duration) time.Duration { return ttl * 9 / 10 }

// forget drops a closed Conn (see Driver.Close for its unread events).
func (d *Driver) forget(c *conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.conns, c)
	d.unread.Closed(c)
}

// Close closes every Conn opened by the driver, each bounded by its TTL, and
// then the client if the driver owns it (see [Dial]). It is idempotent.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	conns := make([]*conn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()

	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), c.ttl)
			defer cancel()
			errs[i] = c.Close(ctx)
		}()
	}
	wg.Wait()
	// Events nobody has read beyond the channel's buffer are dropped: no
	// goroutine outlives Driver.Close waiting for a reader. That includes
	// Conns closed before, whose events are still unread.
	d.mu.Lock()
	conns = append(conns, d.unread.Take()...)
	d.mu.Unlock()
	for _, c := range conns {
		c.abandonEvents()
	}
	if d.owns {
		if err := d.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("etcd: close client: %w", err))
		}
	}
	return errors.Join(errs...)
}
