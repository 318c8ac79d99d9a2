// Package pg is Tally's PostgreSQL plumbing: starting a throwaway or
// embedded cluster from the machine's PostgreSQL binaries, opening pools,
// and applying embedded SQL migrations. It knows no table of its own.
package pg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a PostgreSQL server this process started and stops.
type Cluster struct {
	dir   string
	port  int
	bin   string
	runAs *user.User
	cmd   *exec.Cmd
	log   *slog.Logger
	// exited is closed when the server process has ended, and exitErr
	// then says how. Closed rather than sent on, so that every waiter
	// (waitReady, then Stop, any number of times) sees it.
	exited  chan struct{}
	exitErr error
}

// ClusterConfig says where and how to start a cluster.
type ClusterConfig struct {
	// Dir holds the data directory (Dir/data) and the socket. Created if
	// missing; an existing data directory is reused.
	Dir string
	// Port to listen on, on 127.0.0.1; 0 picks a free one.
	Port int
	// Durable keeps fsync on. Tests turn it off for speed; `tally serve`
	// keeps it on, because the read model is served from it.
	Durable bool
	// WaitForPrevious is how long to wait for a server that still runs on
	// the data directory (postmaster.pid names a live process) to exit
	// before starting: a caller that holds the data directory's lock knows
	// such a server is the orphan of a predecessor that died, shutting down
	// (its Pdeathsig), and a supervisor restarts at once. 0 starts at once,
	// and PostgreSQL refuses while the other one runs.
	WaitForPrevious time.Duration
	// Settings are more server settings (postgresql.conf names, say
	// "ssl": "on"), passed as -c name=value in name order after Tally's
	// own, which they therefore override. Files they name (ssl_cert_file,
	// hba_file, ...) are read by the server's user: as root, the postgres
	// user, which owns what is under Dir when the cluster starts, so keep
	// such files there (PostgreSQL refuses a key file others can read:
	// 0600). StartCluster's own connections (the readiness check,
	// CreateDatabase) are plaintext TCP to database postgres as user
	// postgres (URL): an hba_file must let those in.
	Settings map[string]string
	Logger   *slog.Logger
}

// BinDir finds the PostgreSQL server binaries: pg_config --bindir when it
// has initdb, else the newest /usr/lib/postgresql/*/bin.
func BinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool { return pgMajor(matches[i]) > pgMajor(matches[j]) })
	if len(matches) == 0 {
		return "", errors.New("no PostgreSQL server binaries found (install Debian's postgresql package, or set DATABASE_URL)")
	}
	return filepath.Dir(matches[0]), nil
}

func pgMajor(initdb string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return n
}

// StartCluster initialises (if needed) and starts a cluster, and waits
// until it accepts connections. As root, the server runs as the postgres
// user, which owns Dir.
//
// When the server exits during start-up (another one runs on Dir, say), or
// does not take connections within 30 s, the error quotes the end of its
// log. When ctx ends first, StartCluster stops what it started and returns
// ctx's error.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, port: cfg.Port, bin: bin, log: cfg.Logger, exited: make(chan struct{})}
	if os.Geteuid() == 0 {
		if c.runAs, err = user.Lookup("postgres"); err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user to run the server: %w", err)
		}
	}
	if c.port == 0 {
		if c.port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	// The previous server first: while it shuts down it removes files
	// (postmaster.pid, sockets) under dir that chown walks.
	if cfg.WaitForPrevious > 0 {
		if err := c.waitForPrevious(ctx, data, cfg.WaitForPrevious); err != nil {
			return nil, err
		}
	}
	if err := c.chown(dir); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		// initdb into a side directory renamed into place once complete:
		// an interrupted initdb (a cancel, a kill) never leaves half a data
		// directory that the next start would take for a cluster.
		tmp := data + ".initdb"
		if err := os.RemoveAll(tmp); err != nil {
			return nil, err
		}
		out, err := c.command(ctx, "initdb", "-D", tmp, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-instructions").CombinedOutput()
		if ctx.Err() != nil {
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("initdb: %w", ctx.Err())
		}
		if err != nil {
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("initdb: %w: %s", err, out)
		}
		if err := os.RemoveAll(data); err != nil { // an empty or partial one
			return nil, err
		}
		if err := os.Rename(tmp, data); err != nil {
			return nil, fmt.Errorf("initdb: %w", err)
		}
	}
	args := []string{"-D", data, "-p", strconv.Itoa(c.port), "-h", "127.0.0.1", "-k", dir,
		"-c", "max_connections=200", "-c", "shared_buffers=256MB", "-c", "max_wal_size=4GB",
		"-c", "logging_collector=off", "-c", "log_min_messages=warning"}
	if !cfg.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	names := make([]string, 0, len(cfg.Settings))
	for name := range cfg.Settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		args = append(args, "-c", name+"="+cfg.Settings[name])
	}
	c.cmd = c.command(context.Background(), "postgres", args...)
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	// Where this start's lines begin: the file keeps every start's.
	logStart, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		logf.Close()
		return nil, err
	}
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// Own process group (a Ctrl-C on the terminal reaches Tally, which then
	// stops the server in order), and a fast shutdown if Tally dies without
	// stopping it, so no orphaned server holds the data directory.
	c.cmd.SysProcAttr.Setpgid = true
	c.cmd.SysProcAttr.Pdeathsig = syscall.SIGINT
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	go func() {
		c.exitErr = c.cmd.Wait()
		logf.Close()
		close(c.exited)
	}()
	if err := c.waitReady(ctx); err != nil {
		c.Stop()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("postgres did not start: %w", err)
		}
		// The reason is in the server's own words, in its log.
		return nil, fmt.Errorf("postgres did not start: %w; %s ends:\n%s", err, logPath, logTail(logPath, logStart))
	}
	c.log.Info("postgres started", "dir", dir, "port", c.port, "bin", bin)
	return c, nil
}

