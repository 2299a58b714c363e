package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// EtcdCluster is an etcd cluster started for tests: one member by default,
// three with WithMembers(3). Members are numbered from 0.
//
// Members started by the kit are embedded in the test process
// (go.etcd.io/etcd/server/v3/embed) and can be stopped and restarted on
// the same ports and data directory. Endpoints given by the environment
// (COORDKIT_ETCD_ENDPOINTS) or a container can only be used: the methods
// that need control skip the test (fail it under CI).
type EtcdCluster struct {
	cluster[*etcdMember] // source "embed", "env" or "docker"
}

// newEtcdCluster returns a cluster of the members at endpoints (none yet
// when the kit is to embed them: source "embed").
func newEtcdCluster(o options, source string, endpoints []string) *EtcdCluster {
	return &EtcdCluster{cluster: cluster[*etcdMember]{kind: "etcd", own: "embed", opts: o, source: source, addrs: endpoints}}
}

type etcdMember struct {
	index    int
	name     string
	dir      string
	logPath  string
	clientU  url.URL
	peerU    url.URL
	cluster  string // InitialCluster
	token    string
	etcd     *embed.Etcd
	logger   *zap.Logger
	logClose func()
}

func (m *etcdMember) running() bool   { return m.etcd != nil }
func (m *etcdMember) logFile() string { return m.logPath }

// StartEtcd provides an etcd cluster for the test and closes it in
// tb.Cleanup: the endpoints in COORDKIT_ETCD_ENDPOINTS if set, a container
// when COORDKIT_USE_DOCKER=1 (one member only), or members embedded in the
// test process. Data directories are under tb.TempDir(); each member logs
// to a file that is reported when the test fails.
func StartEtcd(tb testing.TB, opts ...Option) *EtcdCluster {
	tb.Helper()
	return startForTest(tb, "etcd", launchEtcd, opts)
}

// LaunchEtcd is the building block of StartEtcd for code without a
// testing.TB. The caller must call Close.
func LaunchEtcd(ctx context.Context, opts ...Option) (*EtcdCluster, error) {
	return launchEtcd(ctx, buildOptions(opts))
}

func launchEtcd(ctx context.Context, o options) (*EtcdCluster, error) {
	if eps := splitList(os.Getenv(EnvEtcdEndpoints)); len(eps) > 0 {
		if o.members > 1 && len(eps) < o.members {
			return nil, fmt.Errorf("%w: %d etcd members wanted but %s lists %d",
				ErrUnavailable, o.members, EnvEtcdEndpoints, len(eps))
		}
		return newEtcdCluster(o, "env", eps), nil
	}
	if useDocker() && o.members == 1 {
		return launchEtcdContainer(ctx, o)
	}
	c := newEtcdCluster(o, "embed", nil)
	err := c.launch(ctx, func(attempt int) error { return c.tryLaunch(ctx, attempt) }, func(err error) bool {
		c.stopAll()
		return strings.Contains(err.Error(), "address already in use")
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *EtcdCluster) tryLaunch(ctx context.Context, attempt int) error {
	n := c.opts.members
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	token := fmt.Sprintf("coordkit-%d-%d", time.Now().UnixNano(), attempt)
	suffix := ""
	if attempt > 1 {
		suffix = fmt.Sprintf("-try%d", attempt)
	}
	c.members = make([]*etcdMember, n)
	c.addrs = make([]string, n)
	var initial []string
	for i := range n {
		m := &etcdMember{
			index:   i,
			name:    fmt.Sprintf("m%d", i),
			dir:     filepath.Join(c.opts.dir, fmt.Sprintf("etcd-%d%s", i, suffix)),
			logPath: filepath.Join(c.opts.logDir, fmt.Sprintf("etcd-%d%s.log", i, suffix)),
			clientU: url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*i]))},
			peerU:   url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*i+1]))},
			token:   token,
		}
		c.members[i] = m
		c.addrs[i] = m.clientU.Host
		initial = append(initial, m.name+"="+m.peerU.String())
	}
	for _, m := range c.members {
		m.cluster = strings.Join(initial, ",")
		if err := c.startMember(m); err != nil {
			return fmt.Errorf("start etcd member %d: %w", m.index, err)
		}
	}
	for _, m := range c.members {
		if err := c.waitReady(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

func (c *EtcdCluster) config(m *etcdMember) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dir
	cfg.ListenClientUrls = []url.URL{m.clientU}
	cfg.AdvertiseClientUrls = []url.URL{m.clientU}
	cfg.ListenPeerUrls = []url.URL{m.peerU}
	cfg.AdvertisePeerUrls = []url.URL{m.peerU}
	cfg.InitialCluster = m.cluster
	cfg.InitialClusterToken = m.token
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.UnsafeNoFsync = !c.opts.fsync
	cfg.EnableGRPCGateway = false
	cfg.LogLevel = c.opts.etcdLog
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(m.logger)
	for _, h := range c.opts.etcdHooks {
		h(cfg)
	}
	return cfg
}

// openLog gives member m a zap logger appending to its log file.
func (c *EtcdCluster) openLog(m *etcdMember) error {
	f, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	lvl := zapcore.InfoLevel
	if err := lvl.UnmarshalText([]byte(c.opts.etcdLog)); err != nil {
		lvl = zapcore.InfoLevel
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	ws := zapcore.Lock(f)
	m.logger = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), ws, lvl)).Named(m.name)
	m.logClose = func() {
		m.logger.Sync()
		f.Close()
	}
	return nil
}

