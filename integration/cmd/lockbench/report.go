package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// runInfo is what the report says about the run besides the figures.
type runInfo struct {
	started, finished time.Time
	goVersion         string
	platform          string // os/arch, CPU model and count, kernel
	loadStart         string
	loadEnd           string
	clients           string // module versions of the client libraries
	servers           serverVersions
}

func machineInfo(started time.Time) runInfo {
	cpu := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return runInfo{
		started:   started,
		goVersion: runtime.Version(),
		platform: fmt.Sprintf("%s/%s, %d × %s, kernel %s, GOMAXPROCS %d",
			runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpu, kernel, runtime.GOMAXPROCS(0)),
		loadStart: loadAverage(),
		clients:   clientVersions(),
	}
}

// loadAverage is the 1, 5 and 15 minute load average, or "unknown".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func clientVersions() string {
	want := []string{"github.com/go-zookeeper/zk", "go.etcd.io/etcd/client/v3"}
	found := map[string]string{}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			found[d.Path] = d.Version
		}
	}
	var parts []string
	for _, p := range want {
		v := found[p]
		if v == "" {
			v = "unknown"
		}
		parts = append(parts, p+" "+v)
	}
	return strings.Join(parts, ", ")
}

// report is one run's results, printable as text, markdown and SVG.
type report struct {
	cfg      config
	info     runInfo
	sections []*section
	bars     []barResult
}

// display is one row's figures, formatted.
type display struct {
	name   string // with "(reference)" or "(floor)"
	result string
	spread string
	ratio  string
	paired string // per-round ratios: median [confidence interval]
	bar    string
}

func (rep *report) display(s *section, r *row) display {
	d := display{name: r.name, ratio: "—", paired: "—"}
	switch {
	case r.ref:
		d.name += " (reference)"
	case r.floor:
		d.name += " (floor)"
	}
	if s.kind == latency {
		d.result = fmt.Sprintf("p50 %s, p99 %s", formatLatency(percentile(r.samples, 50)), formatLatency(percentile(r.samples, 99)))
		d.spread = fmt.Sprintf("%s–%s (%d samples)", formatLatency(slices.Min(r.perRound)), formatLatency(slices.Max(r.perRound)), len(r.samples))
	} else {
		d.result = formatRate(median(r.rates)) + "/s"
		d.spread = formatRate(slices.Min(r.rates)) + "–" + formatRate(slices.Max(r.rates))
	}
	if ratio, ok := s.ratio(r); ok {
		d.ratio = fmt.Sprintf("%.2f×", ratio)
	}
	if iv, ok := s.paired(r); ok {
		d.paired = formatInterval(iv)
	}
	if b, ok := barFor(rep.bars, s, r); ok {
		d.bar = fmt.Sprintf("%s (≥ %g×)", passMiss(b.pass), b.min)
	}
	return d
}

// formatInterval prints a median ratio and its interval: 1.27× [1.20–1.34].
func formatInterval(iv interval) string {
	return fmt.Sprintf("%.2f× [%.2f–%.2f]", iv.median, iv.lo, iv.hi)
}

// certainty says where a bar lies against the interval of its row's
// per-round ratios: whether this run can tell the two apart.
func certainty(b barResult) string {
	switch {
	case !b.haveCI:
		return "too few rounds for an interval"
	case b.ci.lo >= b.min:
		return "interval above the bar"
	case b.ci.hi < b.min:
		return "interval below the bar"
	default:
		return "bar inside the interval: this run cannot tell"
	}
}

func passMiss(pass bool) string {
	if pass {
		return "PASS"
	}
	return "MISS"
}

func (rep *report) method() string {
	return fmt.Sprintf("medians of %d rounds of %v per row, after a warm-up of %v per row; the rows of a section take turns within each round",
		rep.cfg.rounds, rep.cfg.duration, rep.cfg.warmup)
}

