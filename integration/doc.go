// Package integration starts real ZooKeeper and etcd servers for tests, the
// way Curator's TestingServer and TestingCluster do, and injects real faults.
package integration
