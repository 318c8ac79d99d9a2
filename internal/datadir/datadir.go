// Package datadir keeps a data directory to one process at a time, with an
// exclusive lock on a file in it that the kernel releases when the process
// ends, however it ends. It knows nothing of what the directory holds.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// LockFile is the name of the lock file in a data directory.
const LockFile = "LOCK"

// Lock is this process's hold on a data directory.
type Lock struct {
	f *os.File
}

// HeldError is what Acquire returns when another process holds the data
// directory.
type HeldError struct {
	// Path is the lock file.
	Path string
	// PID and Addr are what the holder wrote into the lock file: its
	// process id and the address it serves on. PID is 0 when the holder
	// had not written them yet.
	PID  int
	Addr string
}

func (e *HeldError) Error() string {
	holder := "another process"
	if e.PID != 0 {
		holder = "pid " + strconv.Itoa(e.PID)
	}
	if e.Addr != "" {
		holder += " (serving " + e.Addr + ")"
	}
	return fmt.Sprintf("data directory %s is in use: %s is locked by %s", filepath.Dir(e.Path), e.Path, holder)
}

// Acquire locks dir (creating it if missing) for this process and writes
// the process id and addr into the lock file, for whoever finds it locked.
// It does not wait: if another process holds the lock, it returns a
// *HeldError naming it. The lock lasts until Release or the end of the
// process.
//
// The lock is flock(2) on dir/LOCK, which belongs to the open file: two
// Acquires of one directory conflict also within one process, and
// children this process starts do not inherit it (Go opens files
// close-on-exec).
func Acquire(dir, addr string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	path, err := filepath.Abs(filepath.Join(dir, LockFile))
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := flock(f, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, held(f)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// A previous holder's lines may still be there: the kernel released
	// its lock when it died, but nothing cleared the file.
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write lock file: %w", err)
	}
	if _, err := fmt.Fprintf(f, "pid=%d\naddr=%s\n", os.Getpid(), addr); err != nil {
		f.Close()
		return nil, fmt.Errorf("write lock file: %w", err)
	}
	return &Lock{f: f}, nil
}

// held reads who holds f's lock. The holder writes its lines just after
// it locks, so an empty file gets a few more looks before giving up on
// them.
func held(f *os.File) *HeldError {
	e := &HeldError{Path: f.Name()}
	for range 10 {
		b, _ := os.ReadFile(f.Name())
		for line := range strings.Lines(string(b)) {
			k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
			switch k {
			case "pid":
				e.PID, _ = strconv.Atoi(v)
			case "addr":
				e.Addr = v
			}
		}
		if e.PID != 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return e
}

// Path is the lock file.
func (l *Lock) Path() string { return l.f.Name() }

// Release empties the lock file and unlocks it. The file stays: removing
// it would let a process that opened it before the removal lock the
// orphaned file while a newcomer locks a new one.
func (l *Lock) Release() error {
	return errors.Join(l.f.Truncate(0), flock(l.f, syscall.LOCK_UN), l.f.Close())
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
