package main

import (
	"archive/zip"
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	etcddrv "github.com/coordkit/coordkit/backend/etcd"
	zkdrv "github.com/coordkit/coordkit/backend/zookeeper"
	"github.com/coordkit/coordkit/integration"
)

// ttl is the session timeout of every session the harness opens (coordkit,
// Curator and etcd concurrency sessions alike).
const ttl = 10 * time.Second

// curatorsOnDurable is how many Curator drivers run against the fsync-on
// ZooKeeper: one JVM (one ZooKeeper session) per contending session.
const curatorsOnDurable = 4

// zkServer is one standalone ZooKeeper with the clients the rows use.
type zkServer struct {
	fsync    bool
	cluster  *integration.ZooKeeperCluster
	drv      *zkdrv.Driver
	curators []*integration.Curator
}

func (z *zkServer) tag() string { return onOff(z.fsync) }

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// etcdServer is the embedded etcd member and the coordkit driver on it. The
// etcd concurrency sessions use the driver's client, so both sides share one
// gRPC connection.
type etcdServer struct {
	fsync   bool
	cluster *integration.EtcdCluster
	drv     *etcddrv.Driver
}

func (e *etcdServer) client() *clientv3.Client { return e.drv.Client() }

// env is everything the harness started. close stops it all.
type env struct {
	runID string // makes lock paths unique to this run
	zkOn  *zkServer
	zkOff *zkServer
	etcd  *etcdServer

	mu      sync.Mutex
	closers []func() error // in start order; closed in reverse
}

func (e *env) onClose(fn func() error) {
	e.mu.Lock()
	e.closers = append(e.closers, fn)
	e.mu.Unlock()
}

// close closes everything started, the last started first, and returns
// every error.
func (e *env) close() error {
	e.mu.Lock()
	closers := e.closers
	e.closers = nil
	e.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		errs = append(errs, closers[i]())
	}
	return errors.Join(errs...)
}