// waitForPrevious waits up to d for the server postmaster.pid names, if it
// still runs, to exit; then the start goes ahead either way and PostgreSQL
// decides.
func (c *Cluster) waitForPrevious(ctx context.Context, data string, d time.Duration) error {
	b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
	if err != nil {
		return nil
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return nil
	}
	c.log.Warn("a previous postgres still runs on the data directory; waiting for it to exit", "pid", pid, "wait", d)
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for syscall.Kill(pid, 0) == nil {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the previous postgres (pid %d) to exit: %w", pid, ctx.Err())
		case <-deadline.C:
			return nil
		case <-tick.C:
		}
	}
	return nil
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	// When ctx ends, ask first: an interrupted initdb removes the data
	// directory it made, where a killed one leaves half of one behind,
	// which the next start would take for a cluster.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if c.runAs != nil {
		uid, _ := strconv.Atoi(c.runAs.Uid)
		gid, _ := strconv.Atoi(c.runAs.Gid)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		cmd.Env = append(os.Environ(), "HOME="+c.runAs.HomeDir)
		cmd.Dir = c.dir
	}
	return cmd
}

// chown gives dir to the server's user and makes its parents traversable.
func (c *Cluster) chown(dir string) error {
	if c.runAs == nil {
		return nil
	}
	uid, _ := strconv.Atoi(c.runAs.Uid)
	gid, _ := strconv.Atoi(c.runAs.Gid)
	if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Lchown(p, uid, gid)
		}
		// A file that went away between the listing and here (a server
		// still shutting down removes its pid file and sockets) needs no
		// owner.
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}); err != nil {
		return err
	}
	for p := filepath.Dir(dir); p != "/" && p != "."; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			// The server runs as postgres and must reach its directory.
			if err := os.Chmod(p, st.Mode().Perm()|0o011); err != nil {
				return err
			}
			c.log.Warn("made a parent directory traversable (o+x) so the postgres user can reach the data directory", "dir", p)
		}
	}
	return nil
}

// waitReady waits until the server accepts connections, and gives up when
// it exits, when ctx ends, or after 30 s.
func (c *Cluster) waitReady(ctx context.Context) error {
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case <-c.exited:
			if c.exitErr == nil {
				return errors.New("postgres exited")
			}
			return fmt.Errorf("postgres exited: %w", c.exitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			return errors.New("postgres not accepting connections after 30s")
		case <-poll.C:
		}
		// Bounded, so that a port that takes the connection and never
		// answers does not hold up the checks above.
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, c.URL("postgres"))
		if err == nil {
			conn.Close(cctx)
			cancel()
			return nil
		}
		cancel()
	}
}

// logTail returns the last lines of the log file from offset from on.
func logTail(path string, from int64) string {
	const maxLines, maxBytes = 20, 4096
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read it: %v)", err)
	}
	defer f.Close()
	cut := false
	if st, err := f.Stat(); err == nil && st.Size()-from > maxBytes {
		from, cut = st.Size()-maxBytes, true
	}
	b, err := io.ReadAll(io.NewSectionReader(f, from, maxBytes))
	if err != nil {
		return fmt.Sprintf("(cannot read it: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if cut {
		lines = lines[1:] // begins mid-line
	}
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n")
}

// URL is a connection string for database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// CreateDatabase creates db if it does not exist and returns its URL.
func (c *Cluster) CreateDatabase(ctx context.Context, db string) (string, error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
			return "", err
		}
	}
	return c.URL(db), nil
}

// Stop shuts the server down (fast mode: open transactions roll back, the
// committed ones are on disk) and waits for it. A server that has exited
// already is left alone; Stop may be called any number of times.
func (c *Cluster) Stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		c.log.Warn("postgres did not stop in 20s; killing it", "dir", c.dir)
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
