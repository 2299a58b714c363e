// Command lockbench compares coordkit's locks with the references of issue #3
// ("Speed") in one run, on servers it starts itself:
//
//	go run ./integration/cmd/lockbench [-duration 300ms] [-rounds 21] [-only zk|etcd]
//	        [-md report.md] [-svg ratios.svg] [-quick]
//
// It starts a standalone ZooKeeper with fsync on, a second one with fsync off
// (Debian's zookeeper package and Java, as the integration kit runs them), an
// embedded single-member etcd, and Apache Curator 5.4 clients in JVMs (the
// kit's Curator driver). Then it measures, on the same servers:
//
//   - ZooKeeper, uncontended acquire+release on one session, fsync on and off:
//     go-zookeeper create(ephemeral)+delete (the floor), go-zookeeper
//     sending the mutex's own two multis (its protocol's floor, without
//     coordkit's code), Curator's InterProcessMutex (the reference),
//     coordkit mutex and fairlock;
//   - ZooKeeper, 4 contending sessions with one goroutine (thread) each:
//     Curator (4 JVMs), coordkit fairlock and mutex;
//   - ZooKeeper, 32 goroutines of one process on one session: coordkit mutex
//     against Curator with 32 threads on one client;
//   - etcd: concurrency.Mutex (the reference) against coordkit mutex and
//     fairlock, uncontended (with the etcd client sending the mutex's two
//     Txns as its floor) and with 4 sessions; coordkit mutex with 32
//     goroutines;
//   - handoff latency: two sessions ping-pong the lock; the time from the
//     holder's Unlock returning to the waiter's Lock returning.
//
// Before the first round every Curator JVM is warmed up once (its JIT
// compiles the lock's code paths; see env.warmCurators), then each row has
// an untimed warm-up round of half of -duration. Each row runs once per
// round, for -duration; the rows of a section take
// turns within a round (the first row changes from round to round), so that
// a slow spell of a loaded machine hits every row of a section alike. Many
// short rounds (21 of 300ms by default) interleave the rows finely: on a
// small machine whose disk and CPU vary from second to second, they give
// steadier ratios than a few long ones. The table reports the median over
// the rounds, with the lowest and highest round, and the ratio to the
// section's reference measured in the same run; beside it, the median of the
// per-round ratios (each round's row over that round's reference) with a
// distribution-free 95% confidence interval (see medianCI). Each round uses
// fresh lock paths. The bars of issue #3 are checked at the end on the
// headline ratio (PASS or MISS), each with whether the bar lies above,
// inside or below its row's interval; a MISS does not change the exit
// status.
//
// Without Java, ZooKeeper or Curator the ZooKeeper part cannot run: install
// them (apt-get install -y zookeeper libcurator-recipes-java
// default-jdk-headless) or use -only etcd. COORDKIT_ZOOKEEPER_ADDRS and
// COORDKIT_ETCD_ENDPOINTS point the harness at servers you run (then both
// "fsync" ZooKeeper sections use the same servers, whatever they do).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coordkit/coordkit/integration"
)

// config is what the flags say.
type config struct {
	duration time.Duration // per row and round
	warmup   time.Duration // per row, once, before the first round
	rounds   int
	// The Curator JVMs' warm-up, once before the warm-up round (see
	// env.warmCurators): acquire+release cycles per driver, and how long
	// 32 threads run on driver 0.
	jvmWarmCycles  int
	jvmWarmThreads time.Duration
	only           string // "", "zk" or "etcd"
	etcdFsync      bool
	mdPath         string
	svgPath        string
	args           []string  // the command line, for the report
	progress       io.Writer // one line per section and round
}

// parseFlags reads the command line (without the program name).
func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("lockbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := config{args: args, progress: stderr, jvmWarmCycles: 1500, jvmWarmThreads: time.Second}
	fs.DurationVar(&cfg.duration, "duration", 300*time.Millisecond, "how long each row runs in each round")
	fs.IntVar(&cfg.rounds, "rounds", 21, "rounds; the table reports the median round")
	fs.StringVar(&cfg.only, "only", "", `run one backend only: "zk" or "etcd"`)
	fs.BoolVar(&cfg.etcdFsync, "etcd-fsync", true, "run etcd with fsync on (ZooKeeper runs both ways)")
	fs.StringVar(&cfg.mdPath, "md", "", "write a markdown report to this file")
	fs.StringVar(&cfg.svgPath, "svg", "", "write an SVG bar chart of the ratios to this file")
	quick := fs.Bool("quick", false, "250ms rounds, 2 of them, and a short JVM warm-up: a smoke test, not a measurement")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: go run ./integration/cmd/lockbench [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick {
		if !set["duration"] {
			cfg.duration = 250 * time.Millisecond
		}
		if !set["rounds"] {
			cfg.rounds = 2
		}
		cfg.jvmWarmCycles, cfg.jvmWarmThreads = 300, 250*time.Millisecond
	}
	switch {
	case cfg.duration <= 0:
		return config{}, fmt.Errorf("-duration must be positive, got %v", cfg.duration)
	case cfg.rounds < 1:
		return config{}, fmt.Errorf("-rounds must be at least 1, got %d", cfg.rounds)
	case cfg.only != "" && cfg.only != "zk" && cfg.only != "etcd":
		return config{}, fmt.Errorf(`-only must be "zk" or "etcd", got %q`, cfg.only)
	}
	cfg.warmup = cfg.duration / 2
	return cfg, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, os.Stdout)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		if interrupted {
			err = fmt.Errorf("interrupted: %w", err)
		}
		fmt.Fprintln(os.Stderr, "lockbench:", err)
		if errors.Is(err, integration.ErrUnavailable) && cfg.only != "etcd" {
			fmt.Fprintln(os.Stderr, "lockbench: -only etcd runs the etcd part alone")
		}
		os.Exit(1)
	}
}

// run starts the servers, measures every row, prints the table and the bars
// to out and writes the reports. Everything it starts is closed before it
// returns, also when ctx ends (Ctrl-C) or a measurement fails.
func run(ctx context.Context, cfg config, out io.Writer) (err error) {
	if cfg.progress == nil {
		cfg.progress = io.Discard
	}
	started := time.Now()
	info := machineInfo(started)
	fmt.Fprintf(cfg.progress, "lockbench: starting servers (%s)\n", backendsLabel(cfg.only))
	env, err := launch(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(cfg.progress, "lockbench: stopping servers")
		err = errors.Join(err, env.close())
	}()
	info.servers = env.versions(ctx)

	sections := env.sections()
	if err := env.warmCurators(ctx, cfg); err != nil {
		return err
	}
	if err := runRounds(ctx, cfg, env.runID, sections); err != nil {
		return err
	}
	info.finished = time.Now()
	info.loadEnd = loadAverage()
	rep := &report{cfg: cfg, info: info, sections: sections, bars: checkBars(sections)}
	rep.writeText(out)
	if cfg.mdPath != "" {
		if err := os.WriteFile(cfg.mdPath, []byte(rep.markdown()), 0o644); err != nil {
			return err
		}
	}
	if cfg.svgPath != "" {
		if err := os.WriteFile(cfg.svgPath, []byte(rep.svg()), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(cfg.progress, "lockbench: done in %v\n", time.Since(started).Round(time.Second))
	return nil
}

func backendsLabel(only string) string {
	switch only {
	case "zk":
		return "ZooKeeper fsync on and off, Curator"
	case "etcd":
		return "etcd"
	}
	return strings.Join([]string{"ZooKeeper fsync on and off", "Curator", "etcd"}, ", ")
}
