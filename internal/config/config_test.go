package config

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func TestEnvFallbacksAndTheirErrors(t *testing.T) {
	t.Setenv("TALLY_PARTITIONS", "12")
	t.Setenv("TALLY_SHUTDOWN_GRACE", "soon")
	t.Setenv("TALLY_ADDR", "0.0.0.0:9000")
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var n int
	var d time.Duration
	var addr string
	Int(fs, &n, "partitions", 6, "")
	Duration(fs, &d, "shutdown-grace", time.Second, "")
	String(fs, &addr, "addr", "127.0.0.1:8080", "")
	if err := fs.Parse([]string{"--addr", "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if n != 12 || addr != "127.0.0.1:1" || d != time.Second {
		t.Fatalf("partitions %d addr %s grace %s: env should fill in, flags should win", n, addr, d)
	}
	err := EnvErrors(fs)
	if err == nil || !strings.Contains(err.Error(), "TALLY_SHUTDOWN_GRACE") {
		t.Fatalf("EnvErrors = %v, want the unparsable TALLY_SHUTDOWN_GRACE", err)
	}
}
