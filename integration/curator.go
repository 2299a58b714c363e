package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Apache Curator interop.
//
// StartCurator runs a real Apache Curator 5.4 client in a JVM next to the
// tests: a small Java driver (integration/curator/CuratorDriver.java,
// embedded in the kit) compiled with javac on first use and cached by
// source hash under os.UserCacheDir()/coordkit. On Debian the jars and the
// compiler come from
//
//	apt-get install -y libcurator-recipes-java default-jdk-headless
//
// (libcurator-recipes-java pulls in curator-framework, curator-client,
// guava, zookeeper and slf4j; default-jdk-headless, or
// openjdk-17-jdk-headless, provides javac). Without them the tests that
// need Curator are skipped, or fail in strict mode (CI; see InCI).

// EnvCuratorClasspath overrides the class path of the Curator driver (the
// Curator 5.x jars and their dependencies, used as given). By default the
// kit uses Debian's jars in /usr/share/java.
const EnvCuratorClasspath = "COORDKIT_CURATOR_CLASSPATH"

// CuratorPackages are the Debian packages that provide what StartCurator
// needs: the Curator jars and a JDK with javac.
const CuratorPackages = "libcurator-recipes-java default-jdk-headless"

const curatorNotInstalled = "Apache Curator or javac not installed: run `apt-get install -y " +
	CuratorPackages + "` (Debian) or set " + EnvCuratorClasspath

// curatorJars are the jars, in /usr/share/java, the driver runs with. The
// ZooKeeper client uses NIO, so netty is not needed.
var curatorJars = []string{
	"curator-recipes", "curator-framework", "curator-client", "guava",
	"zookeeper", "zookeeper-jute", "slf4j-api", "slf4j-simple",
}

//go:embed curator/CuratorDriver.java
var curatorDriverSource []byte

// ErrCuratorTimedOut is returned by Curator.TryAcquire when Curator's
// acquire(wait) gave up: the lock stayed held by someone else for the whole
// wait.
var ErrCuratorTimedOut = errors.New("integration: Curator acquire timed out")

// ErrCuratorClosed is returned by calls on a Curator driver that was closed
// or whose process exited.
var ErrCuratorClosed = errors.New("integration: Curator driver closed")

// CuratorOption configures StartCurator and LaunchCurator.
type CuratorOption func(*curatorOptions)

type curatorOptions struct {
	sessionTimeout time.Duration
	connectTimeout time.Duration
	startTimeout   time.Duration
	jvmFlags       []string
	stderr         io.Writer
	logf           func(format string, args ...any)
}

// WithCuratorSessionTimeout sets the ZooKeeper session timeout Curator asks
// for (default 10s; the server bounds it to 2–20 ticks).
func WithCuratorSessionTimeout(d time.Duration) CuratorOption {
	return func(o *curatorOptions) { o.sessionTimeout = d }
}

// WithCuratorConnectTimeout bounds Curator's first connection and is its
// connection timeout (default 10s; Curator uses at most the session
// timeout).
func WithCuratorConnectTimeout(d time.Duration) CuratorOption {
	return func(o *curatorOptions) { o.connectTimeout = d }
}

// WithCuratorJVMFlags adds flags to the driver's java command line (for
// example "-Xmx512m").
func WithCuratorJVMFlags(flags ...string) CuratorOption {
	return func(o *curatorOptions) { o.jvmFlags = append(o.jvmFlags, flags...) }
}

// WithCuratorStderr copies the driver's standard error (Curator and
// ZooKeeper client logging at WARN and above) to w. StartCurator writes it
// to the test log already.
func WithCuratorStderr(w io.Writer) CuratorOption {
	return func(o *curatorOptions) { o.stderr = w }
}

