// Package cli is Tally's command line for people and scripts: every RPC
// as a subcommand (`tally stock get`, `tally sell`, `tally watch`, ...)
// against a running server, printing tables by default and JSON with
// --json.
package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/internal/config"
)

// Command is one CLI subcommand: `tally <Path...> [flags] Args`.
type Command struct {
	Path    []string
	Args    string // positional arguments, for the usage line
	Summary string
	Example string
	flags   func(fs *flag.FlagSet) func(ctx context.Context, c *call, args []string) error
	nargs   int // positional arguments required (-1: any)
	// External commands are listed here (help, completion) but run by the
	// binary itself, not against --addr.
	External bool
}

// Name is the command's words joined, such as "stock get".
func (c Command) Name() string { return strings.Join(c.Path, " ") }

// Groups are the first words with several commands under them.
func Groups() map[string][]Command {
	g := map[string][]Command{}
	for _, c := range Commands {
		if len(c.Path) > 1 {
			g[c.Path[0]] = append(g[c.Path[0]], c)
		}
	}
	return g
}

// call is what every command talks through.
type call struct {
	cmds inventoryv1.CommandServiceClient
	qry  inventoryv1.QueryServiceClient
	out  io.Writer
	json bool
}

// common are the flags of every command.
type common struct {
	addr, token, serverCA string
	serverTLS, json       bool
	timeout               time.Duration
}

func (c *common) register(fs *flag.FlagSet) {
	config.String(fs, &c.addr, "addr", "127.0.0.1:8080", "the Tally server (tally serve, command or query) to call")
	config.String(fs, &c.token, "token", "", "bearer token to call with (tally serve prints development tokens; tally token issue mints one)")
	config.Bool(fs, &c.json, "json", false, "print the server's answer as JSON (protobuf JSON, one object per line) instead of a table")
	config.Duration(fs, &c.timeout, "timeout", 10*time.Second, "deadline of each call (watch: of connecting)")
	config.Bool(fs, &c.serverTLS, "server-tls", false, "call the server over TLS, verified against the system's roots")
	config.String(fs, &c.serverCA, "server-ca", "", "PEM CA the server's TLS certificate is verified against; implies --server-tls")
}

// Run runs the command whose path starts args (args without "tally").
// It returns flag.ErrHelp after printing help.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("no command")
	}
	var cmd *Command
	for i := range Commands {
		c := &Commands[i]
		if len(args) >= len(c.Path) && slices.Equal(args[:len(c.Path)], c.Path) {
			cmd = c
			break
		}
	}
	if cmd == nil {
		group := Groups()[args[0]]
		if len(group) == 0 {
			return fmt.Errorf("unknown command %q", args[0])
		}
		wrong := len(args) > 1 && !isHelp(args[1])
		if wrong {
			fmt.Fprintf(stderr, "tally %s: unknown command %q\n\n", args[0], args[1])
		}
		fmt.Fprintf(stderr, "usage: tally %s <command> [flags]\n\ncommands:\n", args[0])
		for _, c := range group {
			fmt.Fprintf(stderr, "  %-20s %s\n", c.Name(), c.Summary)
		}
		fmt.Fprintf(stderr, "\nexample:\n  %s\n\n`tally %s <command> -h` shows each one's flags and an example.\n", strings.SplitN(group[0].Example, "\n", 2)[0], args[0])
		if wrong || len(args) == 1 {
			return errUsage
		}
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("tally "+cmd.Name(), flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	run := cmd.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tally %s [flags] %s\n\n%s.\n\nexample:\n  %s\n\nflags:\n", cmd.Name(), cmd.Args, cmd.Summary, strings.ReplaceAll(cmd.Example, "\n", "\n  "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(interleave(fs, args[len(cmd.Path):])); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return ErrUsage // the flag package said what and showed the usage
	}
	if cmd.nargs >= 0 && fs.NArg() != cmd.nargs {
		fs.Usage()
		return fmt.Errorf("%s takes %d arguments (%s), got %d: %w", cmd.Name(), cmd.nargs, cmd.Args, fs.NArg(), errUsage)
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	if cmd.Name() != "watch" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	cl := &call{cmds: inventoryv1.NewCommandServiceClient(conn), qry: inventoryv1.NewQueryServiceClient(conn), out: stdout, json: c.json}
	if err := run(ctx, cl, fs.Args()); err != nil {
		return explain(err)
	}
	return nil
}

// ErrUsage is a usage mistake already explained on stderr; errors that
// wrap it say what was wrong. Either way the exit status is 2.
var ErrUsage = errors.New("see the usage above")

var errUsage = ErrUsage

// IsUsage reports whether err is a usage mistake (exit status 2).
func IsUsage(err error) bool { return errors.Is(err, ErrUsage) }

// hinted is an error with advice for the person who met it.
type hinted struct {
	err  error
	hint string
}

func (h *hinted) Error() string { return h.err.Error() + "\n  " + h.hint }
func (h *hinted) Unwrap() error { return h.err }

// retryHint adds, to an error that leaves a command's fate unknown, the id
// to retry it with safely, when the id was made here.
func retryHint(err error, id string, generated bool) error {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown:
		if generated {
			return &hinted{err, "it may have been applied: retry with --command-id " + id + " to find out safely"}
		}
	}
	return err
}