// notes explain what the table cannot say in a cell.
func (rep *report) notes() []string {
	notes := []string{
		"Ratio: against the section's reference measured in the same run, more is better: rate ÷ reference rate; for handoff, reference latency ÷ latency.",
		rep.intervalNote(),
		"Throughput spread: the lowest and highest round. Handoff: p50 and p99 over every sample of every round; spread: the lowest and highest round median.",
		"Handoff: two sessions ping-pong the lock; once an observer session sees the waiter queued (and " + settle.String() + " more, for it to park on its watch), the holder unlocks; a sample is the time from that Unlock returning to the waiter's Lock returning.",
		"Curator handoff is measured, not derived: two Curator drivers (two JVMs) take the lock with the driver's acquire-node request (InterProcessMutex.acquire(), replied to as soon as it returns, with no further ZooKeeper call) and release it with release, through the kit's stdin/stdout line protocol. A sample runs from the holder's \"released\" reply reaching the harness to the waiter's \"acquired\" reply reaching it: Curator's own handoff (the delete's notification, the waiter's getChildren) plus one driver-to-harness pipe hop (tens of µs) at each end, which largely cancel.",
		"etcd concurrency.Mutex: a waiter watches the key before its own from the revision of its own read, and etcd serves a watch whose start revision is not past its current one as catching up (unsynced) until its resync loop, which runs every 100ms (watchResyncPeriod in etcd's mvcc), has synced it. In the handoff row the holder releases " + settle.String() + " after the observer sees the waiter queued, before that loop's next run, so the delete reaches the waiter only at that run; the grant thus comes at a run, the next waiter queues right after it and misses it in turn: the handoffs lock onto the loop's phase, and the row's MEDIAN, not only its tail, lands near 100ms (100ms less the time from a run to the release: the waiter queueing, the observer, the settle). The same loop limits its rate with 4 sessions. coordkit's etcd driver opens its watches at the current revision together with the read and settles the two on one revision (see package backend/etcd), so etcd serves them at once.",
		"Floors: go-zookeeper create(ephemeral)+delete is the least any ZooKeeper lock cycle costs; \"the mutex's two stamped multis\" (ZooKeeper) and \"the mutex's two Txns\" (etcd) send exactly the requests of an uncontended coordkit mutex cycle from the bare client, so the mutex's distance to them is what coordkit's own code costs; on ZooKeeper their distance to create+delete is what the stamp and pin of the mutex's exact release cost the server (see package recipes/mutex, \"Layout\").",
		"Curator uncontended is the driver's own loop (BenchUncontended, which adds a warm-up of a tenth of its cycles); Curator with 4 sessions is BenchThreads(path, 1, d) in 4 JVMs at once, summed; BenchThreads first runs the same threads and mutexes on the same path for d/10 untimed (which creates the path's parents), as coordkit's throughput rows warm up on their path for a tenth of d before they are timed.",
		rep.jvmNote(),
		"The contended and handoff ZooKeeper sections run on the fsync-on server. etcd 32 goroutines has no reference: a concurrency.Mutex cannot be shared by goroutines.",
	}
	return slices.DeleteFunc(notes, func(n string) bool { return n == "" })
}

// jvmNote says how the Curator JVMs were warmed up (env.warmCurators), or
// is empty when there were none or no warm-up.
func (rep *report) jvmNote() string {
	if rep.cfg.only == "etcd" || rep.cfg.jvmWarmCycles <= 0 {
		return ""
	}
	return fmt.Sprintf("Curator JVMs: before the first round each driver ran %d acquire+release cycles on a scratch path (fewer if they took over %v), one driver after another, then driver 0 of the fsync-on server (the 32-thread row's) ran BenchThreads with 32 threads for %v, so that the JIT has compiled Curator's code before any round; the per-row warm-up round follows, as for every row.",
		rep.cfg.jvmWarmCycles, jvmWarmBudget, rep.cfg.jvmWarmThreads)
}

// intervalNote explains the per-round column, with the ranks and exact
// coverage of the interval at each number of per-round ratios the rows
// have (see ratioCounts).
func (rep *report) intervalNote() string {
	n := fmt.Sprintf("Per round: the ratio of each round (the row over the reference in the same round, more is better), their median, and in brackets a distribution-free %.0f%% confidence interval for that median (order statistics of the binomial: ", confidence*100)
	counts := rep.ratioCounts()
	var parts []string
	for _, c := range counts {
		what := plural(c, "round")
		if c != rep.cfg.rounds {
			what = fmt.Sprintf("%s (of %s)", plural(c, "ratio"), plural(rep.cfg.rounds, "round"))
		}
		if k, coverage, ok := medianRanks(c, confidence); ok {
			parts = append(parts, fmt.Sprintf("with %s, the %s and %s smallest ratio, exact coverage %.1f%%", what, ordinal(k), ordinal(c+1-k), coverage*100))
		} else {
			parts = append(parts, what+" are too few for one")
		}
	}
	n += strings.Join(parts, "; ") + ")."
	if len(counts) > 1 || counts[0] != rep.cfg.rounds {
		n += " A round in which a row or its reference measured nothing gives no ratio, and a row that ran fewer rounds than its reference has none."
	}
	return n + " The rows of a section take turns within a round, so a round's ratio cancels the drift the machine shows from round to round; the interval says how far one run can be trusted, and whether a bar lies inside it."
}

