// Command tally is Tally's one binary: `tally serve` runs everything on
// embedded defaults; the other subcommands run one part each.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/tally-oss/tally/bench"
	"github.com/tally-oss/tally/cmd/tally/chaos"
	"github.com/tally-oss/tally/cmd/tally/check"
	"github.com/tally-oss/tally/cmd/tally/cli"
	"github.com/tally-oss/tally/cmd/tally/serve"
	"github.com/tally-oss/tally/cmd/tally/soak"
)

type subcommand struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

var subcommands = []subcommand{
	{"serve", "run everything in one process (embedded Kafka unless --kafka-brokers)", serve.Run},
	{"kafka", "run the embedded Kafka broker alone, for roles run as separate processes", serve.RunKafka},
	{"command", "run only the write side (CommandService)", serve.RunCommand},
	{"projector", "run only the Postgres projector", serve.RunProjector},
	{"query", "run only the read side (QueryService)", serve.RunQuery},
	{"migrate", "apply the read model's schema migrations", serve.RunMigrate},
	{"replay", "rebuild the read model into a fresh schema, or re-feed a range of the log into BigQuery", serve.RunReplay},
	{"check", "verify the log (versions, levels, transactions) and compare the read model with its fold", check.Run},
	{"bench", "drive a Tally (or --embedded) with an open-loop workload and audit it", runBench},
	{"chaos", "run every role as its own process, kill and pause them at random under load, then audit", chaos.RunCLI},
	{"kafka-acls", "print (or --apply) the Kafka ACLs a Tally principal needs on a cluster with an authorizer", serve.RunKafkaACLs},
	{"token", "token issue: mint a bearer token (role, stores, ttl) signed with the server's HS256 key", serve.RunToken},
	{"stock", "stock get|list|history|as-of: read stock levels, a SKU's history, the on-hand at an instant", runCLI("stock")},
	{"sell", "record a sale", runCLI("sell")},
	{"return", "record a customer return", runCLI("return")},
	{"receive", "record units received at a store", runCLI("receive")},
	{"adjust", "correct a level with a reason code", runCLI("adjust")},
	{"transfer", "move units between two stores", runCLI("transfer")},
	{"reserve", "hold units for a checkout", runCLI("reserve")},
	{"commit", "turn a reservation into a sale", runCLI("commit")},
	{"release", "give a reservation's units back", runCLI("release")},
	{"policy", "policy set: set a SKU's reorder point and target level at a store", runCLI("policy")},
	{"watch", "follow low stock live", runCLI("watch")},
	{"status", "show the projection's lag, visibility and dead letters", runCLI("status")},
	{"dlq", "dlq list|replay: list the records the projection skipped, retry them once their cause is fixed", runDLQ},
	{"completion", "completion bash|zsh: print a shell completion script", runCompletion},
}

// runCLI runs the CLI command(s) under name against --addr.
func runCLI(name string) func(ctx context.Context, args []string) error {
	return func(ctx context.Context, args []string) error {
		return cli.Run(ctx, append([]string{name}, args...), os.Stdout, os.Stderr)
	}
}

// runDLQ runs `dlq replay` itself (it needs Kafka and PostgreSQL, not a
// server) and the rest of `dlq` as CLI commands.
func runDLQ(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "replay" {
		return serve.RunDLQReplay(ctx, args[1:])
	}
	return runCLI("dlq")(ctx, args)
}

func runCompletion(_ context.Context, args []string) error {
	if len(args) != 1 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(os.Stderr, "usage: tally completion bash|zsh\n\nprint a shell completion script of every subcommand, command and flag.\n\nexample:\n  source <(tally completion bash)   # or add it to ~/.bashrc; zsh: source <(tally completion zsh)\n\nflags: none (-h prints this)\n")
		if len(args) == 1 {
			return flag.ErrHelp
		}
		return errUsage
	}
	return cli.CompletionScript(os.Stdout, args[0])
}

var errUsage = errors.New("see the usage above")

// complete prints the completions of the last argument after the others
// (the words typed after "tally"), one per line: what the completion
// scripts call.
func complete(args []string) {
	if len(args) == 0 {
		return
	}
	top := make([]string, 0, len(subcommands)+1)
	for _, s := range subcommands {
		top = append(top, s.name)
	}
	top = append(top, "version", "help")
	for _, c := range cli.Complete(args[:len(args)-1], args[len(args)-1], top) {
		fmt.Println(c)
	}
}

func runBench(ctx context.Context, args []string) error {
	return bench.Run(ctx, args, bench.Deps{
		StartEmbedded: serve.StartEmbedded,
		Replay: func(ctx context.Context, brokers []string, dsn string, parallel int) (int64, time.Duration, error) {
			return serve.Replay(ctx, brokers, dsn, "", parallel, os.Stderr)
		},
		Soak: soak.Run,
	})
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: tally <subcommand> [flags]\n\nsubcommands:\n")
	for _, s := range subcommands {
		fmt.Fprintf(w, "  %-10s %s\n", s.name, s.summary)
	}
	fmt.Fprintf(w, "  %-10s %s\n", "version", "print the version, commit and Go version of this binary")
	fmt.Fprintf(w, "\n`tally <subcommand> -h` lists its flags; each flag has a TALLY_ env fallback.\nThe commands from stock to dlq call a running server (--addr, default 127.0.0.1:8080).\n")
}

// version describes the binary from its build information: the module's
// version (a tag, or "(devel)"), the commit and its time when built from a
// checkout, and the Go version.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "tally (no build information)"
	}
	v := "tally " + bi.Main.Version
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if rev := settings["vcs.revision"]; rev != "" {
		v += " commit " + rev
		if settings["vcs.modified"] == "true" {
			v += " (modified)"
		}
		if at := settings["vcs.time"]; at != "" {
			v += " " + at
		}
	}
	return v + " " + bi.GoVersion
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "-h", "-help", "--help", "help":
		usage(os.Stdout)
		return
	case "version", "-version", "--version":
		fmt.Println(version())
		return
	case "__complete":
		complete(os.Args[2:])
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, s := range subcommands {
		if s.name == os.Args[1] {
			err := s.run(ctx, os.Args[2:])
			if errors.Is(err, flag.ErrHelp) {
				os.Exit(0)
			}
			if errors.Is(err, errUsage) || cli.IsUsage(err) {
				if err != errUsage && err != cli.ErrUsage { // a mistake not yet explained
					fmt.Fprintf(os.Stderr, "tally %s: %v\n", s.name, err)
				}
				os.Exit(2)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "tally %s: %v\n", s.name, err)
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "tally: unknown subcommand %q\n\n", os.Args[1])
	usage(os.Stderr)
	os.Exit(2)
}
