package integration

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is an in-process TCP proxy between clients and one server, for
// injecting network faults into a client's connections without touching
// the server or other clients. Point a client at Addr instead of the
// server (the ZooKeeper driver takes a dialer or an address; clientv3
// takes endpoints).
//
// The faults:
//   - Blackhole: connections stay open but every byte, both ways, is
//     dropped (a long partition). New connections are accepted and
//     blackholed too.
//   - BlackholeReplies: what clients send still reaches the server, but
//     every byte the server sends is dropped: requests are applied and
//     their replies are lost (ZooKeeper's lost create reply, an etcd Txn
//     whose response never arrives).
//   - Pause: nothing is forwarded, but nothing is lost either: bytes wait
//     in the socket buffers and are delivered on Resume (a short
//     partition that TCP retransmission would survive).
//   - DropConnections: every current connection is reset (both sides get
//     RST); new connections work.
//
// A Proxy owns its accept loop and per-connection goroutines; Close stops
// them all and returns when they have exited.
type Proxy struct {
	upstream string
	ln       net.Listener
	zk       bool
	done     chan struct{}
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu         sync.Mutex
	closed     bool
	blackholed bool
	replyHole  bool // server-to-client bytes are dropped
	paused     bool
	resume     chan struct{} // closed when the proxy resumes
	conns      map[*proxyConn]struct{}
	sessions   map[int64][]byte
	accepted   int

	droppedFromClients atomic.Int64
	droppedFromServers atomic.Int64

	// afterDrop, when set (under mu, by tests of this package), runs on the
	// pump's goroutine right after it has dropped a chunk, outside mu.
	afterDrop func()
}

type proxyConn struct {
	client, server net.Conn
	closed         chan struct{}
	closeOnce      sync.Once
	tainted        bool // under Proxy.mu: lost bytes in a blackhole
}

// ProxyOption configures a Proxy.
type ProxyOption func(*Proxy)

// WithZooKeeperProtocol tells the proxy that the upstream speaks the
// ZooKeeper client protocol: it then records the session id and password
// from each connection's ConnectResponse, so that ZooKeeperSession and
// ExpireZooKeeperSession can expire the session on the server.
func WithZooKeeperProtocol() ProxyOption { return func(p *Proxy) { p.zk = true } }

// NewProxy starts a proxy to upstream (host:port, or a URL such as
// http://127.0.0.1:2379) listening on a free loopback port, and closes it
// in tb.Cleanup.
func NewProxy(tb testing.TB, upstream string, opts ...ProxyOption) *Proxy {
	tb.Helper()
	p, err := StartProxy(upstream, opts...)
	if err != nil {
		tb.Fatalf("start proxy to %s: %v", upstream, err)
	}
	tb.Cleanup(p.Close)
	return p
}

// NewZooKeeperProxy is NewProxy with WithZooKeeperProtocol.
func NewZooKeeperProxy(tb testing.TB, upstream string, opts ...ProxyOption) *Proxy {
	tb.Helper()
	return NewProxy(tb, upstream, append([]ProxyOption{WithZooKeeperProtocol()}, opts...)...)
}

// StartProxy is the building block of NewProxy for code without a
// testing.TB. The caller must call Close.
func StartProxy(upstream string, opts ...ProxyOption) (*Proxy, error) {
	if strings.Contains(upstream, "://") {
		u, err := url.Parse(upstream)
		if err != nil {
			return nil, err
		}
		upstream = u.Host
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		upstream: upstream,
		ln:       ln,
		done:     make(chan struct{}),
		resume:   make(chan struct{}),
		conns:    map[*proxyConn]struct{}{},
		sessions: map[int64][]byte{},
	}
	close(p.resume)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for _, o := range opts {
		o(p)
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the proxy's listening address (127.0.0.1:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Upstream returns the address the proxy forwards to.
func (p *Proxy) Upstream() string { return p.upstream }

// Connections returns the number of connections currently proxied.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Accepted returns the number of connections accepted since the start.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Dropped returns how many bytes the proxy has dropped in blackholes since it
// started: sent by clients and sent by servers. A test that blackholes replies
// waits for fromServers to grow to know that a reply was actually lost.
func (p *Proxy) Dropped() (fromClients, fromServers int64) {
	return p.droppedFromClients.Load(), p.droppedFromServers.Load()
}

// Blackhole starts dropping every byte in both directions, on current
// and new connections, while keeping the connections open.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackholed = true
}

// BlackholeReplies starts dropping every byte servers send, on current and
// new connections, while forwarding every byte clients send: the server
// applies each request and its reply is lost. The connections stay open; the
// client hears nothing until its own timeout, or until Unblackhole or
// DropConnections resets them. Use it to lose the reply of one request whose
// effect the test observes on the server through another client.
func (p *Proxy) BlackholeReplies() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.replyHole = true
}

// Unblackhole ends a Blackhole or a BlackholeReplies. Connections that lost
// bytes meanwhile are reset, since their byte streams can no longer be parsed
// (after a long partition TCP would have given up on them too); the others
// carry on.
func (p *Proxy) Unblackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackholed = false
	p.replyHole = false
	for c := range p.conns {
		if c.tainted {
			c.reset()
		}
	}
}

