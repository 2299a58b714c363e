package integration

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// Shared is a server started once for all the tests of a package (start-up
// costs seconds) and stopped from TestMain:
//
//	var zk = integration.ShareZooKeeper()
//
//	func TestMain(m *testing.M) { integration.VerifyTestMain(m, zk) }
//
//	func TestX(t *testing.T) { c := zk.Get(t); ... }
//
// The server starts on the first Get. Tests that inject faults into a
// shared server (stop a member, ...) must undo them before they end.
type Shared[C interface{ Close() error }] struct {
	what   string
	launch func(ctx context.Context, o options) (C, error)
	logs   func(C, testing.TB)
	opts   []Option

	mu       sync.Mutex
	started  bool
	closed   bool
	server   C
	err      error
	failed   bool
	keepLogs func(bool)
}

// ShareZooKeeper returns a ZooKeeper server or ensemble shared by the
// package's tests; see Shared and StartZooKeeper.
func ShareZooKeeper(opts ...Option) *Shared[*ZooKeeperCluster] {
	return &Shared[*ZooKeeperCluster]{what: "ZooKeeper", launch: launchZooKeeper, opts: opts,
		logs: func(c *ZooKeeperCluster, tb testing.TB) { c.logTails(tb) }}
}

// ShareEtcd returns an etcd cluster shared by the package's tests; see
// Shared and StartEtcd.
func ShareEtcd(opts ...Option) *Shared[*EtcdCluster] {
	return &Shared[*EtcdCluster]{what: "etcd", launch: launchEtcd, opts: opts,
		logs: func(c *EtcdCluster, tb testing.TB) { c.logTails(tb) }}
}

// Started returns the shared server if a test started it successfully, for
// checks that run after the tests (what they left behind).
func (s *Shared[C]) Started() (C, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var zero C
	if !s.started || s.err != nil || s.closed {
		return zero, false
	}
	return s.server, true
}

// Get returns the shared server, starting it on first use. If no server
// can be provided, every Get skips its test (fails it under CI). When the
// test fails, the servers' log tails are reported.
func (s *Shared[C]) Get(tb testing.TB) C {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		tb.Fatalf("shared %s used after Close", s.what)
	}
	if !s.started {
		s.started = true
		o := buildOptions(s.opts)
		logDir := o.logDir
		keep, err := tbLogDir(&o, s.what)
		if err == nil {
			s.keepLogs = keep
			ctx, cancel := context.WithTimeout(context.Background(), 2*o.startTimeout)
			s.server, err = s.launch(ctx, o)
			cancel()
			if err != nil {
				// The error may name a log: keep the directory, unless
				// nothing was written to it (nothing was installed, say).
				if logDir == "" && os.Remove(o.logDir) != nil {
					err = fmt.Errorf("%w\n(logs kept in %s)", err, o.logDir)
				}
				s.keepLogs = nil
			}
		}
		s.err = err
	}
	if s.err != nil {
		reportStartError(tb, "shared "+s.what, s.err)
		var zero C
		return zero
	}
	server := s.server
	tb.Cleanup(func() {
		if tb.Failed() {
			s.mu.Lock()
			s.failed = true
			s.mu.Unlock()
			s.logs(server, tb)
		}
	})
	return server
}

// Close stops the shared server if it was started. Its logs are kept when
// a test that used it failed.
func (s *Shared[C]) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if !s.started || s.err != nil {
		return nil
	}
	err := s.server.Close()
	if s.keepLogs != nil {
		s.keepLogs(s.failed || err != nil)
	}
	return err
}

// VerifyTestMain runs the package's tests, closes the shared servers, and
// then fails the run if goroutines leaked (goleak, ignoring what embedded
// etcd leaves behind: GoleakOptions). Use it as the whole of TestMain.
func VerifyTestMain(m goleak.TestingM, shared ...io.Closer) {
	VerifyTestMainWith(m, shared, GoleakOptions()...)
}

// VerifyTestMainWith is VerifyTestMain with the caller's goleak options
// (which should include GoleakOptions when etcd is embedded).
func VerifyTestMainWith(m goleak.TestingM, shared []io.Closer, opts ...goleak.Option) {
	goleak.VerifyTestMain(mainWithShared{m: m, shared: shared}, opts...)
}

type mainWithShared struct {
	m      goleak.TestingM
	shared []io.Closer
}

func (w mainWithShared) Run() int {
	code := w.m.Run()
	for _, c := range w.shared {
		if err := c.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "integration: closing a shared server: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}
