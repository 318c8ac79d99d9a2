package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/bigquery/storage/managedwriter"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tally-oss/tally/internal/pg"
)

// BigQueryProject is the emulator's project.
const BigQueryProject = "tally-test"

// BigQuery is a running BigQuery emulator (github.com/goccy/bigquery-emulator,
// pinned in tools/bigquery-emulator), a separate process.
type BigQuery struct {
	// Endpoint is its REST endpoint, for --bigquery-endpoint.
	Endpoint string
	// GRPCEndpoint is its Storage Write API endpoint (host:port, plaintext),
	// for --bigquery-storage-endpoint.
	GRPCEndpoint string
	// Log is the emulator's output.
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartBigQuery starts the emulator, building it first when it is missing
// (scripts/bigquery-emulator.sh: about 4 minutes once, instant after;
// TALLY_BQ_EMULATOR names a binary to use instead). Call Stop when done; a
// test uses NewBigQuery, which does.
func StartBigQuery(ctx context.Context) (*BigQuery, error) {
	bin, err := emulatorBinary(ctx)
	if err != nil {
		return nil, err
	}
	httpPort, err := pg.FreePort()
	if err != nil {
		return nil, err
	}
	grpcPort, err := pg.FreePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--project="+BigQueryProject, "--host=127.0.0.1",
		fmt.Sprintf("--port=%d", httpPort), fmt.Sprintf("--grpc-port=%d", grpcPort), "--log-level=error")
	// It logs every expected "not found" as an error: keep that out of the
	// test output, in a file named when something goes wrong.
	logf, err := os.CreateTemp("", "bigquery-emulator-*.log")
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Never outlive the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start bigquery emulator: %w", err)
	}
	b := &BigQuery{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", httpPort), GRPCEndpoint: fmt.Sprintf("127.0.0.1:%d", grpcPort),
		Log: logf.Name(), cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(b.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(b.Endpoint + "/bigquery/v2/projects/" + BigQueryProject + "/datasets")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return b, nil
			}
		}
		select {
		case <-b.done:
			return nil, fmt.Errorf("bigquery emulator exited while starting; its log: %s", logf.Name())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Stop()
			// %v, not %w: err is nil when the emulator answered, but not 200.
			return nil, fmt.Errorf("bigquery emulator not answering on %s after 30s: %v; its log: %s", b.Endpoint, err, logf.Name())
		}
	}
}

// NewBigQuery starts an emulator for one test and stops it (removing its
// log) at the test's cleanup.
func NewBigQuery(tb testing.TB) *BigQuery {
	tb.Helper()
	b, err := StartBigQuery(tb.Context())
	if err != nil {
		tb.Fatalf("bigquery emulator: %v", err)
	}
	tb.Cleanup(b.Stop)
	return b
}

// Client is a BigQuery client on the emulator.
func (b *BigQuery) Client(ctx context.Context) (*bigquery.Client, error) {
	return bigquery.NewClient(ctx, BigQueryProject, option.WithEndpoint(b.Endpoint), option.WithoutAuthentication())
}

// Writer is a Storage Write API client on the emulator.
func (b *BigQuery) Writer(ctx context.Context) (*managedwriter.Client, error) {
	return managedwriter.NewClient(ctx, BigQueryProject, option.WithEndpoint(b.GRPCEndpoint), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
}

// Rows runs a query and returns its rows, each a map from column name.
func Rows(ctx context.Context, c *bigquery.Client, sql string, params ...bigquery.QueryParameter) ([]map[string]bigquery.Value, error) {
	q := c.Query(sql)
	q.Parameters = params
	it, err := q.Read(ctx)
	if err != nil {
		return nil, err
	}
	var out []map[string]bigquery.Value
	for {
		row := map[string]bigquery.Value{}
		err := it.Next(&row)
		if errors.Is(err, iterator.Done) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, row)
	}
}

// Stop kills the emulator (it keeps everything in memory) and removes its
// log.
func (b *BigQuery) Stop() {
	_ = b.cmd.Process.Kill()
	<-b.done
	os.Remove(b.Log)
}

var (
	binOnce sync.Once
	bin     string
	binErr  error
)

// emulatorBinary finds or builds the emulator, once per test binary.
func emulatorBinary(ctx context.Context) (string, error) {
	binOnce.Do(func() { bin, binErr = findEmulator(ctx) })
	return bin, binErr
}

func findEmulator(ctx context.Context) (string, error) {
	if bin := os.Getenv("TALLY_BQ_EMULATOR"); bin != "" {
		if _, err := os.Stat(bin); err == nil {
			return bin, nil
		}
	}
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	script := filepath.Join(filepath.Dir(strings.TrimSpace(string(gomod))), "scripts", "bigquery-emulator.sh")
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	return strings.TrimSpace(string(out)), nil
}