// ratioCounts returns the distinct numbers of per-round ratios
// (pairedRatios) of the rows that have a reference, ascending; without
// such rows, the number of rounds.
func (rep *report) ratioCounts() []int {
	var counts []int
	for _, s := range rep.sections {
		if s.reference() == nil {
			continue
		}
		for _, r := range s.rows {
			if !r.ref {
				counts = append(counts, len(s.pairedRatios(r)))
			}
		}
	}
	if len(counts) == 0 {
		return []int{rep.cfg.rounds}
	}
	slices.Sort(counts)
	return slices.Compact(counts)
}

// plural writes "1 round", "21 rounds".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// ordinal writes 1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st.
func ordinal(n int) string {
	suffix := "th"
	if n%100 < 11 || n%100 > 13 {
		switch n % 10 {
		case 1:
			suffix = "st"
		case 2:
			suffix = "nd"
		case 3:
			suffix = "rd"
		}
	}
	return strconv.Itoa(n) + suffix
}

// writeText prints the table and the bars.
func (rep *report) writeText(w io.Writer) {
	fmt.Fprintf(w, "\nlockbench: %s\n", rep.method())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range rep.sections {
		fmt.Fprintf(tw, "\n%s (%s)\n", s.title, s.unit)
		fmt.Fprintln(tw, "  implementation\tresult\trounds\tvs ref\tper round\tbar\t")
		for _, r := range s.rows {
			d := rep.display(s, r)
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t\n", d.name, d.result, d.spread, d.ratio, d.paired, d.bar)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "\nBars of issue #3:")
	for _, b := range rep.bars {
		fmt.Fprintf(w, "  %s  %s: %.2f× (per round %s: %s)\n", passMiss(b.pass), b.what, b.ratio, barInterval(b), certainty(b))
	}
	fmt.Fprintln(w)
	for _, n := range rep.notes() {
		fmt.Fprintln(w, "Note: "+n)
	}
}

// markdown is the report file: the table, what ran where, and how.
func (rep *report) markdown() string {
	var b strings.Builder
	i := rep.info
	fmt.Fprintf(&b, "# lockbench: coordkit locks against Curator and etcd concurrency.Mutex\n\n")
	fmt.Fprintf(&b, "- Date: %s (took %v)\n", i.started.UTC().Format(time.RFC3339), i.finished.Sub(i.started).Round(time.Second))
	fmt.Fprintf(&b, "- Command: `%s` (from the repository root)\n", commandLine(rep.cfg.args))
	fmt.Fprintf(&b, "- Machine: %s; load average %s at the start, %s at the end\n", i.platform, i.loadStart, i.loadEnd)
	fmt.Fprintf(&b, "- Go: %s; clients: %s\n", i.goVersion, i.clients)
	if i.servers.zooKeeper != "" {
		fmt.Fprintf(&b, "- ZooKeeper: %s\n", i.servers.zooKeeper)
		fmt.Fprintf(&b, "- Apache Curator: %s on %s\n", i.servers.curator, i.servers.java)
	}
	if i.servers.etcd != "" {
		fmt.Fprintf(&b, "- etcd: %s\n", i.servers.etcd)
	}
	fmt.Fprintf(&b, "- Method: %s\n\n", rep.method())

	fmt.Fprintf(&b, "| Section | Implementation | Result | Rounds | vs reference | Per round [%.0f%% CI] | Bar |\n|---|---|---|---|---|---|---|\n", confidence*100)
	for _, s := range rep.sections {
		for _, r := range s.rows {
			d := rep.display(s, r)
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", mdCell(s.title), mdCell(d.name), d.result, d.spread, d.ratio, d.paired, d.bar)
		}
	}
	if len(rep.bars) > 0 {
		fmt.Fprintf(&b, "\n## Bars of issue #3\n\n| | Bar | Measured | Per round [%.0f%% CI] | This run |\n|---|---|---|---|---|\n", confidence*100)
		for _, br := range rep.bars {
			fmt.Fprintf(&b, "| %s | %s | %.2f× | %s | %s |\n", passMiss(br.pass), mdCell(br.what), br.ratio, barInterval(br), certainty(br))
		}
	}
	fmt.Fprintf(&b, "\n## Notes\n\n")
	for _, n := range rep.notes() {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	return b.String()
}

// barInterval is the per-round interval of a bar's row, or "—".
func barInterval(b barResult) string {
	if !b.haveCI {
		return "—"
	}
	return formatInterval(b.ci)
}

func mdCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// commandLine is the command that reproduces the run.
func commandLine(args []string) string {
	parts := []string{"go run ./integration/cmd/lockbench"}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n'\"`$\\|&;<>()*?") {
			a = strconv.Quote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// formatRate prints a rate with thousands separators.
func formatRate(v float64) string {
	if v < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func formatLatency(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + " ms"
}