func (c *EtcdCluster) startMember(m *etcdMember) error {
	if err := c.openLog(m); err != nil {
		return err
	}
	m.logger.Info("=== coordkit: starting etcd member", zap.Int("index", m.index))
	e, err := embed.StartEtcd(c.config(m))
	if err != nil {
		m.logClose()
		return fmt.Errorf("%w (log %s:\n%s)", err, m.logPath, tailFile(m.logPath, 20))
	}
	m.etcd = e
	return nil
}

func (c *EtcdCluster) waitReady(ctx context.Context, m *etcdMember) error {
	t := time.NewTimer(c.opts.startTimeout)
	defer t.Stop()
	select {
	case <-m.etcd.Server.ReadyNotify():
		return nil
	case err := <-m.etcd.Err():
		return fmt.Errorf("etcd member %d failed while starting: %v; log %s:\n%s",
			m.index, err, m.logPath, tailFile(m.logPath, 30))
	case <-t.C:
	case <-ctx.Done():
	}
	return fmt.Errorf("etcd member %d not ready after %v; log %s:\n%s",
		m.index, c.opts.startTimeout, m.logPath, tailFile(m.logPath, 30))
}

func (c *EtcdCluster) stopMember(m *etcdMember) {
	if m.etcd == nil {
		return
	}
	m.etcd.Close()
	m.etcd = nil
	m.logClose()
}

// Endpoints returns the client endpoints (host:port, which clientv3 takes
// as is) of all members, running or not.
func (c *EtcdCluster) Endpoints() []string { return append([]string(nil), c.addrs...) }

// Endpoint returns member i's client endpoint (host:port).
func (c *EtcdCluster) Endpoint(i int) string { return c.addrs[i] }

// Server returns member i's embedded server, or nil when it is stopped or
// not embedded. It is for inspection; use Stop and Restart to control it.
func (c *EtcdCluster) Server(i int) *embed.Etcd {
	if !c.Controllable() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].etcd
}

// Stop stops member i (embed.Etcd.Close: connections are closed, the
// member leaves no goroutine behind). Stopping a stopped member does
// nothing.
func (c *EtcdCluster) Stop(tb testing.TB, i int) {
	tb.Helper()
	c.control(tb, "stop", i, func(m *etcdMember) error {
		c.stopMember(m)
		return nil
	})
}

// Start starts stopped member i on the same ports and data directory and
// waits until it is ready (for a member of a cluster, until it has joined
// a quorum). Starting a running member fails the test.
func (c *EtcdCluster) Start(tb testing.TB, i int) {
	tb.Helper()
	c.control(tb, "start", i, c.restartMember)
}

// Restart stops member i and starts it again on the same ports and data
// directory, then waits until it is ready. Leases survive a restart
// (etcd renews every lease when a leader takes over).
func (c *EtcdCluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	c.control(tb, "restart", i, func(m *etcdMember) error {
		c.stopMember(m)
		return c.restartMember(m)
	})
}

