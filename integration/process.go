package integration

import (
	"fmt"
	"os"
	"os/exec"
	"time"
)

// process is a child the kit started (a ZooKeeper JVM). On Linux it runs
// in its own process group and a watcher notices its exit without reaping
// it, so its pid (and process-group id) stays reserved until stop has
// signalled the whole group and reaped it: the kit can never signal a
// process it did not start. The child also gets SIGKILL if the test
// binary dies without cleaning up.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the child has exited
	log    *os.File
	reaped bool
	err    error // from cmd.Wait
}

// startProcess starts cmd with stdout and stderr going to log (which the
// process owns and closes).
func startProcess(cmd *exec.Cmd, log *os.File) (*process, error) {
	cmd.Stdout = log
	cmd.Stderr = log
	if err := startChild(cmd); err != nil {
		log.Close()
		return nil, err
	}
	p := &process{cmd: cmd, exited: make(chan struct{}), log: log}
	go func() {
		defer close(p.exited)
		p.watch()
	}()
	return p, nil
}

// running reports whether the child has not exited.
func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop asks the child to terminate (SIGTERM to its group), waits up to
// grace, then kills the group with SIGKILL (grace 0 means SIGKILL at
// once), waits for the exit and reaps the child. It returns an error only
// if the child could not be reaped in time.
func (p *process) stop(grace time.Duration) error {
	if p.reaped {
		return nil
	}
	if grace > 0 && p.running() {
		p.terminate()
		t := time.NewTimer(grace)
		select {
		case <-p.exited:
		case <-t.C:
		}
		t.Stop()
	}
	// Kill the group even after a clean exit: nothing the child may have
	// started in its group survives it.
	p.kill()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		return fmt.Errorf("process %d did not exit 30s after SIGKILL", p.cmd.Process.Pid)
	}
	p.reap()
	p.reaped = true
	p.log.Close()
	return nil
}