func isHelp(s string) bool { return s == "-h" || s == "-help" || s == "--help" || s == "help" }

// interleave moves flags after positional arguments to the front, so
// `tally sell SKU-1 S1 2 --json` works as well as `tally sell --json SKU-1 S1 2`.
func interleave(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" || isNumber(a) {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				continue
			}
			if i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
		}
	}
	// "--" ends the flags, so a positional starting with "-" stays one.
	return append(append(flags, "--"), pos...)
}

func isNumber(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}

func (c *common) dial() (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if c.serverTLS || c.serverCA != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.serverCA != "" {
			pool, err := config.CertPool(c.serverCA)
			if err != nil {
				return nil, fmt.Errorf("--server-ca: %w", err)
			}
			cfg.RootCAs = pool
		}
		creds = credentials.NewTLS(cfg)
	}
	return grpc.NewClient(c.addr, grpc.WithTransportCredentials(creds))
}

// explain turns a gRPC error into one line with its code and details.
func explain(err error) error {
	hint := ""
	var h *hinted
	if errors.As(err, &h) {
		err, hint = h.err, "\n  "+h.hint
	}
	st, ok := status.FromError(err)
	if !ok {
		return errors.New(err.Error() + hint)
	}
	msg := fmt.Sprintf("%s: %s", codeName(st.Code().String()), st.Message())
	for _, d := range st.Details() {
		if m, ok := d.(proto.Message); ok {
			b, _ := compactJSON(m)
			msg += fmt.Sprintf("\n  %s %s", m.ProtoReflect().Descriptor().Name(), b)
		}
	}
	if st.Code().String() == "Unavailable" && strings.Contains(st.Message(), "connection refused") {
		msg += "\n  (is a Tally server running at --addr? `tally serve` starts one)"
	}
	return errors.New(msg + hint)
}

// codeName is a gRPC code as Connect spells it: FailedPrecondition is
// failed_precondition.
func codeName(code string) string {
	var b strings.Builder
	for i, r := range code {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToLower(b.String())
}

// printJSON prints m as one line of protobuf JSON.
func (c *call) printJSON(m proto.Message) error {
	b, err := compactJSON(m)
	if err != nil {
		return err
	}
	_, err = c.out.Write(append(b, '\n'))
	return err
}

// compactJSON is m in protobuf JSON without spaces: protojson varies its
// spacing on purpose, and scripts and diffs want one form.
func compactJSON(m proto.Message) ([]byte, error) {
	b, err := protojson.MarshalOptions{}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// table prints a header and rows, aligned.
func (c *call) table(header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func parseInt(name, s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s must be a whole number, got %q", name, s)
	}
	return n, nil
}

// commandID is --command-id, or a fresh one: pass the same id again to
// retry a command safely.
func commandID(id string) string {
	if id != "" {
		return id
	}
	return "cli-" + uuid.Must(uuid.NewV7()).String()
}

type protoMessage = proto.Message