// launch starts the servers, then the Curator drivers, each group in
// parallel. On error everything already started is closed.
func launch(ctx context.Context, cfg config) (_ *env, err error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	e := &env{runID: strconv.FormatInt(time.Now().UnixNano(), 36)}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.close())
		}
	}()
	var starts []func() error
	if cfg.only != "etcd" {
		e.zkOn, e.zkOff = &zkServer{fsync: true}, &zkServer{fsync: false}
		for _, z := range []*zkServer{e.zkOn, e.zkOff} {
			starts = append(starts, func() error { return e.startZooKeeper(ctx, z) })
		}
	}
	if cfg.only != "zk" {
		e.etcd = &etcdServer{fsync: cfg.etcdFsync}
		starts = append(starts, func() error { return e.startEtcd(ctx) })
	}
	if err := parallel(starts); err != nil {
		return nil, err
	}
	if e.zkOn != nil {
		if err := e.startCurators(ctx); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// parallel runs fns concurrently and returns their errors.
func parallel(fns []func() error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (e *env) startZooKeeper(ctx context.Context, z *zkServer) error {
	c, err := integration.LaunchZooKeeper(ctx, integration.WithFsync(z.fsync))
	if err != nil {
		return fmt.Errorf("start ZooKeeper (fsync %s): %w", z.tag(), err)
	}
	e.onClose(c.Close)
	z.cluster = c
	d, err := zkdrv.New(c.Addrs())
	if err != nil {
		return fmt.Errorf("ZooKeeper driver: %w", err)
	}
	e.onClose(d.Close)
	z.drv = d
	return nil
}

func (e *env) startEtcd(ctx context.Context) error {
	c, err := integration.LaunchEtcd(ctx, integration.WithFsync(e.etcd.fsync))
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	e.onClose(c.Close)
	e.etcd.cluster = c
	d, err := etcddrv.Dial(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("etcd driver: %w", err)
	}
	e.onClose(d.Close)
	e.etcd.drv = d
	return nil
}

// startCurators starts curatorsOnDurable drivers on the fsync-on server and
// one on the fsync-off server.
func (e *env) startCurators(ctx context.Context) error {
	e.zkOn.curators = make([]*integration.Curator, curatorsOnDurable)
	e.zkOff.curators = make([]*integration.Curator, 1)
	var starts []func() error
	for _, z := range []*zkServer{e.zkOn, e.zkOff} {
		for i := range z.curators {
			starts = append(starts, func() error {
				c, err := integration.LaunchCurator(ctx, z.cluster.ConnectString(), integration.WithCuratorSessionTimeout(ttl))
				if err != nil {
					return fmt.Errorf("start Curator driver %d (fsync %s): %w", i, z.tag(), err)
				}
				e.onClose(c.Close)
				z.curators[i] = c
				return nil
			})
		}
	}
	return parallel(starts)
}

// Curator JVM warm-up (see warmCurators).
const (
	jvmWarmChunk  = 250             // cycles per BenchUncontended call
	jvmWarmBudget = 5 * time.Second // per driver: no further chunk after this
)

// warmCurators warms up, once before the first round, the JVM of every
// Curator driver the rows use, so that no round runs Curator's code
// interpreted while the JIT compiles it (the per-row warm-up round, half of
// -duration, is too short for that): cfg.jvmWarmCycles acquire+release
// cycles per driver, in BenchUncontended calls of jvmWarmChunk cycles on a
// scratch path (fewer once jvmWarmBudget has passed on a slow server), then
// BenchThreads with 32 threads for cfg.jvmWarmThreads on the fsync-on
// server's driver 0, the one of the 32-thread row. The drivers warm up one
// after the other, so that none competes with another for the CPU.
func (e *env) warmCurators(ctx context.Context, cfg config) error {
	if e.zkOn == nil || cfg.jvmWarmCycles <= 0 {
		return nil
	}
	type driver struct {
		c    *integration.Curator
		name string
	}
	var ds []driver
	for _, z := range []*zkServer{e.zkOn, e.zkOff} {
		for i, c := range z.curators {
			ds = append(ds, driver{c, fmt.Sprintf("fsync-%s-%d", z.tag(), i)})
		}
	}
	fmt.Fprintf(cfg.progress, "lockbench: warming up %d Curator JVMs: %d acquire+release cycles each (at most about %v each), then 32 threads for %v on one\n",
		len(ds), cfg.jvmWarmCycles, jvmWarmBudget, cfg.jvmWarmThreads)
	// A driver that hangs (a lost server) must not hang the harness.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(len(ds))*(jvmWarmBudget+time.Minute)+cfg.jvmWarmThreads+2*time.Minute)
	defer cancel()
	for _, d := range ds {
		path := fmt.Sprintf("/lockbench/%s/jvm-warmup/%s", e.runID, d.name)
		t0 := time.Now()
		for done := 0; done < cfg.jvmWarmCycles && (done == 0 || time.Since(t0) < jvmWarmBudget); {
			n := min(jvmWarmChunk, cfg.jvmWarmCycles-done)
			if _, err := d.c.BenchUncontended(ctx, path, n); err != nil {
				return fmt.Errorf("warm up Curator JVM %s: %w", d.name, err)
			}
			done += n
		}
	}
	if cfg.jvmWarmThreads > 0 {
		path := fmt.Sprintf("/lockbench/%s/jvm-warmup/threads", e.runID)
		if _, err := e.zkOn.curators[0].BenchThreads(ctx, path, 32, cfg.jvmWarmThreads); err != nil {
			return fmt.Errorf("warm up Curator JVM fsync-on-0 with 32 threads: %w", err)
		}
	}
	return nil
}

// serverVersions describes what the rows ran against.
type serverVersions struct {
	zooKeeper string
	etcd      string
	curator   string
	java      string
}

// versions asks the servers and the installation what they are; a failure
// becomes "unknown (...)" in the report.
func (e *env) versions(ctx context.Context) serverVersions {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var v serverVersions
	if e.zkOn != nil {
		var parts []string
		for _, z := range []*zkServer{e.zkOn, e.zkOff} {
			where := "standalone, local JVM"
			if z.cluster.Source() != "local" {
				where = "from " + z.cluster.Source() + ", fsync not controlled by the harness"
			}
			parts = append(parts, fmt.Sprintf("fsync %s: %s (%s)", z.tag(), zooKeeperVersion(ctx, z.cluster.Addr(0)), where))
		}
		v.zooKeeper = strings.Join(parts, "; ")
		v.curator, v.java = curatorVersions(ctx)
	}
	if e.etcd != nil {
		ver := "unknown"
		if st, err := e.etcd.client().Status(ctx, e.etcd.cluster.Endpoint(0)); err != nil {
			ver = fmt.Sprintf("unknown (%v)", err)
		} else {
			ver = st.Version
		}
		where := e.etcd.cluster.Source()
		if where == "embed" {
			where = "embedded in the harness process"
		}
		v.etcd = fmt.Sprintf("%s (%s, 1 member, fsync %s)", ver, where, onOff(e.etcd.fsync))
	}
	return v
}

func zooKeeperVersion(ctx context.Context, addr string) string {
	out, err := integration.FourLetterWord(ctx, addr, "srvr")
	if err != nil {
		return fmt.Sprintf("unknown (%v)", err)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Zookeeper version: "); ok {
			v, _, _ = strings.Cut(v, ",")
			v, _, _ = strings.Cut(v, "-${") // Debian's build leaves the placeholder
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// curatorVersions reads Curator's version from the curator-recipes jar on the
// driver's class path and asks java for its own.
func curatorVersions(ctx context.Context) (curator, java string) {
	javaBin, _, cp, err := integration.CuratorInstallation()
	if err != nil {
		return "unknown", "unknown"
	}
	curator = "unknown"
	for _, p := range filepath.SplitList(cp) {
		if strings.Contains(filepath.Base(p), "curator-recipes") {
			if v, err := jarVersion(p, "META-INF/maven/org.apache.curator/curator-recipes/pom.properties"); err == nil {
				curator = v
			}
		}
	}
	java = "unknown"
	if out, err := exec.CommandContext(ctx, javaBin, "-version").CombinedOutput(); err == nil {
		if line, _, _ := strings.Cut(string(out), "\n"); line != "" {
			java = strings.TrimSpace(line)
		}
	}
	return curator, java
}

// jarVersion reads version= from a pom.properties inside a jar.
func jarVersion(jar, entry string) (string, error) {
	r, err := zip.OpenReader(jar)
	if err != nil {
		return "", err
	}
	defer r.Close()
	f, err := r.Open(entry)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "version="); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s: no version in %s", jar, entry)
}
