package zookeeper

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/coordkit/coordkit"
)

func TestParseSeq(t *testing.T) {
	for _, tc := range []struct {
		name string
		seq  int64
		ok   bool
	}{
		{"lock-0000000000", 0, true},
		{"lock-0000000001", 1, true},
		{"0000000042", 42, true},
		{"_c_53345f98-9423-4e0c-a7b5-9f819e3ec2e1-lock-0000000759", 759, true},
		{"lock-2147483647", math.MaxInt32, true},
		{"lock--2147483648", math.MinInt32, true},
		{"lock--000000001", -1, true},
		{"lock--999999999", -999999999, true},
		{"lock--1000000000", -1000000000, true},
		{"lock--1500000000", -1500000000, true},
		{"lock-1500000000", 1500000000, true}, // the ambiguous band reads positive
		{"__WRIT__0000000007", 7, true},
		{"__READ__-000000007", -7, true},
		{"__READ__-2147483648", math.MinInt32, true},
		{"x2147483648", 0, false}, // beyond int32 and not negative
		{"lock-", 0, false},
		{"lock-000000001", -1, true}, // "lock" + "-000000001"
		{"lock_00000001", 0, false},
		{"123456789", 0, false},
		{"ready", 0, false},
		{"", 0, false},
	} {
		seq, ok := parseSeq(tc.name)
		if seq != tc.seq || ok != tc.ok {
			t.Errorf("parseSeq(%q) = %d, %v; want %d, %v", tc.name, seq, ok, tc.seq, tc.ok)
		}
	}
}

func TestParseSuffix(t *testing.T) {
	for _, tc := range []struct {
		suffix string
		seq    int64
		ok     bool
	}{
		{"0000000000", 0, true},
		{"0000000017", 17, true},
		{"2147483647", math.MaxInt32, true},
		{"-2147483648", math.MinInt32, true},
		{"-000000005", -5, true},
		{"-1500000000", -1500000000, true},
		{"2147483648", 0, false},
		{"", 0, false},
		{"12", 0, false},
		{"abcdefghij", 0, false},
	} {
		seq, ok := parseSuffix(tc.suffix)
		if seq != tc.seq || ok != tc.ok {
			t.Errorf("parseSuffix(%q) = %d, %v; want %d, %v", tc.suffix, seq, ok, tc.seq, tc.ok)
		}
	}
}

// The protected prefix must satisfy Curator's ProtectedUtils.isProtectedZNode:
// 40 characters, "_c_", a parseable canonical UUID, '-' at index 39.
func TestProtectedPrefixIsCurators(t *testing.T) {
	p := newProtectedPrefix()
	if len(p) != 40 || !strings.HasPrefix(p, "_c_") || p[39] != '-' {
		t.Fatalf("prefix %q", p)
	}
	u, err := uuid.Parse(p[3:39])
	if err != nil || u.String() != p[3:39] {
		t.Fatalf("uuid %q: %v", p[3:39], err)
	}
	if newProtectedPrefix() == p {
		t.Fatal("prefix repeated")
	}
}

func TestChildNodesOrder(t *testing.T) {
	names := []string{
		"zeta",
		"_c_b-lock-0000000003",
		"lock--2147483648", // wrapped after 2147483647: comes last among sequential
		"lock-2147483647",
		"_c_a-lock-0000000001",
		"alpha",
	}
	// Drop 1 and 3 to keep the live span small, as SeqLess requires.
	got := childNodes("/q", []string{names[0], names[2], names[3], names[5]})
	want := []string{"lock-2147483647", "lock--2147483648", "alpha", "zeta"}
	for i, n := range got {
		if n.Name != want[i] || n.Path != "/q/"+want[i] {
			t.Fatalf("order %d: got %q want %q", i, n.Name, want[i])
		}
	}
	got = childNodes("/q", []string{names[0], names[1], names[4], names[5]})
	want = []string{"_c_a-lock-0000000001", "_c_b-lock-0000000003", "alpha", "zeta"}
	for i, n := range got {
		if n.Name != want[i] {
			t.Fatalf("order %d: got %q want %q", i, n.Name, want[i])
		}
	}
	if !got[0].Sequential || got[0].Seq != 1 || got[2].Sequential {
		t.Fatalf("fields %+v", got)
	}
	if root := childNodes("/", []string{"a"}); root[0].Path != "/a" {
		t.Fatalf("root child path %q", root[0].Path)
	}
}