// Curator is a running Apache Curator client: one JVM with one
// CuratorFramework (one ZooKeeper session) that takes and releases
// InterProcessMutex locks on command. Each lock path has one
// InterProcessMutex, owned by one thread of the driver, so Curator's
// per-thread semantics apply per path: a second Acquire of a path the
// driver holds re-enters, and the calls for one path should come from one
// goroutine at a time. To queue several Curator waiters on one path, start
// several drivers.
//
// The driver is a child process of the test binary (on Linux in its own
// process group, and killed if the test binary dies; elsewhere neither);
// Close (run by StartCurator's cleanup) ends and reaps it. A call
// whose context ends returns the context's error at once: a waiting
// Acquire is interrupted (Curator deletes its node) and an Acquire whose
// grant crossed the cancellation is released, so a cancelled Acquire holds
// nothing; a Release or a benchmark goes on (a benchmark is interrupted).
// No call blocks on a driver that stopped reading its requests: a request
// the driver has not taken within curatorWriteTimeout fails the call, and
// every later one, with ErrCuratorClosed.
//
// Methods are safe for concurrent use.
type Curator struct {
	proc       *process
	stdin      *os.File
	wmu        sync.Mutex // serialises writes to stdin
	werr       error      // under wmu: a write failed, the request stream is broken
	readerDone chan struct{}
	stderr     *lineTail

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan string
	closed  bool

	closeOnce sync.Once
	closeErr  error
}

// CuratorInstallation returns the java and javac binaries and the class
// path the kit runs the Curator driver with, or an error wrapping
// ErrUnavailable that says what is missing.
func CuratorInstallation() (java, javac, classpath string, err error) {
	var missing []string
	java, err = findJava()
	if err != nil {
		missing = append(missing, err.Error())
	}
	javac, err = findJavac(java)
	if err != nil {
		missing = append(missing, err.Error())
	}
	if cp := os.Getenv(EnvCuratorClasspath); cp != "" {
		classpath = cp
	} else {
		var absent string
		classpath, absent = debianClasspath(curatorJars)
		if absent != "" {
			missing = append(missing, absent)
		}
	}
	if len(missing) > 0 {
		return "", "", "", fmt.Errorf("%w: %s (%s)", ErrUnavailable, curatorNotInstalled, strings.Join(missing, "; "))
	}
	return java, javac, classpath, nil
}

// findJavac prefers the javac next to java (one JDK for both), then
// $JAVA_HOME/bin, then PATH.
func findJavac(java string) (string, error) {
	var candidates []string
	if java != "" {
		if real, err := filepath.EvalSymlinks(java); err == nil {
			candidates = append(candidates, filepath.Join(filepath.Dir(real), "javac"))
		}
	}
	if home := os.Getenv("JAVA_HOME"); home != "" {
		candidates = append(candidates, filepath.Join(home, "bin", "javac"))
	}
	for _, p := range candidates {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath("javac")
	if err != nil {
		return "", errors.New("no javac (a JDK, not only a JRE, is needed to compile the Curator driver)")
	}
	return p, nil
}

// compileCuratorDriver compiles the embedded driver once per source, javac
// and class path, into a directory cached under os.UserCacheDir (os.TempDir
// when there is none) that later calls and runs reuse. Concurrent first
// calls may each compile; each renames its build into place whole, so none
// sees half a build.
func compileCuratorDriver(ctx context.Context, javac, classpath string) (string, error) {
	h := sha256.New()
	h.Write(curatorDriverSource)
	fmt.Fprintf(h, "\x00%s\x00%s", javac, classpath)
	key := hex.EncodeToString(h.Sum(nil))[:16]

	var roots []string
	if dir, err := os.UserCacheDir(); err == nil {
		roots = append(roots, filepath.Join(dir, "coordkit"))
	}
	roots = append(roots, filepath.Join(os.TempDir(), "coordkit-cache"))
	var root string
	for _, r := range roots {
		if err := os.MkdirAll(r, 0o755); err == nil {
			root = r
			break
		}
	}
	if root == "" {
		return "", fmt.Errorf("curator driver cache: none of %v is writable", roots)
	}
	final := filepath.Join(root, "curator-driver-"+key)
	if _, err := os.Stat(filepath.Join(final, "CuratorDriver.class")); err != nil {
		// Compile into a fresh directory and rename it into place, so a
		// concurrent test binary never sees half a build.
		tmp, err := os.MkdirTemp(root, "curator-driver-build-")
		if err != nil {
			return "", fmt.Errorf("curator driver cache: %w", err)
		}
		defer os.RemoveAll(tmp)
		src := filepath.Join(tmp, "src")
		out := filepath.Join(tmp, "classes")
		if err := os.MkdirAll(src, 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(src, "CuratorDriver.java"), curatorDriverSource, 0o644); err != nil {
			return "", err
		}
		cmd := exec.CommandContext(ctx, javac, "-nowarn", "-Xlint:-path", "-cp", classpath, "-d", out,
			filepath.Join(src, "CuratorDriver.java"))
		var msg bytes.Buffer
		cmd.Stdout, cmd.Stderr = &msg, &msg
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("javac CuratorDriver.java: %v\n%s", err, msg.String())
		}
		if err := os.Rename(out, final); err != nil {
			if _, err2 := os.Stat(filepath.Join(final, "CuratorDriver.class")); err2 != nil {
				return "", fmt.Errorf("curator driver cache: %w", err)
			}
		}
	}
	return final, nil
}

