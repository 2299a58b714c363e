package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
	"go.uber.org/zap"

	"github.com/coordkit/coordkit"
	"github.com/coordkit/coordkit/backend"
)

// Option configures a Driver.
type Option func(*options)

type options struct {
	log    *zap.Logger
	dialer zk.Dialer
}

// WithLogger sets the logger for session state changes and for
// go-zookeeper's own messages (at debug level, failures at warn level). The
// default is zap.NewNop().
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithDialer sets the function that opens each TCP connection to a server,
// for instance through a fault-injecting proxy in tests. The default is a
// net.Dialer with go-zookeeper's connect timeout. The driver wraps it: once
// a session has expired or its Conn is closed, no further connection is
// dialled (see the package documentation).
func WithDialer(d zk.Dialer) Option {
	return func(o *options) {
		if d != nil {
			o.dialer = d
		}
	}
}

// Driver opens ZooKeeper sessions on one ensemble. It implements
// backend.Driver and is safe for concurrent use.
type Driver struct {
	servers []string
	opts    options

	mu    sync.Mutex
	conns map[*conn]struct{}
	// unread are closed Conns whose Events still hold events nobody has
	// read: Close drops them.
	unread *backend.UnreadEvents[*conn]
	closed bool
	bgN    int           // go-zookeeper Close calls left running by conn.closeZK
	bgZero chan struct{} // closed when bgN drops to 0
}

var _ backend.Driver = (*Driver)(nil)

// New returns a driver for the ensemble whose client addresses ("host:port";
// a missing port means 2181) are servers. It does no network I/O: each Open
// connects. servers must not be empty. Nil options are skipped.
func New(servers []string, opts ...Option) (*Driver, error) {
	if len(servers) == 0 {
		return nil, fmt.Errorf("zookeeper: no servers: %w", coordkit.ErrInvalidArgument)
	}
	for _, s := range servers {
		if s == "" {
			return nil, fmt.Errorf("zookeeper: empty server address: %w", coordkit.ErrInvalidArgument)
		}
	}
	d := &Driver{
		servers: append([]string(nil), servers...),
		opts:    options{log: zap.NewNop()},
		conns:   make(map[*conn]struct{}),
		unread:  backend.NewUnreadEvents(func(c *conn) bool { return c.events.Delivered() }),
	}
	for _, o := range opts {
		if o != nil {
			o(&d.opts)
		}
	}
	return d, nil
}

// Name returns "zookeeper".
func (d *Driver) Name() string { return "zookeeper" }

// authGrace is how long Open waits, once the session exists, for
// go-zookeeper's "authenticated" log line that carries the negotiated
// timeout. go-zookeeper prints it right after reporting the session, on the
// same goroutine, so the grace only matters if a future version stops.
const authGrace = 250 * time.Millisecond

// Open connects to the ensemble and establishes a new session with the
// session timeout ttl (the server clamps it to its [minSessionTimeout,
// maxSessionTimeout]; Conn.Timeout reports the result). It returns once the
// session exists, or ctx's error after closing the half-open connection.
func (d *Driver) Open(ctx context.Context, ttl time.Duration) (backend.Conn, error) {
	if ctx == nil {
		return nil, fmt.Errorf("zookeeper: open: nil context: %w", coordkit.ErrInvalidArgument)
	}
	if ttl <= 0 || ttl/time.Millisecond > 1<<31-1 {
		return nil, fmt.Errorf("zookeeper: open: session timeout %v: %w", ttl, coordkit.ErrInvalidArgument)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("zookeeper: open: %w", err)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, fmt.Errorf("zookeeper: open: driver: %w", coordkit.ErrClosed)
	}
	c := newConn(d, ttl)
	d.conns[c] = struct{}{}
	d.mu.Unlock()

	if err := c.start(d.servers); err != nil {
		d.forget(c)
		return nil, fmt.Errorf("zookeeper: open: %w", err)
	}
	abort := func(err error) (backend.Conn, error) {
		c.abort()
		d.forget(c)
		return nil, fmt.Errorf("zookeeper: open: %w", err)
	}
	select {
	case <-c.sessionUp:
	case <-c.dead: // Driver.Close
		return abort(fmt.Errorf("driver: %w", coordkit.ErrClosed))
	case <-ctx.Done():
		return abort(ctx.Err())
	}
	t := time.NewTimer(authGrace)
	defer t.Stop()
	select {
	case <-c.authed:
	case <-t.C:
	case <-ctx.Done():
		return abort(ctx.Err())
	}
	c.log.Info("session established", zap.String("session", c.SessionID()), zap.Duration("timeout", c.Timeout()))
	return c, nil
}

// Close closes every Conn opened by this driver (each one's goodbye to the
// server bounded by its session timeout plus a second) and makes later
// Opens fail with coordkit.ErrClosed. It returns the Conns' Close errors,
// joined (backend.ErrConnectionLoss for a session the server may not have
// been told of). It is idempotent.
func (d *Driver) Close() error {
	d.mu.Lock()
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
			ctx, cancel := context.WithTimeout(context.Background(), c.ttl+time.Second)
			defer cancel()
			if err := c.Close(ctx); err != nil && !errors.Is(err, coordkit.ErrClosed) {
				errs[i] = err
			}
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
		c.events.Abort()
	}
	for {
		d.mu.Lock()
		n, zero := d.bgN, d.bgZero
		d.mu.Unlock()
		if n == 0 {
			break
		}
		<-zero
	}
	return errors.Join(errs...)
}

// bgAdd counts the background goroutines Close waits for.
func (d *Driver) bgAdd(delta int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bgN == 0 {
		d.bgZero = make(chan struct{})
	}
	d.bgN += delta
	if d.bgN == 0 {
		close(d.bgZero)
	}
}

// forget drops a closed Conn (see Driver.Close for its unread events).
func (d *Driver) forget(c *conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.conns, c)
	d.unread.Closed(c)
}

// dial opens a TCP connection for go-zookeeper, unless the conn may no
// longer reach the server (see conn.stopDial).
func (c *conn) dial(network, address string, timeout time.Duration) (net.Conn, error) {
	if c.noDial.Load() {
		return nil, errNoRedial
	}
	var (
		nc  net.Conn
		err error
	)
	if c.d.opts.dialer != nil {
		nc, err = c.d.opts.dialer(network, address, timeout)
	} else {
		nc, err = (&net.Dialer{Timeout: timeout}).DialContext(c.dialCtx, network, address)
	}
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.noDial.Load() {
		nc.Close()
		return nil, errNoRedial
	}
	c.netConn = nc
	return newTrackedConn(nc, &c.closeReply), nil
}

var errNoRedial = errors.New("zookeeper: session over, not reconnecting")

// closeOnReadError is a connection that closes itself when a read fails.
// go-zookeeper reports a disconnection only once both its receive loop and
// its send loop have ended; when the receive loop times out (2/3 of the
// session timeout after the last reply) while a write is blocked on a full
// socket buffer (a partition that swallows a heavy writer's requests), the
// send loop would end only at that write's own deadline, another 2/3 of the
// timeout later: past the server's expiry of the session, and so past the
// moment the session must have reported Suspended to end its holds.
// Closing the connection at the failed read unblocks the write at once. A
// connection whose read failed is never used again by go-zookeeper.
type closeOnReadError struct{ net.Conn }

func (c closeOnReadError) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.Conn.Close()
	}
	return n, err
}
