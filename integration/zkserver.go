package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// zooKeeperJars are the jars, in /usr/share/java, that Debian's zookeeper
// package needs on the class path.
var zooKeeperJars = []string{
	"zookeeper", "zookeeper-jute", "slf4j-api", "slf4j-simple",
	"netty-buffer", "netty-common", "netty-handler", "netty-transport",
	"netty-resolver", "netty-codec", "netty-transport-native-epoll",
	"netty-transport-native-unix-common", "metrics-core", "snappy-java",
	"commons-cli", "commons-io", "jackson-annotations", "jackson-core",
	"jackson-databind",
}

const debianJarsDir = "/usr/share/java"

const zkNotInstalled = "ZooKeeper not installed: run `apt-get install -y zookeeper` (Debian) or set " +
	EnvZooKeeperAddrs + " / " + EnvUseDocker + "=1"

// zkEnsembleNotInstalled is zkNotInstalled for an ensemble asked for with
// EnvUseDocker set, which runs standalone servers only.
const zkEnsembleNotInstalled = "ZooKeeper not installed, and %s=1 runs standalone servers only: a %d-member ensemble needs the local installation (run `apt-get install -y zookeeper` on Debian) or %d servers listed in " +
	EnvZooKeeperAddrs

// ZooKeeperCluster is a ZooKeeper server or ensemble started for tests: a
// standalone server by default, an ensemble with WithMembers(3). Members
// are numbered from 0; member i has myid i+1.
//
// Servers started by the kit run as child processes of the test binary
// and can be stopped, killed and started again on the same ports and data
// directory. On Linux each member runs in its own process group, which
// Stop, Kill and Close signal whole, and is killed if the test binary
// dies; on other systems only the member's JVM is signalled, and a test
// binary that dies without its cleanup leaves the JVMs running (see
// process_other.go). Servers given by the
// environment (COORDKIT_ZOOKEEPER_ADDRS) or run in a container can only be
// used: the methods that need control skip the test (fail it under CI).
type ZooKeeperCluster struct {
	cluster[*zkMember] // source "local", "env" or "docker"

	java      string
	classpath string
}

// newZooKeeperCluster returns a cluster of the servers at addrs (none yet
// when the kit is to run them: source "local").
func newZooKeeperCluster(o options, source string, addrs []string) *ZooKeeperCluster {
	return &ZooKeeperCluster{cluster: cluster[*zkMember]{kind: "ZooKeeper", own: "local", opts: o, source: source, addrs: addrs}}
}

type zkMember struct {
	index        int
	clientPort   int
	peerPort     int
	electionPort int
	dir          string // holds zoo.cfg and data/
	logPath      string
	proc         *process
}

func (m *zkMember) running() bool   { return m.proc != nil && m.proc.running() }
func (m *zkMember) logFile() string { return m.logPath }

// StartZooKeeper provides a ZooKeeper server (WithMembers(3): an ensemble)
// for the test and closes it in tb.Cleanup. In order of preference it uses
// the servers listed in COORDKIT_ZOOKEEPER_ADDRS, a container when
// COORDKIT_USE_DOCKER=1 (standalone only), or the local installation
// (Debian's zookeeper package, or the jars named by
// COORDKIT_ZOOKEEPER_CLASSPATH / COORDKIT_ZOOKEEPER_JARS_DIR).
//
// When no server can be provided the test is skipped, or fails in strict
// mode (CI; see InCI). Data directories are under tb.TempDir(); logs go to
// a temporary directory that is removed when the test passes and kept,
// with its path and the last lines of each log reported, when it fails or
// the server fails to start.
func StartZooKeeper(tb testing.TB, opts ...Option) *ZooKeeperCluster {
	tb.Helper()
	return startForTest(tb, "ZooKeeper", launchZooKeeper, opts)
}

