//go:build !linux

package zookeeper

import "syscall"

// childProcAttr: only Linux can make a child die with its parent; the
// tests' cleanup kills the server.
func childProcAttr() *syscall.SysProcAttr { return nil }