func (c *EtcdCluster) restartMember(m *etcdMember) error {
	if c.closed {
		return errors.New("etcd cluster closed")
	}
	if m.etcd != nil {
		return errors.New("already running")
	}
	var err error
	// The ports were just released; retry briefly if the kernel still
	// holds one.
	for range 50 {
		if err = c.startMember(m); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	if err := c.waitReady(context.Background(), m); err != nil {
		c.stopMember(m)
		return err
	}
	return nil
}

// Leader returns the index of the member that leads the cluster, as seen
// by every running member. It waits, up to the start timeout, for an
// election to settle, and fails the test if none does. For members the
// kit does not own it returns 0 with a single endpoint and skips (fails
// under CI) otherwise.
func (c *EtcdCluster) Leader(tb testing.TB) int {
	tb.Helper()
	if !c.Controllable() {
		if len(c.addrs) == 1 {
			return 0
		}
		skipOrFatal(tb, "cannot find the etcd leader: %v (source %q)", ErrNoControl, c.source)
	}
	deadline := time.Now().Add(c.opts.startTimeout)
	for {
		if i, ok := c.leader(); ok {
			return i
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no etcd leader agreed on by the running members after %v", c.opts.startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *EtcdCluster) leader() (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := map[uint64]int{}
	for i, m := range c.members {
		if m.etcd != nil {
			ids[uint64(m.etcd.Server.MemberID())] = i
		}
	}
	var lead uint64
	for _, m := range c.members {
		if m.etcd == nil {
			continue
		}
		l := uint64(m.etcd.Server.Leader())
		if l == 0 || (lead != 0 && l != lead) {
			return 0, false
		}
		lead = l
	}
	i, ok := ids[lead]
	return i, ok
}

// Close stops every member and removes the data directory when the kit
// created it. It is safe to call twice.
func (c *EtcdCluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.stopAll()
	c.mu.Unlock()
	c.waitPeersDrained()
	var err error
	if c.closeFn != nil {
		err = c.closeFn()
	}
	c.removeOwnedDir()
	return err
}

// stopAll stops the followers concurrently, then the leader: a leader
// that stops first hands its leadership to a follower that is stopping
// too, and waits for the request timeout (7s) before giving up.
func (c *EtcdCluster) stopAll() {
	var leaders, followers []*etcdMember
	for _, m := range c.members {
		switch {
		case m.etcd == nil:
		case uint64(m.etcd.Server.MemberID()) == m.etcd.Server.Lead():
			leaders = append(leaders, m)
		default:
			followers = append(followers, m)
		}
	}
	for _, group := range [][]*etcdMember{followers, leaders} {
		var wg sync.WaitGroup
		for _, m := range group {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.stopMember(m)
			}()
		}
		wg.Wait()
	}
}

// waitPeersDrained waits until the peer connections of stopped members
// have closed. embed.Etcd.Close leaves some behind: idle keep-alive
// connections of the members' peer HTTP clients (used for version checks
// and lease forwarding, and never closed on stop), and the peer servers'
// ends of them, which close only when their 5s read timeout
// (rafthttp.ConnReadTimeout) fires. Waiting for them here lets goleak see
// a clean process without ignoring net/http goroutines that could be the
// caller's own leaks.
func (c *EtcdCluster) waitPeersDrained() {
	if len(c.members) < 2 {
		return
	}
	ports := map[int]bool{}
	for _, m := range c.members {
		if p, err := strconv.Atoi(m.peerU.Port()); err == nil {
			ports[p] = true
		}
	}
	waitTCPDrained(ports, 15*time.Second)
}

// GoleakOptions returns the goleak options that ignore the goroutines an
// embedded etcd server leaves running after Close (and nothing else), for
// use with goleak.VerifyTestMain or goleak.VerifyNone.
//
// What etcd v3.7.3's embed leaves running after Close are the peer HTTP
// connections between members (net/http persistConn loops and conn.serve,
// ending within the 5s peer read timeout); EtcdCluster.Close waits for
// them to drain rather than have goleak ignore generic net/http
// goroutines. Nothing else remains (checked right after Close for one and
// three members, restarts, a failed start, the gRPC gateway on and off),
// so the list is empty; it is the place for entries should a later etcd
// leave more.
func GoleakOptions() []goleak.Option {
	return []goleak.Option{}
}