// StartCurator starts a Curator driver connected to the ZooKeeper servers
// in connectString (host:port[,host:port...], as ZooKeeperCluster's
// ConnectString returns) and closes it in tb.Cleanup. Its standard error
// goes to the test log. When Java, javac or the Curator jars are missing
// the test is skipped, or fails in strict mode (CI; see InCI); see
// CuratorPackages.
func StartCurator(tb testing.TB, connectString string, opts ...CuratorOption) *Curator {
	tb.Helper()
	opts = append([]CuratorOption{func(o *curatorOptions) {
		o.logf = func(format string, args ...any) { tb.Logf(format, args...) }
	}}, opts...)
	c, err := LaunchCurator(context.Background(), connectString, opts...)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			skipOrFatal(tb, "%v", err)
		}
		tb.Fatalf("start Curator: %v", err)
		return nil
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("close Curator driver: %v", err)
		}
	})
	return c
}

// LaunchCurator is the building block of StartCurator for code without a
// testing.TB (a benchmark driver). It returns an error wrapping
// ErrUnavailable when Java, javac or the jars are missing. ctx bounds the
// start (compilation, JVM start and Curator's first connection). The
// caller must call Close.
func LaunchCurator(ctx context.Context, connectString string, opts ...CuratorOption) (*Curator, error) {
	o := curatorOptions{
		sessionTimeout: 10 * time.Second,
		connectTimeout: 10 * time.Second,
		startTimeout:   90 * time.Second,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if strings.TrimSpace(connectString) == "" || strings.ContainsAny(connectString, " \t\n") {
		return nil, fmt.Errorf("integration: bad ZooKeeper connect string %q", connectString)
	}
	java, javac, cp, err := CuratorInstallation()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.startTimeout)
	defer cancel()
	classes, err := compileCuratorDriver(ctx, javac, cp)
	if err != nil {
		return nil, err
	}

	args := []string{
		"-XX:-UsePerfData",
		"-Djava.net.preferIPv4Stack=true",
		"-Dzookeeper.sasl.client=false",
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
		// ClientCnxn warns with a stack trace on every clean close.
		"-Dorg.slf4j.simpleLogger.log.org.apache.zookeeper.ClientCnxn=error",
		"-Dorg.slf4j.simpleLogger.logFile=System.err",
	}
	args = append(args, o.jvmFlags...)
	args = append(args, "-cp", cp+string(os.PathListSeparator)+classes, "CuratorDriver", connectString,
		strconv.FormatInt(o.sessionTimeout.Milliseconds(), 10), strconv.FormatInt(o.connectTimeout.Milliseconds(), 10))
	cmd := exec.Command(java, args...)
	cmd.Dir = os.TempDir() // a JVM crash log must not land in the source tree

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		stdinW.Close()
		return nil, err
	}
	c := &Curator{
		stdin:      stdinW,
		readerDone: make(chan struct{}),
		stderr:     &lineTail{logf: o.logf, copy: o.stderr, max: 40},
		pending:    make(map[int64]chan string),
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, stdoutW, c.stderr
	err = startChild(cmd)
	stdinR.Close()
	stdoutW.Close()
	if err != nil {
		stdinW.Close()
		stdoutR.Close()
		return nil, fmt.Errorf("start java for the Curator driver: %w", err)
	}
	// The process type closes log in stop; the driver has no log file
	// (stderr goes through c.stderr), and Close of a nil *os.File is a no-op
	// error.
	c.proc = &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		defer close(c.proc.exited)
		c.proc.watch()
	}()
	ready := make(chan string, 1)
	go c.readLoop(stdoutR, ready)

	select {
	case line := <-ready:
		if line == "ready" {
			return c, nil
		}
		err = fmt.Errorf("curator driver: %s", strings.TrimPrefix(line, "error "))
	case <-c.readerDone:
		err = errors.New("curator driver exited before it was ready")
	case <-ctx.Done():
		err = fmt.Errorf("curator driver not ready: %w", ctx.Err())
	}
	c.kill()
	return nil, fmt.Errorf("%w\n%s", err, c.stderr.tail())
}

