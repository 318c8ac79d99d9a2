// Package pg is Tally's PostgreSQL plumbing: starting a throwaway or
// embedded cluster from the machine's PostgreSQL binaries, opening pools,
// and applying embedded SQL migrations. It knows no table of its own.
package pg

import (
	"context"
	"errors"
	"fmt"
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
	dir    string
	port   int
	bin    string
	runAs  *user.User
	cmd    *exec.Cmd
	exited chan error
	log    *slog.Logger
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
	Logger  *slog.Logger
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
	c := &Cluster{dir: dir, port: cfg.Port, bin: bin, log: cfg.Logger, exited: make(chan error, 1)}
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
	if err := c.chown(dir); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		out, err := c.command(ctx, "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-instructions").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("initdb: %v: %s", err, out)
		}
	}
	args := []string{"-D", data, "-p", strconv.Itoa(c.port), "-h", "127.0.0.1", "-k", dir,
		"-c", "max_connections=200", "-c", "shared_buffers=256MB", "-c", "max_wal_size=4GB",
		"-c", "logging_collector=off", "-c", "log_min_messages=warning"}
	if !cfg.Durable {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	c.cmd = c.command(context.Background(), "postgres", args...)
	logf, err := os.OpenFile(filepath.Join(dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
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
	go func() { c.exited <- c.cmd.Wait(); logf.Close() }()
	if err := c.waitReady(ctx); err != nil {
		c.Stop()
		tail, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return nil, fmt.Errorf("postgres did not start: %w\n%s", err, tail)
	}
	c.log.Info("postgres started", "dir", dir, "port", c.port, "bin", bin)
	return c, nil
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
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
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
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

func (c *Cluster) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-c.exited:
			return fmt.Errorf("postgres exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
	}
	return errors.New("timed out after 30s")
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
// committed ones are on disk) and waits for it.
func (c *Cluster) Stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd = nil
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
