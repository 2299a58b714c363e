package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/coordkit/coordkit/integration"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, integration.GoleakOptions()...)
}

// wantRows is every row the report must have, by section and
// implementation (prefixes of the cells), written out here rather than taken
// from the harness so that a row the harness stops producing fails the test.
var wantRows = []struct{ section, impl string }{
	{"ZooKeeper, uncontended, one session, fsync on", "go-zookeeper create(ephemeral)+delete"},
	{"ZooKeeper, uncontended, one session, fsync on", "go-zookeeper, the mutex's two stamped multis"},
	{"ZooKeeper, uncontended, one session, fsync on", "Curator 5.4 InterProcessMutex"},
	{"ZooKeeper, uncontended, one session, fsync on", "coordkit mutex"},
	{"ZooKeeper, uncontended, one session, fsync on", "coordkit fairlock"},
	{"ZooKeeper, uncontended, one session, fsync off", "go-zookeeper create(ephemeral)+delete"},
	{"ZooKeeper, uncontended, one session, fsync off", "go-zookeeper, the mutex's two stamped multis"},
	{"ZooKeeper, uncontended, one session, fsync off", "Curator 5.4 InterProcessMutex"},
	{"ZooKeeper, uncontended, one session, fsync off", "coordkit mutex"},
	{"ZooKeeper, uncontended, one session, fsync off", "coordkit fairlock"},
	{"ZooKeeper, 4 contending sessions", "Curator 5.4 InterProcessMutex"},
	{"ZooKeeper, 4 contending sessions", "coordkit fairlock"},
	{"ZooKeeper, 4 contending sessions", "coordkit mutex"},
	{"ZooKeeper, 32 goroutines", "Curator 5.4 InterProcessMutex"},
	{"ZooKeeper, 32 goroutines", "coordkit mutex"},
	{"ZooKeeper, handoff", "Curator 5.4 InterProcessMutex"},
	{"ZooKeeper, handoff", "coordkit mutex"},
	{"ZooKeeper, handoff", "coordkit fairlock"},
	{"etcd, uncontended", "etcd client, the mutex's two Txns"},
	{"etcd, uncontended", "etcd concurrency.Mutex"},
	{"etcd, uncontended", "coordkit mutex"},
	{"etcd, uncontended", "coordkit fairlock"},
	{"etcd, 4 contending sessions", "etcd concurrency.Mutex"},
	{"etcd, 4 contending sessions", "coordkit mutex"},
	{"etcd, 4 contending sessions", "coordkit fairlock"},
	{"etcd, 32 goroutines", "coordkit mutex"},
	{"etcd, handoff", "etcd concurrency.Mutex"},
	{"etcd, handoff", "coordkit mutex"},
	{"etcd, handoff", "coordkit fairlock"},
}

// wantBars is how many bars of issue #3 a full run checks.
const wantBars = 10

// TestQuickRun runs the whole harness in -quick mode, as
// `go run ./integration/cmd/lockbench -quick -md ... -svg ...` would, and
// checks the reports: every row with a positive figure, every bar checked,
// a well-formed SVG.
func TestQuickRun(t *testing.T) {
	requireInstallation(t)
	dir := t.TempDir()
	md, svg := filepath.Join(dir, "report.md"), filepath.Join(dir, "ratios.svg")
	cfg, err := parseFlags([]string{"-quick", "-md", md, "-svg", svg}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.progress = testWriter{t}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, cfg, &out); err != nil {
		if errors.Is(err, integration.ErrUnavailable) && !integration.InCI() {
			t.Skipf("no servers: %v", err)
		}
		t.Fatalf("run: %v\noutput so far:\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())

	report, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	cells := map[string][]string{} // "section|implementation" -> cells
	for _, line := range strings.Split(string(report), "\n") {
		c := strings.Split(strings.Trim(line, "|"), " | ")
		if len(c) == 7 {
			cells[strings.TrimSpace(c[0])+"|"+strings.TrimSpace(c[1])] = c
		}
	}
	firstNumber := regexp.MustCompile(`[0-9][0-9,]*(\.[0-9]+)?`)
	for _, w := range wantRows {
		var found []string
		for k, c := range cells {
			sec, impl, _ := strings.Cut(k, "|")
			if strings.HasPrefix(sec, w.section) && strings.HasPrefix(impl, w.impl) {
				found = c
			}
		}
		if found == nil {
			t.Errorf("no row %q / %q in the markdown report", w.section, w.impl)
			continue
		}
		v, err := strconv.ParseFloat(strings.ReplaceAll(firstNumber.FindString(found[2]), ",", ""), 64)
		if err != nil || v <= 0 {
			t.Errorf("%s / %s: result %q is not a positive figure", w.section, w.impl, found[2])
		}
		if !strings.Contains(out.String(), w.impl) {
			t.Errorf("%s missing from the printed table", w.impl)
		}
	}
	if n := len(cells) - 1; n != len(wantRows) { // minus the header row
		t.Errorf("the report has %d rows, want %d", n, len(wantRows))
	}
	if n := len(regexp.MustCompile(`(?m)^  (PASS|MISS)  `).FindAllString(out.String(), -1)); n != wantBars {
		t.Errorf("%d bars printed, want %d", n, wantBars)
	}
	for _, want := range []string{"Date:", "Command: `go run ./integration/cmd/lockbench -quick", "Machine:", "Go: go", "ZooKeeper: ", "Apache Curator: ", "etcd: "} {
		if !bytes.Contains(report, []byte(want)) {
			t.Errorf("the markdown report lacks %q", want)
		}
	}
	checkSVG(t, svg)
}

// checkSVG checks that path holds well-formed XML with an svg root and a bar
// per ratio.
func checkSVG(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	root, rects := "", 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			if se.Name.Local == "rect" {
				rects++
			}
		}
	}
	if root != "svg" {
		t.Fatalf("SVG root element %q", root)
	}
	// A background, a bar per row with a ratio (every row but the 8
	// references and the one row without a reference), 3 legend swatches.
	if want := 1 + len(wantRows) - 9 + 3; rects != want {
		t.Errorf("SVG has %d rects, want %d", rects, want)
	}
}

// requireInstallation skips the test, with what to install, when Java,
// ZooKeeper or Curator is missing; under CI it fails instead.
func requireInstallation(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Getenv(integration.EnvZooKeeperAddrs) == "" {
		if _, _, err := integration.ZooKeeperInstallation(); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if _, _, _, err := integration.CuratorInstallation(); err != nil {
		missing = append(missing, err.Error())
	}
	if len(missing) == 0 {
		return
	}
	msg := "lockbench needs ZooKeeper, Java and Apache Curator: " + strings.Join(missing, "; ")
	if integration.InCI() {
		t.Fatal(msg + " (strict mode, see integration.InCI: this is a failure)")
	}
	t.Skip(msg)
}

// testWriter sends the harness's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
