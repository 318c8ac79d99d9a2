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
	fmt.Fprintf(w, "\n`tally <subcommand> -h` lists its flags; each flag has a TALLY_ env fallback.\n")
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
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, s := range subcommands {
		if s.name == os.Args[1] {
			err := s.run(ctx, os.Args[2:])
			if errors.Is(err, flag.ErrHelp) {
				os.Exit(0)
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
