package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tally-oss/tally/cmd/tally/cli"
	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/pg"
	"github.com/tally-oss/tally/internal/testenv"
)

// These tests run `tally` as the user does, as its own process with its
// own signal handling: the test binary re-executes itself, and with
// TALLY_TEST_MAIN=1 it is tally.
func TestMain(m *testing.M) {
	if os.Getenv("TALLY_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// proc is a tally process a test started.
type proc struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

// tallyCommand is `tally args...` run as the test binary, with no TALLY_
// variable or DATABASE_URL from the test's environment.
func tallyCommand(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TALLY_") && !strings.HasPrefix(kv, "DATABASE_URL=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "TALLY_TEST_MAIN=1")
	return cmd
}

// startTally starts `tally args...`, with no TALLY_ variable or
// DATABASE_URL from the test's environment. It is killed when the test
// ends, if it is still running, and dies with the test binary.
func startTally(t testing.TB, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: tallyCommand(args...), done: make(chan struct{})}
	p.cmd.Stderr = &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

// kill ends p and returns its stderr.
func (p *proc) kill() string {
	_ = p.cmd.Process.Kill()
	<-p.done
	return p.stderr.String()
}

// exited waits for p to end, failing the test if it is still running
// after d: what these tests check is that it ends rather than hangs.
func (p *proc) exited(t testing.TB, d time.Duration) (code int, stderr string) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("tally %s still running after %s; its stderr:\n%s", p.cmd.Args[1], d, p.kill())
	}
	var exit *exec.ExitError
	if p.err != nil && !errors.As(p.err, &exit) {
		t.Fatal(p.err)
	}
	return p.cmd.ProcessState.ExitCode(), p.stderr.String()
}

