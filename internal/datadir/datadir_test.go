package datadir_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tally-oss/tally/internal/datadir"
)

// With TALLY_TEST_HOLD_LOCK=dir the test binary is a process that locks
// dir, says so on stdout, and exits without releasing when stdin closes.
func TestMain(m *testing.M) {
	if dir := os.Getenv("TALLY_TEST_HOLD_LOCK"); dir != "" {
		if _, err := datadir.Acquire(dir, "127.0.0.1:7000"); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("locked\n")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSecondLockOnADirectoryFailsNamingTheHolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := datadir.Acquire(dir, "127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if want := filepath.Join(dir, datadir.LockFile); l.Path() != want {
		t.Errorf("lock file %s, want %s", l.Path(), want)
	}

	_, err = datadir.Acquire(dir, "127.0.0.1:8081")
	var held *datadir.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second Acquire: %v, want a *HeldError", err)
	}
	if held.Path != l.Path() || held.PID != os.Getpid() || held.Addr != "127.0.0.1:8080" {
		t.Errorf("HeldError %+v, want path %s, pid %d, addr 127.0.0.1:8080", held, l.Path(), os.Getpid())
	}
	for _, want := range []string{l.Path(), "pid " + strconv.Itoa(os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func TestReleasedLockCanBeTakenAgain(t *testing.T) {
	dir := t.TempDir()
	l, err := datadir.Acquire(dir, "first")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l, err = datadir.Acquire(dir, "second")
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	defer l.Release()
	b, err := os.ReadFile(l.Path())
	if err != nil {
		t.Fatal(err)
	}
	if want := "pid=" + strconv.Itoa(os.Getpid()) + "\naddr=second\n"; string(b) != want {
		t.Errorf("lock file holds %q, want %q", b, want)
	}
}

// A crashed holder leaves its lines in the file but no lock.
func TestStaleLockFileIsTakenOver(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, datadir.LockFile), []byte("pid=999999999\naddr=gone:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := datadir.Acquire(dir, "new:2")
	if err != nil {
		t.Fatalf("Acquire over a stale lock file: %v", err)
	}
	defer l.Release()
	b, _ := os.ReadFile(l.Path())
	if strings.Contains(string(b), "999999999") || !strings.Contains(string(b), "addr=new:2") {
		t.Errorf("lock file holds %q, want only the new holder", b)
	}
}

func TestLockHeldByAnotherProcessUntilItExits(t *testing.T) {
	dir := t.TempDir()
	holder := exec.Command(os.Args[0], "-test.run=^$")
	holder.Env = append(os.Environ(), "TALLY_TEST_HOLD_LOCK="+dir)
	holder.Stderr = os.Stderr
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Process.Kill()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "locked\n" {
		t.Fatalf("holder said %q, %v; want locked", line, err)
	}

	_, err = datadir.Acquire(dir, "127.0.0.1:7001")
	var held *datadir.HeldError
	if !errors.As(err, &held) || held.PID != holder.Process.Pid || held.Addr != "127.0.0.1:7000" {
		t.Fatalf("Acquire while pid %d holds the lock: %v, want a *HeldError naming it", holder.Process.Pid, err)
	}

	// It exits without Release: the kernel lets go.
	stdin.Close()
	if err := holder.Wait(); err != nil {
		t.Fatalf("holder: %v", err)
	}
	l, err := datadir.Acquire(dir, "127.0.0.1:7001")
	if err != nil {
		t.Fatalf("Acquire after the holder exited: %v", err)
	}
	l.Release()
}