// readLoop reads the driver's stdout: the start line, then replies, each
// handed to the call waiting for its id.
func (c *Curator) readLoop(r *os.File, ready chan<- string) {
	defer close(c.readerDone)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	started := false
	for sc.Scan() {
		line := sc.Text()
		if !started {
			if line == "ready" || strings.HasPrefix(line, "error ") {
				started = true
				ready <- line
			} else {
				c.stderr.logLine("stdout: " + line)
			}
			continue
		}
		idText, rest, _ := strings.Cut(line, " ")
		id, err := strconv.ParseInt(idText, 10, 64)
		if err != nil {
			c.stderr.logLine("stdout: " + line)
			continue
		}
		c.mu.Lock()
		if ch, ok := c.pending[id]; ok {
			delete(c.pending, id)
			ch <- rest // buffered; sent under mu so cancel sees it
		}
		c.mu.Unlock()
	}
}

// curatorWriteTimeout bounds each write of a request to the driver's stdin.
// The driver reads its stdin all the time, so a write waits only when the
// JVM has stopped reading (hung, or stopped by a signal) and the pipe is
// full.
const curatorWriteTimeout = 10 * time.Second

// errDriverStuck is wrapped by the error of a write that timed out.
var errDriverStuck = errors.New("curator driver stopped reading its requests")

// write sends one request line. After a failed write the stream may end in
// half a line, so every later write fails with the same error at once.
func (c *Curator) write(line string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if err := writeBounded(c.stdin, line+"\n", curatorWriteTimeout); err != nil {
		c.werr = err
		return err
	}
	return nil
}

// writeBounded writes s to f, giving up after timeout: with a write
// deadline where f supports one (a pipe on Unix), else from a goroutine
// that it stops waiting for, which returns once the reader's end closes
// (Close kills the driver before it closes stdin).
func writeBounded(f *os.File, s string, timeout time.Duration) error {
	stuck := fmt.Errorf("%w: a request waited %v to be read", errDriverStuck, timeout)
	if err := f.SetWriteDeadline(time.Now().Add(timeout)); err == nil {
		_, err := io.WriteString(f, s)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return stuck
		}
		return err
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.WriteString(f, s)
		done <- err
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return stuck
	}
}

// call sends one request and waits for its reply. When ctx ends first it
// cancels the request in the driver; releaseLate says whether a reply that
// crossed the cancellation must be undone (an acquire's grant).
func (c *Curator) call(ctx context.Context, releaseLate bool, request string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return "", ErrCuratorClosed
	}
	c.nextID++
	id := c.nextID
	ch := make(chan string, 1)
	c.pending[id] = ch
	c.mu.Unlock()

	if err := c.write(fmt.Sprintf("%d %s", id, request)); err != nil {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return "", c.exitError(err)
	}
	select {
	case rest := <-ch:
		return rest, nil
	case <-c.readerDone:
		select {
		case rest := <-ch:
			return rest, nil
		default:
		}
		return "", c.exitError(nil)
	case <-ctx.Done():
		c.mu.Lock()
		_, waiting := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		cancel := waiting
		if !waiting {
			// The reply is in ch already.
			rest := <-ch
			cancel = releaseLate && strings.HasPrefix(rest, "acquired ")
		}
		if cancel {
			_ = c.write(fmt.Sprintf("cancel %d", id))
		}
		return "", ctx.Err()
	}
}

// exitError describes why the driver cannot answer.
func (c *Curator) exitError(cause error) error {
	msg := "curator driver exited"
	switch {
	case errors.Is(cause, errDriverStuck):
		msg = cause.Error()
	case cause != nil:
		msg += " (" + cause.Error() + ")"
	}
	return fmt.Errorf("%w: %s\n%s", ErrCuratorClosed, msg, c.stderr.tail())
}

