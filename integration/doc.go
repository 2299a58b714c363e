// Package integration starts real ZooKeeper and etcd servers for tests, the
// way Curator's TestingServer and TestingCluster do, and injects real faults.
//
// Servers:
//   - StartZooKeeper runs ZooKeeper from the local installation (Debian's
//     zookeeper package and Java 17) as child processes: a standalone
//     server, or an ensemble with WithMembers(3). Members can be stopped,
//     killed and started again on the same ports and data directory. On
//     Linux each runs in its own process group, killed with it, and dies
//     with the test binary; elsewhere only the JVM itself is signalled,
//     and a test binary that dies leaves it running.
//   - StartEtcd embeds etcd in the test process: one member, or three with
//     WithMembers(3), which can be stopped and restarted.
//   - COORDKIT_ZOOKEEPER_ADDRS and COORDKIT_ETCD_ENDPOINTS point the tests
//     at existing servers instead; COORDKIT_USE_DOCKER=1 runs standalone
//     servers in containers through testcontainers-go (an ensemble still
//     needs the local installation).
//   - When no server can be provided the test is skipped, or fails in
//     strict mode: when COORDKIT_REQUIRE_SERVERS=1 or CI is set, or a
//     variable of a common CI system (TF_BUILD, JENKINS_URL,
//     TEAMCITY_VERSION, CODEBUILD_BUILD_ID, BUILDKITE, GITHUB_ACTIONS,
//     GITLAB_CI); see InCI.
//
// Servers take seconds to start: share one across a package's tests with
// ShareZooKeeper / ShareEtcd and close it from TestMain with
// VerifyTestMain, which also checks for leaked goroutines.
//
// Faults:
//   - Proxy sits between one client and a server: Blackhole, Pause and
//     Resume, DropConnections.
//   - ExpireZooKeeperSession closes a ZooKeeper session on the server, as
//     Curator's KillSession did; a Proxy made with WithZooKeeperProtocol
//     records the session passwords it needs.
//
// Apache Curator (interop and comparison):
//   - StartCurator runs a small Java driver, compiled with javac on first
//     use, that takes and releases Curator 5.4 InterProcessMutex locks on
//     command and benchmarks them. It needs Debian's libcurator-recipes-java
//     and a JDK (default-jdk-headless); scripts/test.sh installs both.
//
// Every function taking a testing.TB registers its cleanup with
// tb.Cleanup; LaunchZooKeeper, LaunchEtcd and StartProxy are the building
// blocks for code without one.
package integration