// TestChildNodesForeignAntipodal: lock nodes A (created first) and B, made
// after the counter wrapped, and a foreign job-0000000003 made early in the
// directory's life, antipodal to them. SeqLess is cyclic on these three
// (job < A < B < job); a sort by it put B before A for the listings {B, job,
// A} and {job, B, A}. Every listing order must give A before B.
func TestChildNodesForeignAntipodal(t *testing.T) {
	const (
		a   = "_c_aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa-lock--2147483647"
		b   = "_c_bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb-lock--2147483640"
		job = "job-0000000003"
	)
	for _, listing := range [][]string{
		{b, job, a}, {job, b, a}, {a, b, job}, {a, job, b}, {b, a, job}, {job, a, b},
		{"config", b, job, a}, {job, "config", b, a},
	} {
		got := childNodes("/locks/fair", listing)
		var order []string
		for _, n := range got {
			order = append(order, n.Name)
		}
		want := []string{a, b, job}
		if len(listing) == 4 {
			want = append(want, "config")
		}
		if strings.Join(order, " ") != strings.Join(want, " ") {
			t.Errorf("listing %v: order %v, want %v", listing, order, want)
		}
		if got[0].Seq != -2147483647 || got[1].Seq != -2147483640 || got[2].Seq != 3 || got[0].Path != "/locks/fair/"+a {
			t.Errorf("listing %v: fields %+v", listing, got)
		}
	}
}

func TestNodeOfAndOwner(t *testing.T) {
	st := &zk.Stat{Czxid: 77, Version: 3, EphemeralOwner: -0x7000000000000001}
	n := nodeOf("/a/b-0000000009", []byte("d"), st)
	if n.Name != "b-0000000009" || n.Token != 77 || n.Version != 3 || !n.Sequential || n.Seq != 9 {
		t.Fatalf("%+v", n)
	}
	if n.Owner != "8fffffffffffffff" || n.Owner != formatSessionID(st.EphemeralOwner) {
		t.Fatalf("owner %q", n.Owner)
	}
	if ownerOf(0) != "" {
		t.Fatal("persistent node has an owner")
	}
}

func TestZKVersion(t *testing.T) {
	for v, want := range map[int64]int32{-1: -1, 0: 0, 5: 5, math.MaxInt32: math.MaxInt32, math.MaxInt32 + 1: -2, -1 << 40: -2} {
		if got := zkVersion(v); got != want {
			t.Errorf("zkVersion(%d) = %d, want %d", v, got, want)
		}
	}
}

func TestNewAndOpenValidate(t *testing.T) {
	if _, err := New(nil); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Fatalf("New(nil): %v", err)
	}
	if _, err := New([]string{""}); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Fatalf("New(empty addr): %v", err)
	}
	d, err := New([]string{"127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Name() != "zookeeper" {
		t.Fatal(d.Name())
	}
	if _, err := d.Open(context.Background(), 0); !errors.Is(err, coordkit.ErrInvalidArgument) {
		t.Fatalf("Open(ttl 0): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := d.Open(ctx, time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open(no server): %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Open(context.Background(), time.Second); !errors.Is(err, coordkit.ErrClosed) {
		t.Fatalf("Open after Close: %v", err)
	}
}

func TestLoggerParsesNegotiatedTimeout(t *testing.T) {
	var id, ms int64
	l := zkLogger{log: zapNop, onAuth: func(i, m int64) { id, ms = i, m }}
	l.Printf("authenticated: id=%d, timeout=%d", int64(72057611217436672), int32(4000))
	if id != 72057611217436672 || ms != 4000 {
		t.Fatalf("id %d timeout %d", id, ms)
	}
	l.Printf("connected to %s", "127.0.0.1:2181") // ignored
}

var zapNop = zap.NewNop()
