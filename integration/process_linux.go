package integration

import (
	"errors"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

func startChild(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Pdeathsig follows the thread that forks: keep the goroutine on one
	// thread for the fork.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.Start()
}

// watch returns when the child has exited, leaving it unreaped.
func (p *process) watch() {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, p.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// The child is not reaped before stop has signalled its group, so its
// pid cannot have been reused.
func (p *process) terminate() { _ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM) }
func (p *process) kill()      { _ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) }
func (p *process) reap()      { p.err = p.cmd.Wait() }
