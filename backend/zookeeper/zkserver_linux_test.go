package zookeeper

import "syscall"

// childProcAttr makes a server the tests start die with the test binary.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
