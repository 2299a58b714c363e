//go:build !linux

package integration

import (
	"os"
	"os/exec"
)

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
