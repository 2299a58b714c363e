//go:build !linux

package integration

import (
	"os"
	"os/exec"
)

// Outside Linux the kit's children are plain child processes: they share
// the test binary's process group, so terminate and kill signal the child
// alone (not what it may have started itself), and nothing kills them if
// the test binary dies without running its cleanup (Linux's
// PR_SET_PDEATHSIG has no portable equivalent here): such a JVM keeps
// running, and its ports taken, until it is killed by hand. The child is
// reaped as soon as it exits, so stop does not signal it afterwards.

func startChild(cmd *exec.Cmd) error { return cmd.Start() }

// watch reaps the child; os.Process refuses to signal a reaped process.
func (p *process) watch() { p.err = p.cmd.Wait() }

func (p *process) terminate() {
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		p.cmd.Process.Kill()
	}
}
func (p *process) kill() { p.cmd.Process.Kill() }
func (p *process) reap() {}
