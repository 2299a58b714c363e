package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

// Environment variables read by the kit.
const (
	// EnvZooKeeperAddrs, when set to a comma-separated list of host:port,
	// makes StartZooKeeper use those servers instead of starting its own.
	// Members cannot then be stopped or restarted.
	EnvZooKeeperAddrs = "COORDKIT_ZOOKEEPER_ADDRS"
	// EnvEtcdEndpoints, when set to a comma-separated list of endpoints,
	// makes StartEtcd use those servers instead of embedding its own.
	// Members cannot then be stopped or restarted.
	EnvEtcdEndpoints = "COORDKIT_ETCD_ENDPOINTS"
	// EnvUseDocker, when "1" or "true", makes StartZooKeeper and StartEtcd
	// run standalone servers in containers through testcontainers-go. With
	// a local Docker engine their ports are published on 127.0.0.1 only.
	EnvUseDocker = "COORDKIT_USE_DOCKER"
	// EnvZooKeeperClasspath overrides the Java class path used to run
	// ZooKeeper (used as given).
	EnvZooKeeperClasspath = "COORDKIT_ZOOKEEPER_CLASSPATH"
	// EnvZooKeeperJarsDir overrides the directory holding ZooKeeper's jars;
	// every jar in it is put on the class path (for example the lib
	// directory of an Apache ZooKeeper release).
	EnvZooKeeperJarsDir = "COORDKIT_ZOOKEEPER_JARS_DIR"
	// EnvZooKeeperImage and EnvEtcdImage override the container images.
	EnvZooKeeperImage = "COORDKIT_ZOOKEEPER_IMAGE"
	EnvEtcdImage      = "COORDKIT_ETCD_IMAGE"
	// EnvCI marks a continuous-integration run: a server that cannot be
	// provided fails the test instead of skipping it. InCI also reads
	// EnvRequireServers and the variables other CI systems set.
	EnvCI = "CI"
	// EnvRequireServers, set to anything but "", "0" or "false" ("1", say),
	// asks for the same strict mode as CI outside a CI system: a test that
	// cannot get its server fails.
	EnvRequireServers = "COORDKIT_REQUIRE_SERVERS"
)

// ciVariables are the variables that InCI reads, EnvRequireServers and CI
// first, then those of CI systems that do not set CI (or did not always):
// Azure Pipelines, Jenkins, TeamCity, AWS CodeBuild, Buildkite, GitHub
// Actions and GitLab CI.
var ciVariables = []string{
	EnvRequireServers, EnvCI,
	"TF_BUILD", "JENKINS_URL", "TEAMCITY_VERSION", "CODEBUILD_BUILD_ID",
	"BUILDKITE", "GITHUB_ACTIONS", "GITLAB_CI",
}

// CIVariables returns the names of the environment variables InCI reads.
// A test that checks what happens outside CI clears them all (t.Setenv(v,
// "") for each).
func CIVariables() []string { return append([]string(nil), ciVariables...) }

// ErrUnavailable is wrapped by the errors returned when no server can be
// provided: ZooKeeper is not installed, or Docker was asked for and its
// engine does not answer. The testing.TB helpers turn it into a skip, or
// into a failure under CI (see InCI).
var ErrUnavailable = errors.New("integration: server unavailable")

// ErrNoControl is wrapped by the errors returned when a member must be
// stopped, killed or started but the servers are not owned by the kit
// (they come from the environment or from a container).
var ErrNoControl = errors.New("integration: servers are not controlled by the kit")

// InCI reports whether the tests run in strict mode, where a server that
// cannot be provided fails the test instead of skipping it: when
// COORDKIT_REQUIRE_SERVERS or CI is set, or a variable set by a common CI
// system (TF_BUILD, JENKINS_URL, TEAMCITY_VERSION, CODEBUILD_BUILD_ID,
// BUILDKITE, GITHUB_ACTIONS, GITLAB_CI; see CIVariables), to anything but
// "", "0" or "false". No variable turns strict mode off once one of them
// turns it on.
func InCI() bool { return ciVariable() != "" }

// ciVariable returns the first of ciVariables that asks for strict mode,
// as NAME=value, or "".
func ciVariable() string {
	for _, name := range ciVariables {
		v := strings.TrimSpace(os.Getenv(name))
		if l := strings.ToLower(v); l != "" && l != "0" && l != "false" {
			return name + "=" + v
		}
	}
	return ""
}

func useDocker() bool {
	v := strings.TrimSpace(strings.ToLower(os.Getenv(EnvUseDocker)))
	return v == "1" || v == "true" || v == "yes"
}

// splitList splits a comma-separated environment value, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// skipOrFatal skips the test, or fails it when running in CI (InCI).
func skipOrFatal(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if v := ciVariable(); v != "" {
		tb.Fatalf(format+" (%s is set, so this is a failure)", append(args, v)...)
	}
	tb.Skipf(format, args...)
}

// reportStartError turns an error from a launch function into a skip or
// a failure of tb.
func reportStartError(tb testing.TB, what string, err error) {
	tb.Helper()
	switch {
	case errors.Is(err, ErrUnavailable):
		skipOrFatal(tb, "%v", err)
	default:
		tb.Fatalf("start %s: %v", what, err)
	}
}

// freePorts reserves n distinct free TCP ports on 127.0.0.1. The ports are
// released before returning, so another process may still take one; the
// launchers retry with fresh ports when a bind fails.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tailFile returns the last n lines of the file at path.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 4*n {
			lines = append(lines[:0], lines[len(lines)-n:]...)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 {
		return "(empty log)"
	}
	return strings.Join(lines, "\n")
}
