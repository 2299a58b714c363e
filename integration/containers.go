package integration

import (
	"context"
	"fmt"
	"os"
	"time"

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
func DockerAvailable(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s=1 but the Docker engine does not answer: %v", ErrUnavailable, EnvUseDocker, r)
		}
	}()
	provider, err := testcontainers.ProviderDefault.GetProvider()
	if err != nil {
		return fmt.Errorf("%w: %s=1 but the Docker engine does not answer (is dockerd running, DOCKER_HOST right?): %v",
			ErrUnavailable, EnvUseDocker, err)
	}
	defer provider.Close()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := provider.Health(hctx); err != nil {
		return fmt.Errorf("%w: %s=1 but the Docker engine does not answer (is dockerd running, DOCKER_HOST right?): %v",
			ErrUnavailable, EnvUseDocker, err)
	}
	return nil
}

func imageFromEnv(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

// launchZooKeeperContainer runs a standalone ZooKeeper in a container.
func launchZooKeeperContainer(ctx context.Context, o options) (*ZooKeeperCluster, error) {
	if err := DockerAvailable(ctx); err != nil {
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
	ctr, err := testcontainers.Run(ctx, imageFromEnv(EnvZooKeeperImage, DefaultZooKeeperImage),
		testcontainers.WithExposedPorts("2181/tcp"),
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
	if err != nil {
		if ctr != nil {
			testcontainers.TerminateContainer(ctr)
		}
		return nil, fmt.Errorf("run ZooKeeper container: %w", err)
	}
	addr, err := ctr.PortEndpoint(ctx, "2181/tcp", "")
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
	if err := DockerAvailable(ctx); err != nil {
		return nil, err
	}
	args := []string{"etcd", "--name=m0", "--data-dir=/tmp/etcd-data",
		"--listen-client-urls=http://0.0.0.0:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://0.0.0.0:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=m0=http://127.0.0.1:2380"}
	if !o.fsync {
		args = append(args, "--unsafe-no-fsync")
	}
	ctr, err := testcontainers.Run(ctx, imageFromEnv(EnvEtcdImage, DefaultEtcdImage),
		testcontainers.WithExposedPorts("2379/tcp"),
		testcontainers.WithCmd(args...),
		testcontainers.WithWaitStrategy(wait.ForHTTP("/health").WithPort("2379/tcp").WithStartupTimeout(o.startTimeout)),
	)
	if err != nil {
		if ctr != nil {
			testcontainers.TerminateContainer(ctr)
		}
		return nil, fmt.Errorf("run etcd container: %w", err)
	}
	ep, err := ctr.PortEndpoint(ctx, "2379/tcp", "")
	if err != nil {
		testcontainers.TerminateContainer(ctr)
		return nil, err
	}
	c := newEtcdCluster(o, "docker", []string{ep})
	c.closeFn = func() error { return testcontainers.TerminateContainer(ctr) }
	return c, nil
}
