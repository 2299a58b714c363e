package zookeeper

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests in this package that need a server start a standalone
// ZooKeeper from the local installation (Debian's zookeeper package: the
// jars in /usr/share/java, and java on PATH), or use the first server in
// COORDKIT_ZOOKEEPER_ADDRS (the variable the integration kit reads). They
// are skipped when neither is there (they fail instead when CI is set, as
// the integration kit's do), and in -short mode.

const envZooKeeperAddrs = "COORDKIT_ZOOKEEPER_ADDRS"

// zkJars are the jars, in /usr/share/java, that Debian's zookeeper package
// needs on the class path (as in the integration kit).
var zkJars = []string{
	"zookeeper", "zookeeper-jute", "slf4j-api", "slf4j-simple",
	"netty-buffer", "netty-common", "netty-handler", "netty-transport",
	"netty-resolver", "netty-codec", "netty-transport-native-epoll",
	"netty-transport-native-unix-common", "metrics-core", "snappy-java",
	"commons-cli", "commons-io", "jackson-annotations", "jackson-core",
	"jackson-databind",
}

// startZooKeeper returns the address of a ZooKeeper server for the test,
// started for it (and stopped in t.Cleanup) unless the environment names
// one.
func startZooKeeper(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a ZooKeeper server (-short)")
	}
	if addrs := os.Getenv(envZooKeeperAddrs); addrs != "" {
		return strings.TrimSpace(strings.Split(addrs, ",")[0])
	}
	java, err := exec.LookPath("java")
	if err != nil {
		noServer(t, "no java on PATH, and "+envZooKeeperAddrs+" is not set (apt-get install zookeeper, or scripts/test.sh)")
	}
	var cp []string
	for _, j := range zkJars {
		p := filepath.Join("/usr/share/java", j+".jar")
		if _, err := os.Stat(p); err != nil {
			noServer(t, p+" missing (apt-get install zookeeper, or scripts/test.sh), and "+envZooKeeperAddrs+" is not set")
		}
		cp = append(cp, p)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "zoo.cfg")
	conf := fmt.Sprintf("tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir=%s\nclientPort=%d\nclientPortAddress=127.0.0.1\n"+
		"admin.enableServer=false\n4lw.commands.whitelist=*\nmaxClientCnxns=0\n", filepath.Join(dir, "data"), port)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "zookeeper.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(java, "-XX:-UsePerfData", "-Xmx128m", "-Dzookeeper.forceSync=no",
		"-Dzookeeper.admin.enableServer=false", "-Djava.net.preferIPv4Stack=true",
		"-cp", strings.Join(cp, string(os.PathListSeparator)),
		"org.apache.zookeeper.server.ZooKeeperServerMain", cfg)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logFile, logFile
	cmd.SysProcAttr = childProcAttr() // dies with the test binary where it can
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start ZooKeeper: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // our own child, by its pid
		<-exited
		logFile.Close()
		if t.Failed() {
			t.Logf("ZooKeeper log %s:\n%s", logPath, tail(logPath, 40))
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := fourLetterWord(addr, "srvr")
		if err == nil && strings.Contains(out, "Mode:") {
			return addr
		}
		select {
		case <-exited:
			t.Fatalf("ZooKeeper exited during start-up; log:\n%s", tail(logPath, 40))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("ZooKeeper not serving at %s after 60s (last: %v %q); log:\n%s", addr, err, out, tail(logPath, 40))
		}
	}
}

// noServer skips the test for want of a server, or fails it in strict mode:
// CI must not pass without running it. Strict mode is read as the
// integration kit reads it (integration.InCI, which this module cannot
// import): COORDKIT_REQUIRE_SERVERS, CI, or a variable of a common CI
// system, set to anything but "", "0" or "false".
func noServer(t *testing.T, why string) {
	t.Helper()
	for _, v := range []string{"COORDKIT_REQUIRE_SERVERS", "CI", "TF_BUILD", "JENKINS_URL", "TEAMCITY_VERSION",
		"CODEBUILD_BUILD_ID", "BUILDKITE", "GITHUB_ACTIONS", "GITLAB_CI"} {
		if val := strings.ToLower(strings.TrimSpace(os.Getenv(v))); val != "" && val != "0" && val != "false" {
			t.Fatalf("needs a ZooKeeper server (%s is set, so this is a failure): %s", v, why)
		}
	}
	t.Skip("needs a ZooKeeper server: " + why)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fourLetterWord(addr, cmd string) (string, error) {
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(nc, cmd); err != nil {
		return "", err
	}
	out, err := io.ReadAll(nc)
	return string(out), err
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// gate is a dialer for WithDialer that the test controls: it can make the
// connections it opened swallow every write (the requests never reach the
// server, as on a dead link), cut them, and refuse new ones.
type gate struct {
	mu       sync.Mutex
	refuse   bool
	swallow  bool
	conns    []*gatedConn
	swallows int // writes swallowed
}

var errRefused = errors.New("gate: connection refused by the test")

func (g *gate) dial(network, address string, timeout time.Duration) (net.Conn, error) {
	g.mu.Lock()
	refuse := g.refuse
	g.mu.Unlock()
	if refuse {
		return nil, errRefused
	}
	nc, err := net.DialTimeout(network, address, timeout)
	if err != nil {
		return nil, err
	}
	gc := &gatedConn{Conn: nc, g: g}
	g.mu.Lock()
	g.conns = append(g.conns, gc)
	g.mu.Unlock()
	return gc, nil
}

// blackhole makes the open connections swallow writes.
func (g *gate) blackhole() {
	g.mu.Lock()
	g.swallow = true
	g.mu.Unlock()
}

func (g *gate) swallowed() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.swallows
}

// cut closes every connection and refuses new ones.
func (g *gate) cut() {
	g.mu.Lock()
	g.refuse, g.swallow = true, false
	conns := g.conns
	g.conns = nil
	g.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// heal lets the client connect again.
func (g *gate) heal() {
	g.mu.Lock()
	g.refuse = false
	g.mu.Unlock()
}

type gatedConn struct {
	net.Conn
	g *gate
}

func (c *gatedConn) Write(b []byte) (int, error) {
	c.g.mu.Lock()
	swallow := c.g.swallow
	if swallow {
		c.g.swallows++
	}
	c.g.mu.Unlock()
	if swallow {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// waitUntil polls cond every 10ms until it holds or d has passed.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
