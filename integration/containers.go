package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Default container images, overridden by COORDKIT_ZOOKEEPER_IMAGE and
// COORDKIT_ETCD_IMAGE.
const (
	DefaultZooKeeperImage = "zookeeper:3.8"
	DefaultEtcdImage      = "quay.io/coreos/etcd:v3.5.21"
)

// DockerAvailable reports, as an error wrapping ErrUnavailable, why the
// Docker engine cannot be used; nil means it answers.
func DockerAvailable(ctx context.Context) error {
	_, err := dockerHost(ctx)
	return err
}

// dockerHost checks that the Docker engine answers (see DockerAvailable)
// and returns the host through which testcontainers reaches the ports that
// containers publish: "localhost" for a local engine, the engine's host
// for a remote one, the gateway when the tests themselves run in a
// container.
func dockerHost(ctx context.Context) (host string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s=1 but the Docker engine does not answer: %v", ErrUnavailable, EnvUseDocker, r)
		}
	}()
	provider, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return "", fmt.Errorf("%w: %s=1 but the Docker engine does not answer (is dockerd running, DOCKER_HOST right?): %v",
			ErrUnavailable, EnvUseDocker, err)
	}
	defer provider.Close()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := provider.Health(hctx); err != nil {
		return "", fmt.Errorf("%w: %s=1 but the Docker engine does not answer (is dockerd running, DOCKER_HOST right?): %v",
			ErrUnavailable, EnvUseDocker, err)
	}
	dp, ok := provider.(interface {
		DaemonHost(context.Context) (string, error)
	})
	if !ok {
		return "", nil
	}
	host, err = dp.DaemonHost(hctx)
	if err != nil {
		return "", fmt.Errorf("%w: %s=1 but the Docker engine's host is unknown: %v", ErrUnavailable, EnvUseDocker, err)
	}
	return host, nil
}

// publishPorts publishes the container's ports (as "2181/tcp") on
// ephemeral host ports, on 127.0.0.1 only when the kit reaches them through
// loopback (host, from dockerHost, is localhost or a loopback address), so
// that a test server is not open to the network. Through any other host (a
// remote engine, or tests in a container reaching the host's gateway) a
// loopback binding could not be reached: the ports are then published on
// every interface, as Docker does by default.
func publishPorts(host string, ports ...string) []testcontainers.ContainerCustomizer {
	opts := []testcontainers.ContainerCustomizer{testcontainers.WithExposedPorts(ports...)}
	if !isLoopbackHost(host) {
		return opts
	}
	loopback := netip.MustParseAddr("127.0.0.1")
	return append(opts, testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
		if hc.PortBindings == nil {
			hc.PortBindings = network.PortMap{}
		}
		for _, p := range ports {
			// HostPort "": testcontainers makes it "0", an ephemeral port.
			hc.PortBindings[network.MustParsePort(p)] = []network.PortBinding{{HostIP: loopback}}
		}
	}))
}

// containerEndpoint returns the host:port at which the kit reaches the
// container's port. Published on loopback (see publishPorts) it is
// 127.0.0.1:port, where Docker listens, rather than localhost:port, which a
// client may try on ::1 first.
func containerEndpoint(ctx context.Context, ctr testcontainers.Container, host, port string) (string, error) {
	if !isLoopbackHost(host) {
		return ctr.PortEndpoint(ctx, port, "")
	}
	p, err := ctr.MappedPort(ctx, port)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", p.Port()), nil
}

// isLoopbackHost reports whether host names this machine's loopback.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func imageFromEnv(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

// launchZooKeeperContainer runs a standalone ZooKeeper in a container.
func launchZooKeeperContainer(ctx context.Context, o options) (*ZooKeeperCluster, error) {
	host, err := dockerHost(ctx)
	if err != nil {
		return nil, err
	}
	forceSync := "no"
	if o.fsync {
		forceSync = "yes"
	}
	tick := o.tickTime.Milliseconds()
	if tick <= 0 {
		tick = 500
	}
	check := o.containerCheck.Milliseconds()
	if check <= 0 {
		check = 1000
	}
	opts := append(publishPorts(host, "2181/tcp"),
		testcontainers.WithEnv(map[string]string{
			"ZOO_TICK_TIME":              fmt.Sprint(tick),
			"ZOO_MAX_CLIENT_CNXNS":       "0",
			"ZOO_4LW_COMMANDS_WHITELIST": "*",
			"ZOO_ADMINSERVER_ENABLED":    "false",
			"JVMFLAGS": fmt.Sprintf("-Dzookeeper.forceSync=%s -Dznode.container.checkIntervalMs=%d -Dznode.container.maxPerMinute=60000",
				forceSync, check),
		}),
		testcontainers.WithWaitStrategy(wait.ForListeningPort("2181/tcp").WithStartupTimeout(o.startTimeout)),
	)
	ctr, err := testcontainers.Run(ctx, imageFromEnv(EnvZooKeeperImage, DefaultZooKeeperImage), opts...)
	if err != nil {
		if ctr != nil {
			testcontainers.TerminateContainer(ctr)
		}
		return nil, fmt.Errorf("run ZooKeeper container: %w", err)
	}
	addr, err := containerEndpoint(ctx, ctr, host, "2181/tcp")
	if err != nil {
		testcontainers.TerminateContainer(ctr)
		return nil, err
	}
	c := newZooKeeperCluster(o, "docker", []string{addr})
	c.closeFn = func() error { return testcontainers.TerminateContainer(ctr) }
	// The port listens before the server serves: wait for a mode.
	deadline := time.Now().Add(o.startTimeout)
	for c.Mode(0) == "" {
		if time.Now().After(deadline) {
			c.closeFn()
			return nil, fmt.Errorf("ZooKeeper container at %s not serving after %v", addr, o.startTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c, nil
}

// launchEtcdContainer runs a one-member etcd in a container.
func launchEtcdContainer(ctx context.Context, o options) (*EtcdCluster, error) {
	host, err := dockerHost(ctx)
	if err != nil {
		return nil, err
	}
	args := []string{"etcd", "--name=m0", "--data-dir=/tmp/etcd-data",
		"--listen-client-urls=http://0.0.0.0:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://0.0.0.0:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=m0=http://127.0.0.1:2380"}
	if !o.fsync {
		args = append(args, "--unsafe-no-fsync")
	}
	opts := append(publishPorts(host, "2379/tcp"),
		testcontainers.WithCmd(args...),
		testcontainers.WithWaitStrategy(wait.ForHTTP("/health").WithPort("2379/tcp").WithStartupTimeout(o.startTimeout)),
	)
	ctr, err := testcontainers.Run(ctx, imageFromEnv(EnvEtcdImage, DefaultEtcdImage), opts...)
	if err != nil {
		if ctr != nil {
			testcontainers.TerminateContainer(ctr)
		}
		return nil, fmt.Errorf("run etcd container: %w", err)
	}
	ep, err := containerEndpoint(ctx, ctr, host, "2379/tcp")
	if err != nil {
		testcontainers.TerminateContainer(ctr)
		return nil, err
	}
	c := newEtcdCluster(o, "docker", []string{ep})
	c.closeFn = func() error { return testcontainers.TerminateContainer(ctr) }
	return c, nil
}
