package integration

import (
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Option configures StartZooKeeper, StartEtcd and their building blocks.
// Options that concern only one of the servers are ignored by the other.
type Option func(*options)

type options struct {
	members      int
	fsync        bool
	startTimeout time.Duration
	dir          string // data root; "" means a fresh temporary directory
	logDir       string // log root; "" means the data root

	// ZooKeeper
	tickTime        time.Duration
	containerCheck  time.Duration
	jvmProps        map[string]string
	jvmFlags        []string
	zkConfig        map[string]string
	zkConfigOrdered []string

	// etcd
	etcdHooks []func(*embed.Config)
	etcdLog   string
}

func defaultOptions() options {
	return options{
		members:        1,
		startTimeout:   60 * time.Second,
		tickTime:       500 * time.Millisecond,
		containerCheck: time.Second,
		etcdLog:        "info",
	}
}

func buildOptions(opts []Option) options {
	o := defaultOptions()
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.members < 1 {
		o.members = 1
	}
	return o
}

// WithMembers sets the number of members: 1 (the default) runs a standalone
// ZooKeeper server or a single etcd member; 3 runs an ensemble or a
// 3-member etcd cluster.
func WithMembers(n int) Option { return func(o *options) { o.members = n } }

// WithFsync turns durable writes on or off (off by default: ZooKeeper runs
// with -Dzookeeper.forceSync=no and etcd with UnsafeNoFsync). Benchmarks
// that report durable numbers turn it on.
func WithFsync(on bool) Option { return func(o *options) { o.fsync = on } }

// WithStartTimeout bounds how long a start or restart waits for a server
// to serve (60s by default).
func WithStartTimeout(d time.Duration) Option { return func(o *options) { o.startTimeout = d } }

// WithDir sets the directory under which data directories are created.
// The testing.TB helpers default to tb.TempDir(); the building blocks to a
// fresh temporary directory that Close removes. A directory given here is
// never removed.
func WithDir(dir string) Option { return func(o *options) { o.dir = dir } }

// WithLogDir sets the directory that receives the server logs (by default
// the data directory; the testing.TB helpers use a temporary directory
// that is kept, and reported, when the test fails).
func WithLogDir(dir string) Option { return func(o *options) { o.logDir = dir } }

// WithTickTime sets ZooKeeper's tickTime (500ms by default, so the smallest
// session timeout the server grants is 1s and the largest 10s).
func WithTickTime(d time.Duration) Option { return func(o *options) { o.tickTime = d } }

// WithContainerCheckInterval sets how often ZooKeeper deletes empty
// container znodes (the Java system property znode.container.checkIntervalMs;
// 1s by default instead of the server's 60s).
func WithContainerCheckInterval(d time.Duration) Option {
	return func(o *options) { o.containerCheck = d }
}

// WithJVMProperty passes -Dkey=value to ZooKeeper's JVM, for instance
// ("zookeeper.extendedTypesEnabled", "true") to allow TTL nodes. It
// overrides the kit's own properties of the same name.
func WithJVMProperty(key, value string) Option {
	return func(o *options) {
		if o.jvmProps == nil {
			o.jvmProps = map[string]string{}
		}
		o.jvmProps[key] = value
	}
}

// WithJVMFlags adds flags (such as -Xmx256m) to ZooKeeper's java command line.
func WithJVMFlags(flags ...string) Option {
	return func(o *options) { o.jvmFlags = append(o.jvmFlags, flags...) }
}

// WithZooKeeperConfig sets key=value in every member's zoo.cfg, overriding
// the kit's value for the same key.
func WithZooKeeperConfig(key, value string) Option {
	return func(o *options) {
		if o.zkConfig == nil {
			o.zkConfig = map[string]string{}
		}
		if _, ok := o.zkConfig[key]; !ok {
			o.zkConfigOrdered = append(o.zkConfigOrdered, key)
		}
		o.zkConfig[key] = value
	}
}

// WithEtcdConfig lets the caller adjust each embedded etcd member's
// configuration after the kit has filled it in (ports, directories,
// cluster membership and logger should be left alone).
func WithEtcdConfig(fn func(*embed.Config)) Option {
	return func(o *options) { o.etcdHooks = append(o.etcdHooks, fn) }
}

// WithEtcdLogLevel sets the level of the embedded etcd members' log files
// ("info" by default; "debug", "warn", "error").
func WithEtcdLogLevel(level string) Option { return func(o *options) { o.etcdLog = level } }
