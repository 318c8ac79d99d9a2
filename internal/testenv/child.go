package testenv

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv names the function a re-executed test binary runs as a child.
const childEnv = "TALLY_TEST_CHILD"

// RunChild is the first call of a TestMain whose tests start children
// (StartChild): in a child process it runs the named function and exits;
// in the test process it returns at once.
func RunChild(children map[string]func() error) {
	name := os.Getenv(childEnv)
	if name == "" {
		return
	}
	fn := children[name]
	if fn == nil {
		fmt.Fprintf(os.Stderr, "unknown test child %q\n", name)
		os.Exit(2)
	}
	if err := fn(); err != nil {
		fmt.Fprintf(os.Stderr, "test child %s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// ChildReady tells the parent that the child is where the test wants it.
func ChildReady() { fmt.Println("READY") }

// Child is a test binary re-executed as a real OS process.
type Child struct {
	cmd  *exec.Cmd
	done chan error
}

// StartChild re-executes the test binary to run the child function name
// (see RunChild) with env added, and returns once it called ChildReady. The
// child is SIGKILLed at cleanup if it still runs.
func StartChild(tb testing.TB, name string, env ...string) *Child {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+name), env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &Child{cmd: cmd, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.TrimSpace(sc.Text()) == "READY" {
				close(ready)
				signalled = true
			}
		}
		c.done <- cmd.Wait()
	}()
	tb.Cleanup(func() { c.Kill(tb) })
	select {
	case <-ready:
		return c
	case err := <-c.done:
		c.done <- err
		tb.Fatalf("test child %s exited before it was ready: %v", name, err)
	case <-time.After(2 * time.Minute):
		tb.Fatalf("test child %s not ready after 2 minutes", name)
	}
	return nil
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Signal sends sig to the child (SIGSTOP, SIGCONT, …).
func (c *Child) Signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("signal %v to child %d: %v", sig, c.Pid(), err)
	}
}

// Kill SIGKILLs the child and waits for it to be gone.
func (c *Child) Kill(tb testing.TB) {
	tb.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	err := <-c.done
	c.done <- err
}