// Pause stops forwarding in both directions without losing anything:
// bytes wait and are delivered by Resume.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.paused {
		p.paused = true
		p.resume = make(chan struct{})
	}
}

// Resume ends a Pause and delivers what waited.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		p.paused = false
		close(p.resume)
	}
}

// DropConnections resets every current connection (clients and server see
// a connection reset). New connections are accepted as usual.
func (p *Proxy) DropConnections() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.reset()
	}
}

// Close stops accepting, resets every connection and waits for all of the
// proxy's goroutines to exit. It is safe to call twice.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return
	}
	p.closed = true
	close(p.done)
	p.cancel()
	p.ln.Close()
	for c := range p.conns {
		c.reset()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// ZooKeeperSession returns the password of a session seen in a
// ConnectResponse on one of the proxy's connections (WithZooKeeperProtocol
// only).
func (p *Proxy) ZooKeeperSession(sessionID int64) (passwd []byte, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pw, ok := p.sessions[sessionID]
	return append([]byte(nil), pw...), ok
}

// ExpireZooKeeperSession expires, on the upstream server, a session seen by
// the proxy (see the package function ExpireZooKeeperSession).
func (p *Proxy) ExpireZooKeeperSession(ctx context.Context, sessionID int64) error {
	passwd, ok := p.ZooKeeperSession(sessionID)
	if !ok {
		return fmt.Errorf("expire ZooKeeper session 0x%x: not seen by the proxy to %s (zk protocol %v)",
			sessionID, p.upstream, p.zk)
	}
	return ExpireZooKeeperSession(ctx, p.upstream, sessionID, passwd)
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			select {
			case <-p.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: back off a little.
			t := time.NewTimer(10 * time.Millisecond)
			select {
			case <-p.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	var d net.Dialer
	server, err := d.DialContext(ctx, "tcp", p.upstream)
	cancel()
	if err != nil {
		resetConn(client)
		return
	}
	c := &proxyConn{client: client, server: server, closed: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.reset()
		return
	}
	p.conns[c] = struct{}{}
	p.accepted++
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(c, server, client, nil, false) }()
	var parser *zkConnectParser
	if p.zk {
		parser = &zkConnectParser{record: p.recordSession}
	}
	go func() { defer wg.Done(); p.pump(c, client, server, parser, true) }()
	wg.Wait()

	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// pump copies src to dst through the proxy's faults until either side
// fails, then closes the connection pair. fromServer says that src is the
// server.
func (p *Proxy) pump(c *proxyConn, dst, src net.Conn, parser *zkConnectParser, fromServer bool) {
	defer c.close()
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if parser != nil && !parser.done {
				parser.feed(buf[:n])
			}
			if !p.gate(c) {
				return
			}
			// Whether to drop the chunk, and marking the connection for
			// Unblackhole to reset, is one step under mu: an Unblackhole
			// cannot come between them and miss a connection that is about
			// to lose bytes.
			p.mu.Lock()
			drop := p.blackholed || (fromServer && p.replyHole)
			var afterDrop func()
			if drop {
				c.tainted = true
				if fromServer {
					p.droppedFromServers.Add(int64(n))
				} else {
					p.droppedFromClients.Add(int64(n))
				}
				afterDrop = p.afterDrop
			}
			p.mu.Unlock()
			if drop {
				if afterDrop != nil {
					afterDrop()
				}
			} else if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// gate blocks while the proxy is paused. It reports false when the proxy
// or the connection is closed.
func (p *Proxy) gate(c *proxyConn) bool {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return false
		}
		if !p.paused {
			p.mu.Unlock()
			return true
		}
		ch := p.resume
		p.mu.Unlock()
		select {
		case <-ch:
		case <-c.closed:
			return false
		case <-p.done:
			return false
		}
	}
}

func (p *Proxy) recordSession(r ZooKeeperConnectResponse) {
	if r.Timeout <= 0 || r.SessionID == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sessions[r.SessionID] = r.Passwd
}

func (c *proxyConn) close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.client.Close()
		c.server.Close()
	})
}

// reset closes both sides with RST instead of FIN.
func (c *proxyConn) reset() {
	c.closeOnce.Do(func() {
		close(c.closed)
		resetConn(c.client)
		resetConn(c.server)
	})
}

func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// zkConnectParser extracts the first frame a ZooKeeper server sends, the
// ConnectResponse, from the server-to-client byte stream.
type zkConnectParser struct {
	buf    []byte
	done   bool
	record func(ZooKeeperConnectResponse)
}

func (z *zkConnectParser) feed(b []byte) {
	z.buf = append(z.buf, b...)
	if len(z.buf) < 4 {
		return
	}
	n := int32(binary.BigEndian.Uint32(z.buf[:4]))
	if n < 20 || n > 4096 {
		z.done, z.buf = true, nil // not a ConnectResponse
		return
	}
	if len(z.buf) < 4+int(n) {
		return
	}
	if r, err := ParseZooKeeperConnectResponse(z.buf[4 : 4+n]); err == nil {
		z.record(r)
	}
	z.done, z.buf = true, nil
}
