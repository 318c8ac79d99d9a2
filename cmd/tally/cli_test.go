package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tally-oss/tally/cmd/tally/cli"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/cli/*.golden from the CLI's output")

var (
	rfc3339   = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	generated = regexp.MustCompile(`cli-[0-9a-f-]{36}`)
	millis    = regexp.MustCompile(`\d+ ms`)
	eventID   = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}`)
)

// The CLI against a live `tally serve`, through a real process each call:
// table and JSON output compared with testdata/cli/*.golden (times and
// generated command ids masked), and the exit status.
func TestCLIAgainstALiveServer(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	p := startTally(t, append(serveArgs(t, dir, addr), "--insecure-no-auth")...)
	p.waitFor(t, "serving", serving(addr))

	steps := []struct {
		name string
		args []string
	}{
		{"receive", []string{"receive", "SKU-1", "S1", "100", "--command-id", "r1"}},
		{"sell", []string{"sell", "SKU-1", "S1", "3", "--command-id", "s1"}},
		{"sell-retry", []string{"sell", "SKU-1", "S1", "3", "--command-id", "s1"}},
		{"sell-json", []string{"sell", "--json", "SKU-1", "S1", "2", "--command-id", "s2"}},
		{"sell-too-many", []string{"sell", "SKU-1", "S1", "1000", "--command-id", "s3"}},
		{"return", []string{"return", "SKU-1", "S1", "1", "--command-id", "rt1", "--reason", "wrong size"}},
		{"transfer", []string{"transfer", "SKU-1", "S1", "S2", "10", "--command-id", "t1"}},
		{"reserve", []string{"reserve", "SKU-1", "S1", "2", "cart-1", "--ttl", "15m", "--command-id", "rv1"}},
		{"commit", []string{"commit", "SKU-1", "cart-1", "--command-id", "c1"}},
		{"reserve-again", []string{"reserve", "SKU-1", "S1", "1", "cart-2", "--command-id", "rv2"}},
		{"release", []string{"release", "SKU-1", "cart-2", "--command-id", "rl1"}},
		{"adjust", []string{"adjust", "SKU-1", "S1", "-1", "--reason-code", "damaged", "--command-id", "a1"}},
		{"adjust-bad-code", []string{"adjust", "SKU-1", "S1", "-1", "--reason-code", "stolen"}},
		{"policy-set", []string{"policy", "set", "SKU-1", "S1", "--reorder-point", "90", "--target", "120", "--command-id", "p1"}},
		{"stock-get", []string{"stock", "get", "SKU-1", "S1", "--min-version", "12"}},
		{"stock-get-json", []string{"stock", "get", "SKU-1", "S2", "--json", "--min-version", "12"}},
		{"stock-list-store", []string{"stock", "list", "--store", "S1", "--prefix", "SKU-"}},
		{"stock-list-sku", []string{"stock", "list", "--sku", "SKU-1"}},
		{"stock-history", []string{"stock", "history", "SKU-1", "S1", "--limit", "5"}},
		{"stock-as-of-before", []string{"stock", "as-of", "SKU-1", "S1", "2020-01-01T00:00:00Z"}},
		{"stock-get-unknown", []string{"stock", "get", "SKU-9", "S1"}},
		{"dlq-list", []string{"dlq", "list"}},
		{"wrong-arguments", []string{"sell", "SKU-1", "S1"}},
		{"status", []string{"status"}},
	}
	for _, s := range steps {
		out, errOut, code := runTally(t, append(s.args, "--addr", addr)...)
		got := fmt.Sprintf("$ tally %s\n%s--- stderr\n%s--- exit %d\n", strings.Join(s.args, " "), out, firstLines(errOut, 3), code)
		got = generated.ReplaceAllString(rfc3339.ReplaceAllString(got, "<TIME>"), "<GENERATED-ID>")
		got = eventID.ReplaceAllString(got, "<EVENT-ID>")
		got = millis.ReplaceAllString(got, "<N> ms")
		golden(t, s.name, got)
	}
}

// `tally watch` follows low stock live: the initial list, then the
// crossings as they happen.
func TestCLIWatchFollowsLowStockLive(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	p := startTally(t, append(serveArgs(t, dir, addr), "--insecure-no-auth")...)
	p.waitFor(t, "serving", serving(addr))
	for _, args := range [][]string{{"receive", "SKU-W", "S1", "5"}, {"receive", "SKU-V", "S1", "50"}} {
		if _, errOut, code := runTally(t, append(args, "--addr", addr)...); code != 0 {
			t.Fatalf("tally %v: %s", args, errOut)
		}
	}
	w := tallyCommand("watch", "--addr", addr, "--stores", "S1", "--prefix", "SKU-")
	stdout, err := w.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Process.Kill(); _ = w.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(what string, ok func(string) bool) string {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, open := <-lines:
				if !open {
					t.Fatalf("tally watch ended before %s", what)
				}
				if ok(l) {
					return l
				}
			case <-timeout:
				t.Fatalf("tally watch: no %s within 30s", what)
			}
		}
	}
	initial := next("initial SKU-W", func(l string) bool { return strings.Contains(l, "SKU-W") })
	if f := strings.Fields(initial); len(f) < 5 || f[0] != "initial" || f[1] != "low" || f[4] != "5" {
		t.Fatalf("initial line %q, want SKU-W low with 5 available", initial)
	}
	next("the live marker", func(l string) bool { return strings.Contains(l, "live from here") })
	if _, errOut, code := runTally(t, "sell", "SKU-V", "S1", "45", "--addr", addr); code != 0 {
		t.Fatal(errOut)
	}
	live := next("SKU-V's crossing", func(l string) bool { return strings.Contains(l, "SKU-V") })
	if f := strings.Fields(live); len(f) < 5 || f[0] == "initial" || f[1] != "low" || f[4] != "5" {
		t.Fatalf("live line %q, want SKU-V low with 5 available", live)
	}
}

// firstLines keeps usage text out of the golden files past its first lines.
func firstLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "")
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "cli", name+".golden")
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (write it with -update-golden)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (rewrite with -update-golden if meant):\n--- got\n%s--- want\n%s", name, path, got, want)
	}
}

// Every CLI command's --help runs, names an example and exits 0.
func TestEveryCLICommandHasHelpWithAnExample(t *testing.T) {
	for _, c := range cli.Commands {
		_, errOut, code := runTally(t, append(c.Path, "--help")...)
		if code != 0 || !strings.Contains(errOut, "example:\n  tally "+c.Path[0]) || !c.External && !strings.Contains(errOut, "-addr") {
			t.Errorf("tally %s --help: exit %d, %q; want 0, an example and the flags", c.Name(), code, errOut)
		}
	}
	if _, errOut, code := runTally(t, "stock", "bogus"); code != 2 || !strings.Contains(errOut, `unknown command "bogus"`) || !strings.Contains(errOut, "stock get") {
		t.Errorf("tally stock bogus: exit %d, %q; want 2 and the stock commands", code, errOut)
	}
}

// `tally completion bash`, sourced by a real bash, completes subcommands,
// a group's commands and a command's flags.
func TestBashCompletion(t *testing.T) {
	bin := t.TempDir()
	shim := fmt.Sprintf("#!/bin/sh\nTALLY_TEST_MAIN=1 exec %q \"$@\"\n", os.Args[0])
	if err := os.WriteFile(filepath.Join(bin, "tally"), []byte(shim), 0o755); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) string {
		t.Helper()
		script := fmt.Sprintf(`source <(tally completion bash)
COMP_WORDS=(tally %s); COMP_CWORD=%d; _tally_complete; echo "${COMPREPLY[*]}"`, quoteWords(words), len(words))
		cmd := exec.Command("bash", "-c", script)
		cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, c := range []struct {
		words []string
		want  string
	}{
		{[]string{"st"}, "status stock"},
		{[]string{"stock", ""}, "as-of get history list"},
		{[]string{"stock", "get", "--mi"}, "--min-version"},
		{[]string{"sell", "--com"}, "--command-id"},
		{[]string{"comp"}, "completion"},
	} {
		if got := complete(c.words...); got != c.want {
			t.Errorf("tally %s<TAB>: %q, want %q", strings.Join(c.words, " "), got, c.want)
		}
	}
	if out, _, code := runTally(t, "completion", "zsh"); code != 0 || !strings.Contains(out, "compdef _tally tally") {
		t.Errorf("tally completion zsh: exit %d, %q", code, out)
	}
	if _, _, code := runTally(t, "completion", "fish"); code != 1 {
		t.Errorf("tally completion fish: exit %d, want 1", code)
	}
}

func quoteWords(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = fmt.Sprintf("%q", w)
	}
	return strings.Join(q, " ")
}