func replyError(op, path, rest string) error {
	if rest == "cancelled" {
		return fmt.Errorf("curator %s %s: cancelled by the driver (shutting down): %w", op, path, ErrCuratorClosed)
	}
	return fmt.Errorf("curator %s %s: %s", op, path, strings.TrimPrefix(rest, "error "))
}

// Acquire takes the InterProcessMutex on path (InterProcessMutex.acquire()),
// waiting as long as it takes or until ctx ends, and returns the lock node
// Curator created (the full path, <path>/_c_<uuid>-lock-<seq>) and its
// czxid.
func (c *Curator) Acquire(ctx context.Context, path string) (node string, czxid int64, err error) {
	return c.acquire(ctx, path, "acquire "+path)
}

// AcquireNode is Acquire without reading the node's czxid: one round trip
// fewer, as Curator's users see acquire(). Acquire asks the server for the
// czxid after acquire() has returned; AcquireNode returns the lock node
// (which Curator knows without asking) as soon as acquire() returns, so the
// time it takes is Curator's own plus the driver's pipe.
func (c *Curator) AcquireNode(ctx context.Context, path string) (node string, err error) {
	if err := checkArg(path); err != nil {
		return "", err
	}
	rest, err := c.call(ctx, true, "acquire-node "+path)
	if err != nil {
		return "", err
	}
	if f := strings.Fields(rest); len(f) == 2 && f[0] == "acquired" {
		return f[1], nil
	}
	return "", replyError("acquire", path, rest)
}

// TryAcquire is InterProcessMutex.acquire(wait): it returns
// ErrCuratorTimedOut when the lock was not granted within wait (Curator
// then deletes its node); wait 0 makes one attempt.
func (c *Curator) TryAcquire(ctx context.Context, path string, wait time.Duration) (node string, czxid int64, err error) {
	if wait < 0 {
		wait = 0
	}
	return c.acquire(ctx, path, fmt.Sprintf("acquire %s %d", path, wait.Milliseconds()))
}

func (c *Curator) acquire(ctx context.Context, path, request string) (string, int64, error) {
	if err := checkArg(path); err != nil {
		return "", 0, err
	}
	rest, err := c.call(ctx, true, request)
	if err != nil {
		return "", 0, err
	}
	if rest == "timeout" {
		return "", 0, fmt.Errorf("curator acquire %s: %w", path, ErrCuratorTimedOut)
	}
	f := strings.Fields(rest)
	if len(f) == 3 && f[0] == "acquired" {
		zxid, err := strconv.ParseInt(f[2], 10, 64)
		if err == nil {
			return f[1], zxid, nil
		}
	}
	return "", 0, replyError("acquire", path, rest)
}

// Release releases the InterProcessMutex on path
// (InterProcessMutex.release(): Curator deletes its node).
func (c *Curator) Release(ctx context.Context, path string) error {
	if err := checkArg(path); err != nil {
		return err
	}
	rest, err := c.call(ctx, false, "release "+path)
	if err != nil {
		return err
	}
	if rest != "released" {
		return replyError("release", path, rest)
	}
	return nil
}

// BenchUncontended runs n acquire + release cycles of one InterProcessMutex
// on path, after a warm-up of max(20, n/10) cycles, and returns the cycles
// per second.
func (c *Curator) BenchUncontended(ctx context.Context, path string, n int) (opsPerSec float64, err error) {
	if err := checkArg(path); err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, fmt.Errorf("curator bench: n must be positive, got %d", n)
	}
	return c.bench(ctx, path, fmt.Sprintf("bench-uncontended %s %d", path, n))
}

// BenchThreads runs threads threads in the driver's JVM, each with its own
// InterProcessMutex on path over the one CuratorFramework, that take and
// release the lock in a loop for d, and returns the acquisitions per second
// completed within d. First the same threads and mutexes run for d/10
// untimed on the same path (which creates the path's parents and warms the
// code up outside the window). ctx must allow 1.1·d plus the time for
// every thread to finish its last turn, twice.
func (c *Curator) BenchThreads(ctx context.Context, path string, threads int, d time.Duration) (opsPerSec float64, err error) {
	if err := checkArg(path); err != nil {
		return 0, err
	}
	if threads <= 0 || d <= 0 {
		return 0, fmt.Errorf("curator bench: threads and duration must be positive, got %d, %v", threads, d)
	}
	return c.bench(ctx, path, fmt.Sprintf("bench-threads %s %d %.3f", path, threads, d.Seconds()))
}

