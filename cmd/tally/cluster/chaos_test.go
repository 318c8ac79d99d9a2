package cluster_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tally-oss/tally/cmd/tally/chaos"
	"github.com/tally-oss/tally/cmd/tally/serve"
)

// runTally is `tally <TALLY_ARGS>` (separated by \x1f) in a child process,
// for the chaos harness.
func runTally() error {
	args := strings.Split(os.Getenv("TALLY_ARGS"), "\x1f")
	run := map[string]func(context.Context, []string) error{
		"kafka": serve.RunKafka, "command": serve.RunCommand, "projector": serve.RunProjector, "query": serve.RunQuery,
	}[args[0]]
	if run == nil {
		return fmt.Errorf("no subcommand %q", args[0])
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	return run(ctx, args[1:])
}

// The chaos run, short: every role its own OS process (tally kafka,
// PostgreSQL, 3 command, 2 projector, 2 query instances), random kills and
// pauses under load, each followed by a restart, then the audit. The long
// run is `tally chaos` (BENCHMARKS.md).
func TestChaos(t *testing.T) {
	var out strings.Builder
	rep, err := chaos.Run(t.Context(), chaos.Config{Dir: t.TempDir(), Faults: 5, Rate: 100, Every: 2 * time.Second, Seed: chaosSeed(t), Out: &out}, spawnTally)
	if err != nil {
		t.Fatal(err)
	}
	rep.Print(&out)
	t.Log("\n" + out.String())
	if !rep.OK() {
		t.Fatalf("the chaos audit found %d problems", len(rep.Problems))
	}
	if rep.Acked == 0 || rep.Checked != rep.Acked || len(rep.Faults) != 5 {
		t.Fatalf("%d acknowledged, %d checked, %d faults", rep.Acked, rep.Checked, len(rep.Faults))
	}
}

// Kafka killed and restarted twice under load with two projectors in one
// group: both must rejoin and the projection catch up (it once stopped for
// good: a poll that returned only the group's errors kept rebalances
// blocked, so the group could never rejoin).
func TestChaosKafkaKillsWithTwoProjectors(t *testing.T) {
	var out strings.Builder
	rep, err := chaos.Run(t.Context(), chaos.Config{Dir: t.TempDir(), Faults: 2, Rate: 100, Every: 3 * time.Second, Commands: 2, Projectors: 2, Queries: 1,
		Roles: []string{"kafka"}, Seed: chaosSeed(t), Out: &out}, spawnTally)
	if err != nil {
		t.Fatal(err)
	}
	rep.Print(&out)
	t.Log("\n" + out.String())
	if !rep.OK() || len(rep.Faults) != 2 {
		t.Fatalf("the chaos audit found %d problems (%d faults)", len(rep.Problems), len(rep.Faults))
	}
}

// chaosSeed is TALLY_CHAOS_SEED (a failed run's report gives it: the same
// faults again), or the time.
func chaosSeed(t *testing.T) uint64 {
	if v := os.Getenv("TALLY_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TALLY_CHAOS_SEED: %v", err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// spawnTally runs `tally <args>` as this test binary in child mode.
func spawnTally(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "TALLY_TEST_CHILD=tally", "TALLY_ARGS="+strings.Join(args, "\x1f"))
	return cmd
}
