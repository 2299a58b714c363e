#!/usr/bin/env bash
# Installs what the tests need, where it can, and runs every test of coordkit:
# vet, the unit tests (-race), the demo's test on both backends, a short fuzz
# of the path validator, and the real-server tests of ./integration
# (ZooKeeper standalone and ensemble from Debian's package, etcd embedded,
# Curator interop, and a quick run of the lockbench harness) with -race.
#
#   scripts/test.sh            everything
#   SKIP_INSTALL=1 scripts/test.sh   do not try to install ZooKeeper
#
# Real-server tests fail (not skip) when CI is set and a server cannot start.
set -euo pipefail
cd "$(dirname "$0")/.."
# Test each module as its users build it: go.work only serves
# `go run ./examples/inventory` from the root.
export GOWORK=off

say() { printf '\n== %s\n' "$*"; }

# Debian packages the real-server tests use: ZooKeeper 3.8 (with a Java
# runtime), Apache Curator 5.4 for the interop tests, and a JDK for javac (the
# kit compiles a small Curator driver).
missing_pkgs() {
  local jars=${COORDKIT_ZOOKEEPER_JARS_DIR:-/usr/share/java}
  if [ -z "${COORDKIT_ZOOKEEPER_ADDRS:-}" ] && { [ ! -f "$jars/zookeeper.jar" ] || ! command -v java >/dev/null; }; then
    echo zookeeper
  fi
  [ -f /usr/share/java/curator-recipes.jar ] || echo libcurator-recipes-java
  command -v javac >/dev/null || echo default-jdk-headless
}

pkgs=$(missing_pkgs | tr '\n' ' ')
if [ -z "${SKIP_INSTALL:-}" ] && [ -n "${pkgs// /}" ]; then
  say "installing Debian packages: $pkgs"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo apt-get update -qq
    # shellcheck disable=SC2086
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
  else
    echo "cannot install $pkgs here: install Java 17 (a JDK), ZooKeeper 3.8 and Apache Curator 5.4" >&2
    echo "(Debian: apt-get install zookeeper libcurator-recipes-java default-jdk-headless), or point" >&2
    echo "COORDKIT_ZOOKEEPER_ADDRS at a server; those tests skip (or fail when CI is set)." >&2
  fi
fi

command -v go >/dev/null || { echo "go is not installed: https://go.dev/doc/install" >&2; exit 1; }
go version

say "go vet"
go vet ./...
(cd integration && go vet ./...)
(cd examples && go vet ./...)

say "unit tests (-race): backend seam, memory driver + conformance suite, session, recipes"
go test -race -count=1 ./...

say "the demo (examples/inventory) on embedded etcd and on ZooKeeper"
(cd examples && go test -race -count=1 ./...)

# A count, not a duration: with -fuzztime=<duration> Go's fuzzing coordinator
# can fail a clean run with "context deadline exceeded" when a loaded machine
# starves its workers at the deadline (golang/go#75804); a count has no
# deadline to race. 200,000 inputs take about 4s here.
say "fuzz the path validator (200,000 inputs)"
go test -run='^$' -fuzz=FuzzValidatePath -fuzztime=200000x ./backend/

say "real-server tests (-race): ZooKeeper standalone + ensemble, etcd embedded single + 3 members, Curator interop"
(cd integration && go test -race -count=1 -timeout=25m -v ./... 2>&1 | tee /tmp/coordkit-integration.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|^\s+\S+\.go:[0-9]+:' | grep -v '^=== RUN' ; exit "${PIPESTATUS[0]}")