// startForTest launches a cluster for one test: data under tb.TempDir(), a
// log directory kept only when the test fails or the cluster fails to start
// (then the error says where), the cluster closed in
// tb.Cleanup with its log tails reported on failure. When the cluster cannot
// start the test is skipped (failed under CI) and nil is returned.
func startForTest[C interface {
	Close() error
	logTails(testing.TB)
}](tb testing.TB, what string, launch func(context.Context, options) (C, error), opts []Option) C {
	tb.Helper()
	var zero C
	o := buildOptions(opts)
	if o.dir == "" {
		o.dir = tb.TempDir()
	}
	logDir := o.logDir
	keepLogs, err := tbLogDir(&o, strings.ToLower(what))
	if err != nil {
		tb.Fatalf("start %s: %v", what, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*o.startTimeout)
	defer cancel()
	c, err := launch(ctx, o)
	if err != nil {
		// The error may name a log: keep the directory, unless nothing
		// was written to it (nothing was installed, say).
		if logDir == "" && os.Remove(o.logDir) != nil {
			err = fmt.Errorf("%w\n(logs kept in %s)", err, o.logDir)
		}
		reportStartError(tb, what, err)
		return zero
	}
	tb.Cleanup(func() {
		failed := tb.Failed()
		if err := c.Close(); err != nil {
			tb.Errorf("close %s: %v", what, err)
			failed = true
		}
		if failed {
			c.logTails(tb)
		}
		keepLogs(failed)
	})
	return c
}

// tbLogDir gives o a log directory of its own unless the caller chose one,
// and returns a function that removes it unless keep is true.
func tbLogDir(o *options, what string) (func(keep bool), error) {
	if o.logDir != "" {
		return func(bool) {}, nil
	}
	dir, err := os.MkdirTemp("", "coordkit-"+what+"-logs-")
	if err != nil {
		return nil, err
	}
	o.logDir = dir
	return func(keep bool) {
		if !keep {
			os.RemoveAll(dir)
		}
	}, nil
}

// server is a member the kit runs itself: a ZooKeeper JVM (*zkMember) or
// an embedded etcd (*etcdMember).
type server interface {
	running() bool
	logFile() string
}

// cluster is what ZooKeeperCluster and EtcdCluster share: where the members
// come from, their client addresses and, when the kit runs them, the members
// themselves. The exported methods are those of both cluster types.
type cluster[M server] struct {
	kind     string // "ZooKeeper" or "etcd", for messages and directory names
	own      string // the source of members the kit runs: "local" or "embed"
	opts     options
	source   string       // own, "env" or "docker"
	addrs    []string     // client addresses (host:port) of all members
	members  []M          // only when source is own
	ownedDir string       // removed by Close
	closeFn  func() error // extra cleanup (containers)

	mu     sync.Mutex
	closed bool
}

// Size returns the number of members.
func (c *cluster[M]) Size() int { return len(c.addrs) }

// Controllable reports whether the kit runs the members itself, so that the
// methods that control them (Stop, Start, Restart, and Kill for ZooKeeper)
// can work.
func (c *cluster[M]) Controllable() bool { return c.source == c.own }

// Source returns where the members come from: "local" for ZooKeeper servers
// the kit started from the local installation, "embed" for etcd members
// the kit embedded in the test process, "env" for the servers named by
// COORDKIT_ZOOKEEPER_ADDRS or COORDKIT_ETCD_ENDPOINTS, or "docker".
func (c *cluster[M]) Source() string { return c.source }

// LogPath returns the path of member i's log file, or "" when the kit does
// not run the member.
func (c *cluster[M]) LogPath(i int) string {
	if !c.Controllable() {
		return ""
	}
	return c.members[i].logFile()
}

// Running reports whether member i is running. Members the kit does not
// run are always reported as running.
func (c *cluster[M]) Running(i int) bool {
	if !c.Controllable() {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i].running()
}

// member returns member i for the control operation op, or skips tb (fails
// it under CI) when the kit does not run the members.
func (c *cluster[M]) member(tb testing.TB, op string, i int) M {
	tb.Helper()
	if !c.Controllable() {
		skipOrFatal(tb, "cannot %s %s member %d: %v (source %q)", op, c.kind, i, ErrNoControl, c.source)
	}
	if i < 0 || i >= len(c.members) {
		tb.Fatalf("%s %s member %d: no such member (size %d)", op, c.kind, i, len(c.members))
	}
	return c.members[i]
}

// control runs do on member i (see member) with the cluster locked, and
// fails tb if do fails.
func (c *cluster[M]) control(tb testing.TB, op string, i int, do func(M) error) {
	tb.Helper()
	m := c.member(tb, op, i)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := do(m); err != nil {
		tb.Fatalf("%s %s member %d: %v", op, c.kind, i, err)
	}
}

// launch starts the members the kit runs. Unless the options name them it
// makes a data directory, which Close removes, and logs there. It calls
// start with attempt 1, 2, 3 until start succeeds; after a failure it
// calls failed, which cleans up and reports whether a port was taken, and
// gives up unless one was. When it gives up and the members have written
// logs in the data directory it made, it keeps that directory and says so
// in the error.
func (c *cluster[M]) launch(ctx context.Context, start func(attempt int) error, failed func(error) (portTaken bool)) error {
	if c.opts.dir == "" {
		dir, err := os.MkdirTemp("", "coordkit-"+strings.ToLower(c.kind)+"-")
		if err != nil {
			return err
		}
		c.opts.dir, c.ownedDir = dir, dir
	}
	if c.opts.logDir == "" {
		c.opts.logDir = c.opts.dir
	}
	const attempts = 3
	for attempt := 1; ; attempt++ {
		err := start(attempt)
		if err == nil {
			return nil
		}
		if !failed(err) || attempt == attempts || ctx.Err() != nil {
			if c.ownedDir != "" && c.opts.logDir == c.ownedDir {
				if logs, _ := filepath.Glob(filepath.Join(c.ownedDir, "*.log")); len(logs) > 0 {
					return fmt.Errorf("%w\n(data and logs kept in %s)", err, c.ownedDir)
				}
			}
			c.removeOwnedDir()
			return err
		}
	}
}

func (c *cluster[M]) removeOwnedDir() {
	if c.ownedDir != "" {
		os.RemoveAll(c.ownedDir)
	}
}

// logTails reports each member's log path and last lines to tb.
func (c *cluster[M]) logTails(tb testing.TB) {
	for i, m := range c.members {
		tb.Logf("%s member %d (%s) log %s, last lines:\n%s",
			c.kind, i, c.addrs[i], m.logFile(), tailFile(m.logFile(), 40))
	}
}

// LaunchZooKeeper is the building block of StartZooKeeper for code without
// a testing.TB (a TestMain, a benchmark driver). It provides servers in the
// same order of preference and returns an error wrapping ErrUnavailable
// when none can be provided. The caller must call Close.
func LaunchZooKeeper(ctx context.Context, opts ...Option) (*ZooKeeperCluster, error) {
	return launchZooKeeper(ctx, buildOptions(opts))
}

func launchZooKeeper(ctx context.Context, o options) (*ZooKeeperCluster, error) {
	if addrs := splitList(os.Getenv(EnvZooKeeperAddrs)); len(addrs) > 0 {
		if o.members > 1 && len(addrs) < o.members {
			return nil, fmt.Errorf("%w: %d ZooKeeper members wanted but %s lists %d",
				ErrUnavailable, o.members, EnvZooKeeperAddrs, len(addrs))
		}
		return newZooKeeperCluster(o, "env", addrs), nil
	}
	if useDocker() && o.members == 1 {
		return launchZooKeeperContainer(ctx, o)
	}
	if useDocker() {
		// An ensemble: the message must not suggest Docker.
		if _, _, missing := zooKeeperInstallation(); len(missing) > 0 {
			return nil, fmt.Errorf("%w: "+zkEnsembleNotInstalled+" (%s)",
				ErrUnavailable, EnvUseDocker, o.members, o.members, strings.Join(missing, "; "))
		}
	}
	return launchLocalZooKeeper(ctx, o)
}

// debianClasspath returns the class path of the named jars in Debian's
// jar directory, and, if some are not installed, what is missing.
func debianClasspath(names []string) (classpath, missing string) {
	var paths, absent []string
	for _, name := range names {
		p := filepath.Join(debianJarsDir, name+".jar")
		if _, err := os.Stat(p); err != nil {
			absent = append(absent, p)
		}
		paths = append(paths, p)
	}
	if len(absent) > 0 {
		missing = "missing jars: " + strings.Join(absent, ", ")
	}
	return strings.Join(paths, string(os.PathListSeparator)), missing
}

// ZooKeeperInstallation returns the java binary and class path the kit
// uses to run ZooKeeper, or an error wrapping ErrUnavailable that says what
// is missing.
func ZooKeeperInstallation() (java, classpath string, err error) {
	java, classpath, missing := zooKeeperInstallation()
	if len(missing) > 0 {
		return "", "", fmt.Errorf("%w: %s (%s)", ErrUnavailable, zkNotInstalled, strings.Join(missing, "; "))
	}
	return java, classpath, nil
}

// zooKeeperInstallation is ZooKeeperInstallation, with what is missing.
func zooKeeperInstallation() (java, classpath string, missing []string) {
	java, err := findJava()
	if err != nil {
		missing = append(missing, err.Error())
	}
	switch {
	case os.Getenv(EnvZooKeeperClasspath) != "":
		classpath = os.Getenv(EnvZooKeeperClasspath)
	case os.Getenv(EnvZooKeeperJarsDir) != "":
		dir := os.Getenv(EnvZooKeeperJarsDir)
		m, _ := filepath.Glob(filepath.Join(dir, "zookeeper*.jar"))
		if len(m) == 0 {
			missing = append(missing, fmt.Sprintf("no zookeeper*.jar in %s=%s", EnvZooKeeperJarsDir, dir))
		}
		classpath = filepath.Join(dir, "*")
	default:
		var absent string
		classpath, absent = debianClasspath(zooKeeperJars)
		if absent != "" {
			missing = append(missing, absent)
		}
	}
	return java, classpath, missing
}

func findJava() (string, error) {
	if home := os.Getenv("JAVA_HOME"); home != "" {
		p := filepath.Join(home, "bin", "java")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath("java")
	if err != nil {
		return "", errors.New("no java on PATH (and none in $JAVA_HOME/bin)")
	}
	return p, nil
}

func launchLocalZooKeeper(ctx context.Context, o options) (*ZooKeeperCluster, error) {
	java, cp, err := ZooKeeperInstallation()
	if err != nil {
		return nil, err
	}
	c := newZooKeeperCluster(o, "local", nil)
	c.java, c.classpath = java, cp
	err = c.launch(ctx, func(attempt int) error { return c.tryLaunch(ctx, attempt) }, func(error) bool {
		bindErr := c.bindFailed()
		c.stopAll(0)
		return bindErr
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// tryLaunch writes the configuration of every member on fresh ports and
// starts them all.
func (c *ZooKeeperCluster) tryLaunch(ctx context.Context, attempt int) error {
	n := c.opts.members
	ports, err := freePorts(3 * n)
	if err != nil {
		return err
	}
	c.members = make([]*zkMember, n)
	c.addrs = make([]string, n)
	for i := range n {
		m := &zkMember{
			index:        i,
			clientPort:   ports[3*i],
			peerPort:     ports[3*i+1],
			electionPort: ports[3*i+2],
			dir:          filepath.Join(c.opts.dir, fmt.Sprintf("zookeeper-%d-try%d", i+1, attempt)),
			logPath:      filepath.Join(c.opts.logDir, fmt.Sprintf("zookeeper-%d-try%d.log", i+1, attempt)),
		}
		if attempt == 1 {
			m.dir = filepath.Join(c.opts.dir, fmt.Sprintf("zookeeper-%d", i+1))
			m.logPath = filepath.Join(c.opts.logDir, fmt.Sprintf("zookeeper-%d.log", i+1))
		}
		c.members[i] = m
		c.addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(m.clientPort))
	}
	for _, m := range c.members {
		if err := c.writeConfig(m); err != nil {
			return err
		}
	}
	for _, m := range c.members {
		if err := c.spawn(m); err != nil {
			return err
		}
	}
	// Every member must answer, and the ensemble must have a leader.
	for _, m := range c.members {
		if err := c.waitServing(ctx, m, true); err != nil {
			return err
		}
	}
	return nil
}

// bindFailed reports whether a member's log says a port was taken.
func (c *ZooKeeperCluster) bindFailed() bool {
	for _, m := range c.members {
		if data, err := os.ReadFile(m.logPath); err == nil &&
			strings.Contains(string(data), "Address already in use") {
			return true
		}
	}
	return false
}

func (c *ZooKeeperCluster) writeConfig(m *zkMember) error {
	data := filepath.Join(m.dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	o := c.opts
	tick := o.tickTime.Milliseconds()
	if tick <= 0 {
		tick = 500
	}
	kv := map[string]string{
		"tickTime":               strconv.FormatInt(tick, 10),
		"initLimit":              "20",
		"syncLimit":              "10",
		"dataDir":                data,
		"clientPort":             strconv.Itoa(m.clientPort),
		"clientPortAddress":      "127.0.0.1",
		"admin.enableServer":     "false",
		"4lw.commands.whitelist": "*",
		"maxClientCnxns":         "0",
	}
	keys := []string{"tickTime", "initLimit", "syncLimit", "dataDir", "clientPort",
		"clientPortAddress", "admin.enableServer", "4lw.commands.whitelist", "maxClientCnxns"}
	if len(c.members) > 1 {
		for _, p := range c.members {
			k := fmt.Sprintf("server.%d", p.index+1)
			kv[k] = fmt.Sprintf("127.0.0.1:%d:%d", p.peerPort, p.electionPort)
			keys = append(keys, k)
		}
		if err := os.WriteFile(filepath.Join(data, "myid"), []byte(strconv.Itoa(m.index+1)+"\n"), 0o644); err != nil {
			return err
		}
	}
	for _, k := range o.zkConfigOrdered {
		if _, ok := kv[k]; !ok {
			keys = append(keys, k)
		}
		kv[k] = o.zkConfig[k]
	}
	var b strings.Builder
	b.WriteString("# written by github.com/coordkit/coordkit/integration\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, kv[k])
	}
	return os.WriteFile(filepath.Join(m.dir, "zoo.cfg"), []byte(b.String()), 0o644)
}

// jvmArgs returns the java command line for member m.
func (c *ZooKeeperCluster) jvmArgs(m *zkMember) []string {
	o := c.opts
	forceSync := "no"
	if o.fsync {
		forceSync = "yes"
	}
	check := o.containerCheck.Milliseconds()
	if check <= 0 {
		check = 1000
	}
	props := map[string]string{
		"zookeeper.forceSync":                   forceSync,
		"znode.container.checkIntervalMs":       strconv.FormatInt(check, 10),
		"znode.container.maxPerMinute":          "60000",
		"zookeeper.admin.enableServer":          "false",
		"java.net.preferIPv4Stack":              "true",
		"org.slf4j.simpleLogger.showDateTime":   "true",
		"org.slf4j.simpleLogger.dateTimeFormat": "HH:mm:ss.SSS",
	}
	for k, v := range o.jvmProps {
		props[k] = v
	}
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := []string{"-XX:-UsePerfData"}
	args = append(args, o.jvmFlags...)
	for _, k := range keys {
		args = append(args, "-D"+k+"="+props[k])
	}
	return append(args, "-cp", c.classpath,
		"org.apache.zookeeper.server.quorum.QuorumPeerMain", filepath.Join(m.dir, "zoo.cfg"))
}

// spawn starts member m's JVM, appending to its log.
func (c *ZooKeeperCluster) spawn(m *zkMember) error {
	log, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "=== coordkit: starting ZooKeeper member %d (myid %d) at %s\n",
		m.index, m.index+1, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(c.java, c.jvmArgs(m)...)
	cmd.Dir = m.dir
	p, err := startProcess(cmd, log)
	if err != nil {
		return fmt.Errorf("start java for ZooKeeper member %d: %w", m.index, err)
	}
	m.proc = p
	return nil
}

// waitServing polls member m with srvr until it reports a mode (or, when
// needMode is false, until it answers at all). It fails early if the
// process exits.
func (c *ZooKeeperCluster) waitServing(ctx context.Context, m *zkMember, needMode bool) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.startTimeout)
	defer cancel()
	addr := c.addrs[m.index]
	var last error
	for {
		if m.proc == nil || !m.proc.running() {
			return fmt.Errorf("ZooKeeper member %d (%s) exited during start-up; log %s:\n%s",
				m.index, addr, m.logPath, tailFile(m.logPath, 30))
		}
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		out, err := FourLetterWord(pctx, addr, "srvr")
		pcancel()
		if err == nil {
			if mode := parseMode(out); mode != "" || !needMode {
				return nil
			}
			last = fmt.Errorf("srvr answered %q", strings.TrimSpace(out))
		} else {
			last = err
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("ZooKeeper member %d (%s) not serving after %v (last: %v); log %s:\n%s",
				m.index, addr, c.opts.startTimeout, last, m.logPath, tailFile(m.logPath, 30))
		case <-t.C:
		}
	}
}

// parseMode returns the value of the "Mode:" line of a srvr answer.
func parseMode(srvr string) string {
	for _, line := range strings.Split(srvr, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Mode:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// FourLetterWord sends a ZooKeeper four-letter command (srvr, ruok, mntr,
// cons, wchs, ...) to addr and returns the whole answer. The server must
// whitelist the command (the kit's servers whitelist all of them).
func FourLetterWord(ctx context.Context, addr, cmd string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(conn, cmd); err != nil {
		return "", err
	}
	out, err := io.ReadAll(conn)
	if err != nil {
		return string(out), err
	}
	return string(out), nil
}

// Addrs returns the client addresses (host:port) of all members, running
// or not.
func (c *ZooKeeperCluster) Addrs() []string { return append([]string(nil), c.addrs...) }

// Addr returns the client address (host:port) of member i.
func (c *ZooKeeperCluster) Addr(i int) string { return c.addrs[i] }

// ConnectString returns the comma-separated client addresses, the form
// ZooKeeper clients such as Curator take.
func (c *ZooKeeperCluster) ConnectString() string { return strings.Join(c.addrs, ",") }

// Stop stops member i gracefully (SIGTERM, then SIGKILL after 10s) and
// waits for its process to exit. Stopping a stopped member does nothing.
func (c *ZooKeeperCluster) Stop(tb testing.TB, i int) {
	tb.Helper()
	c.control(tb, "stop", i, func(m *zkMember) error { return c.stopMember(m, 10*time.Second) })
}

// Kill kills member i with SIGKILL, as a crash would, and waits for its
// process to exit. Killing a stopped member does nothing.
func (c *ZooKeeperCluster) Kill(tb testing.TB, i int) {
	tb.Helper()
	c.control(tb, "kill", i, func(m *zkMember) error { return c.stopMember(m, 0) })
}

// Start starts stopped member i again on the same ports and data
// directory, and waits until it serves (when a quorum is running) or at
// least answers four-letter words (when it is not). Starting a running
// member fails the test.
func (c *ZooKeeperCluster) Start(tb testing.TB, i int) {
	tb.Helper()
	c.control(tb, "start", i, func(m *zkMember) error { return c.startMember(context.Background(), m) })
}

// Restart stops member i gracefully and starts it again (see Stop, Start).
func (c *ZooKeeperCluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	c.control(tb, "restart", i, func(m *zkMember) error {
		if err := c.stopMember(m, 10*time.Second); err != nil {
			return err
		}
		return c.startMember(context.Background(), m)
	})
}

func (c *ZooKeeperCluster) stopMember(m *zkMember, grace time.Duration) error {
	if m.proc == nil {
		return nil
	}
	err := m.proc.stop(grace)
	m.proc = nil
	return err
}

func (c *ZooKeeperCluster) startMember(ctx context.Context, m *zkMember) error {
	if c.closed {
		return errors.New("cluster closed")
	}
	if m.proc != nil {
		if m.proc.running() {
			return errors.New("member is running")
		}
		// It died on its own: reap it first.
		c.stopMember(m, 0)
	}
	if err := c.spawn(m); err != nil {
		return err
	}
	running := 0
	for _, p := range c.members {
		if p.running() {
			running++
		}
	}
	return c.waitServing(ctx, m, running > len(c.members)/2)
}

// Mode returns member i's mode as srvr reports it ("standalone", "leader",
// "follower", ...), or "" if it does not answer or does not serve.
func (c *ZooKeeperCluster) Mode(i int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, err := FourLetterWord(ctx, c.addrs[i], "srvr")
	if err != nil {
		return ""
	}
	return parseMode(out)
}

// Leader returns the index of the member that is the ensemble's leader
// (0 for a standalone server). It waits, up to the start timeout, for an
// election to finish, and fails the test if none does.
func (c *ZooKeeperCluster) Leader(tb testing.TB) int {
	tb.Helper()
	deadline := time.Now().Add(c.opts.startTimeout)
	for {
		for i := range c.addrs {
			if !c.Running(i) {
				continue
			}
			if m := c.Mode(i); m == "leader" || m == "standalone" {
				return i
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no ZooKeeper leader after %v", c.opts.startTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close stops every member, waits for the processes to exit, and removes
// the data directory when the kit created it. It is safe to call twice.
func (c *ZooKeeperCluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	var errs []error
	if c.closeFn != nil {
		errs = append(errs, c.closeFn())
	}
	errs = append(errs, c.stopAll(5*time.Second))
	c.removeOwnedDir()
	return errors.Join(errs...)
}

// stopAll stops the members concurrently.
func (c *ZooKeeperCluster) stopAll(grace time.Duration) error {
	errs := make([]error, len(c.members))
	var wg sync.WaitGroup
	for i, m := range c.members {
		if m.proc == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.stopMember(m, grace)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