// waitFor polls ok while p runs, for up to 2 minutes.
func (p *proc) waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for !ok() {
		select {
		case <-p.done:
			t.Fatalf("tally exited (%v) before %s; its stderr:\n%s", p.err, what, p.stderr.String())
		case <-deadline:
			t.Fatalf("not %s after 2 minutes; tally's stderr:\n%s", what, p.kill())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func exists(path string) func() bool {
	return func() bool { _, err := os.Stat(path); return err == nil }
}

// serving says whether a tally serves /metrics on addr, which it does
// once it has started every part.
func serving(addr string) func() bool {
	client := &http.Client{Timeout: 2 * time.Second}
	return func() bool {
		resp, err := client.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}

// serveArgs are `tally serve` on dir and addr, its embedded Kafka on a
// free loopback port.
func serveArgs(t testing.TB, dir, addr string) []string {
	t.Helper()
	return []string{"serve", "--data-dir", dir, "--addr", addr, "--kafka-listen", freeAddr(t), "--log-level", "warn"}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestSecondServeOnADataDirectoryInUseExits(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	first := startTally(t, serveArgs(t, dir, addr)...)
	first.waitFor(t, "serving", serving(addr))

	code, stderr := startTally(t, serveArgs(t, dir, freeAddr(t))...).exited(t, 30*time.Second)
	t.Logf("second tally serve: exit %d, stderr:\n%s", code, stderr)
	if code != 1 {
		t.Errorf("second tally serve exit code %d, want 1", code)
	}
	for _, want := range []string{filepath.Join(dir, "LOCK"), "pid " + strconv.Itoa(first.cmd.Process.Pid), addr} {
		if !strings.Contains(stderr, want) {
			t.Errorf("second tally serve's error does not name %q", want)
		}
	}

	// The first one is unharmed, and stops as usual.
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, stderr := first.exited(t, time.Minute); code != 0 {
		t.Fatalf("first tally serve after SIGTERM: exit %d, stderr:\n%s", code, stderr)
	}
}

func TestServeEndsWithPostgresErrorWhenItCannotStart(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "pg", "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"PG_VERSION": "9\n", "postgresql.conf": ""} {
		if err := os.WriteFile(filepath.Join(data, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	code, stderr := startTally(t, serveArgs(t, dir, freeAddr(t))...).exited(t, time.Minute)
	t.Logf("tally serve: exit %d, stderr:\n%s", code, stderr)
	if code != 1 || !strings.Contains(stderr, "database files are incompatible with server") {
		t.Fatalf("tally serve on a data directory of PostgreSQL 9: exit %d; want 1 and PostgreSQL's own error", code)
	}
}

func TestServeStopsOnSignalDuringStartup(t *testing.T) {
	dir := t.TempDir()
	// A Postgres that starts and never accepts a connection (a standby
	// with nowhere to get WAL from, hot_standby off) keeps `tally serve`
	// starting up for as long as it runs.
	c, err := pg.StartCluster(t.Context(), pg.ClusterConfig{Dir: filepath.Join(dir, "pg")})
	if err != nil {
		t.Fatal(err)
	}
	c.Stop()
	testenv.NeverReady(t, filepath.Join(dir, "pg"))

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startTally(t, serveArgs(t, dir, freeAddr(t))...)
			pidFile := filepath.Join(dir, "pg", "data", "postmaster.pid")
			p.waitFor(t, "postgres running", exists(pidFile))
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			code, stderr := p.exited(t, 30*time.Second)
			t.Logf("tally serve: exit %d, stderr:\n%s", code, stderr)
			if !strings.Contains(stderr, context.Canceled.Error()) {
				t.Errorf("tally serve's error does not say it was cancelled")
			}
			// Stopped in order, not left to its parent-death signal.
			if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("postmaster.pid after tally serve exited: %v; want Postgres shut down", err)
			}
		})
	}
}

// runTally runs `tally args...` to its end and returns its stdout, stderr
// and exit code.
func runTally(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := tallyCommand(args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// What a new user types first: help exits 0 and lists the subcommands,
// every subcommand's -h exits 0 with its flags, an unknown subcommand is
// named, and `tally version` says what was built.
func TestHelpVersionAndUnknownSubcommands(t *testing.T) {
	for _, h := range []string{"-h", "--help", "help"} {
		out, _, code := runTally(t, h)
		if code != 0 || !strings.Contains(out, "subcommands:") || !strings.Contains(out, "version") {
			t.Fatalf("tally %s: exit %d, stdout %q; want 0 and the subcommands", h, code, out)
		}
	}
	flagLine := regexp.MustCompile(`^\s+-(\S+)`)
	for _, s := range referenced() {
		_, errOut, code := runTally(t, append(strings.Fields(s.name), "-h")...)
		if code != 0 || !strings.Contains(errOut, "-") || !strings.Contains(errOut, "example:\n  ") {
			t.Errorf("tally %s -h: exit %d, stderr %q; want 0, its flags and an example", s.name, code, errOut)
		}
		// Every flag has the TALLY_ fallback the usage line promises.
		var name, text string
		check := func() {
			if name != "" && !strings.Contains(text, "(env "+config.EnvName(name)+")") {
				t.Errorf("tally %s: --%s has no environment fallback: %q", s.name, name, text)
			}
		}
		for _, line := range strings.Split(errOut, "\n") {
			if m := flagLine.FindStringSubmatch(line); m != nil {
				check()
				name, text = m[1], ""
				continue
			}
			text += line
		}
		check()
	}
	_, errOut, code := runTally(t, "bogus")
	if code != 2 || !strings.Contains(errOut, `unknown subcommand "bogus"`) {
		t.Fatalf("tally bogus: exit %d, stderr %q; want 2 naming the subcommand", code, errOut)
	}
	out, _, code := runTally(t, "version")
	if code != 0 || !strings.HasPrefix(out, "tally ") || !strings.Contains(out, "go1.") {
		t.Fatalf("tally version: exit %d, %q", code, out)
	}
}

// --log-format json makes every log line one JSON object (for log
// collectors); a format that is neither is refused.
func TestLogFormatJSON(t *testing.T) {
	cmd := tallyCommand("kafka", "--log-format", "json", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(t.TempDir(), "kafka"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case line := <-lines:
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec["msg"] == nil || rec["level"] == nil {
			t.Fatalf("first log line %q is not a JSON log record: %v", line, err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("tally kafka logged nothing in 60 s")
	}
	_, errOut, code := runTally(t, "kafka", "--log-format", "yaml")
	if code == 0 || !strings.Contains(errOut, "--log-format must be text or json") {
		t.Fatalf("--log-format yaml: exit %d, %q", code, errOut)
	}
}

var updateReference = flag.Bool("update-reference", false, "rewrite docs/configuration.md from the flags")

// docs/configuration.md is every subcommand's flags as `tally <sub> -h`
// prints them (each with its TALLY_ variable and default). It is generated:
// when a flag changes, this fails until the file is rewritten with
// `go test ./cmd/tally -run TestConfigurationReferenceMatchesTheFlags -update-reference`.
// referenced are the subcommands the help test and the configuration
// reference cover: every one, with the commands under token and under the
// CLI's groups (stock get, policy set, ...).
func referenced() []subcommand {
	all := append(slices.Clone(subcommands), subcommand{name: "token issue", summary: "mint a bearer token signed with the server's HS256 key"})
	for _, c := range cli.Commands {
		if len(c.Path) > 1 {
			all = append(all, subcommand{name: c.Name(), summary: c.Summary})
		}
	}
	return all
}

func TestConfigurationReferenceMatchesTheFlags(t *testing.T) {
	var b strings.Builder
	b.WriteString("# Configuration reference\n\n" +
		"Generated from the flags by `go test ./cmd/tally -run TestConfigurationReferenceMatchesTheFlags -update-reference`;\n" +
		"a test fails when it drifts from them. Every flag can also be given as the environment variable\n" +
		"it names (`TALLY_` and the flag's name in capitals, `-` as `_`); a flag on the command line wins.\n" +
		"Defaults are as shipped (no `TALLY_` or `DATABASE_URL` variable set).\n")
	for _, s := range referenced() {
		out, err := tallyCommand(append(strings.Fields(s.name), "-h")...).CombinedOutput()
		if err != nil {
			t.Fatalf("tally %s -h: %v\n%s", s.name, err, out)
		}
		fmt.Fprintf(&b, "\n## tally %s\n\n%s.\n\n```\n%s```\n", s.name, s.summary, out)
	}
	const path = "../../docs/configuration.md"
	if *updateReference {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(have) != b.String() {
		t.Fatalf("docs/configuration.md does not match the flags: rewrite it with `go test ./cmd/tally -run TestConfigurationReferenceMatchesTheFlags -update-reference` and commit it")
	}
}