func (c *Curator) bench(ctx context.Context, path, request string) (float64, error) {
	rest, err := c.call(ctx, false, request)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(rest)
	if len(f) == 3 && f[0] == "ops" {
		n, err1 := strconv.ParseInt(f[1], 10, 64)
		secs, err2 := strconv.ParseFloat(f[2], 64)
		if err1 == nil && err2 == nil && secs > 0 {
			return float64(n) / secs, nil
		}
	}
	return 0, replyError("bench", path, rest)
}

// checkArg refuses what would break the line protocol; Curator validates
// the path itself.
func checkArg(path string) error {
	if path == "" || strings.ContainsAny(path, " \t\r\n") {
		return fmt.Errorf("integration: Curator path %q: empty or contains white space", path)
	}
	return nil
}

// Close ends the driver: it asks it to quit (Curator closes its session,
// so the server deletes its lock nodes at once), kills it if it has not
// exited within 15s, and reaps it. Calls in flight return ErrCuratorClosed.
// Close is idempotent.
func (c *Curator) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.close() })
	return c.closeErr
}

func (c *Curator) close() error {
	c.mu.Lock()
	c.closed = true
	c.nextID++
	id := c.nextID
	c.mu.Unlock()

	var errs []error
	quitErr := c.write(fmt.Sprintf("%d quit", id))
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	clean := false
	if quitErr == nil {
		select {
		case <-c.proc.exited:
			clean = true
		case <-t.C:
		}
	}
	if err := c.proc.stop(0); err != nil {
		errs = append(errs, err)
	}
	select {
	case <-c.readerDone:
	case <-time.After(15 * time.Second):
		errs = append(errs, errors.New("curator driver: stdout still open 15s after the driver exited"))
	}
	c.stdin.Close()
	switch {
	case !clean && quitErr == nil:
		errs = append(errs, fmt.Errorf("curator driver did not quit within 15s and was killed\n%s", c.stderr.tail()))
	case !clean && errors.Is(quitErr, errDriverStuck):
		errs = append(errs, fmt.Errorf("%w, and was killed\n%s", quitErr, c.stderr.tail()))
	case !clean:
		errs = append(errs, fmt.Errorf("curator driver had exited before Close (%v)\n%s", c.proc.err, c.stderr.tail()))
	case c.proc.err != nil:
		errs = append(errs, fmt.Errorf("curator driver exited with %v\n%s", c.proc.err, c.stderr.tail()))
	}
	return errors.Join(errs...)
}

// kill ends a driver that failed to start.
func (c *Curator) kill() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.closeOnce.Do(func() {
		_ = c.proc.stop(0)
		<-c.readerDone
		c.stdin.Close()
		c.closeErr = ErrCuratorClosed
	})
}

// lineTail is the driver's stderr: each line goes to logf and copy, and the
// last max lines are kept for error messages.
type lineTail struct {
	logf func(format string, args ...any)
	copy io.Writer
	max  int

	mu      sync.Mutex
	partial []byte
	lines   []string
}

func (l *lineTail) Write(p []byte) (int, error) {
	if l.copy != nil {
		_, _ = l.copy.Write(p)
	}
	l.mu.Lock()
	l.partial = append(l.partial, p...)
	var done []string
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		done = append(done, string(bytes.TrimRight(l.partial[:i], "\r")))
		l.partial = l.partial[i+1:]
	}
	l.mu.Unlock()
	for _, line := range done {
		l.logLine(line)
	}
	return len(p), nil
}

func (l *lineTail) logLine(line string) {
	l.mu.Lock()
	l.lines = append(l.lines, line)
	if len(l.lines) > 2*l.max {
		l.lines = append(l.lines[:0], l.lines[len(l.lines)-l.max:]...)
	}
	l.mu.Unlock()
	if l.logf != nil {
		l.logf("curator driver: %s", line)
	}
}

func (l *lineTail) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	if len(lines) > l.max {
		lines = lines[len(lines)-l.max:]
	}
	if len(lines) == 0 {
		return "(driver stderr empty)"
	}
	return "driver stderr (last lines):\n" + strings.Join(lines, "\n")
}
