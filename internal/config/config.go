// Package config fills flags from TALLY_ environment variables, so every
// setting can be given either way. Flags win over the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	envMu   sync.Mutex
	envErrs = map[*flag.FlagSet][]error{}
)

func badEnv(fs *flag.FlagSet, name, v string, err error) {
	envMu.Lock()
	defer envMu.Unlock()
	envErrs[fs] = append(envErrs[fs], fmt.Errorf("%s=%q: %w", EnvName(name), v, err))
}

// EnvErrors reports every environment variable behind fs's flags that could
// not be parsed, so a typo in a deployment is an error, not a silent default.
func EnvErrors(fs *flag.FlagSet) error {
	envMu.Lock()
	defer envMu.Unlock()
	return errors.Join(envErrs[fs]...)
}

// EnvName is the environment variable behind a flag: --kafka-brokers is
// TALLY_KAFKA_BROKERS.
func EnvName(flagName string) string {
	return "TALLY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func usage(name, u string) string { return fmt.Sprintf("%s (env %s)", u, EnvName(name)) }

// String defines a string flag with an env fallback.
func String(fs *flag.FlagSet, p *string, name, def, u string) {
	if v, ok := os.LookupEnv(EnvName(name)); ok {
		def = v
	}
	fs.StringVar(p, name, def, usage(name, u))
}

// Int defines an int flag with an env fallback.
func Int(fs *flag.FlagSet, p *int, name string, def int, u string) {
	if v, ok := os.LookupEnv(EnvName(name)); ok {
		if n, err := strconv.Atoi(v); err == nil {
			def = n
		} else {
			badEnv(fs, name, v, err)
		}
	}
	fs.IntVar(p, name, def, usage(name, u))
}

// Int64 defines an int64 flag with an env fallback.
func Int64(fs *flag.FlagSet, p *int64, name string, def int64, u string) {
	if v, ok := os.LookupEnv(EnvName(name)); ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			def = n
		} else {
			badEnv(fs, name, v, err)
		}
	}
	fs.Int64Var(p, name, def, usage(name, u))
}

// Float64 defines a float64 flag with an env fallback.
func Float64(fs *flag.FlagSet, p *float64, name string, def float64, u string) {
	if v, ok := os.LookupEnv(EnvName(name)); ok {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			def = f
		} else {
			badEnv(fs, name, v, err)
		}
	}
	fs.Float64Var(p, name, def, usage(name, u))
}

// Duration defines a duration flag with an env fallback.
func Duration(fs *flag.FlagSet, p *time.Duration, name string, def time.Duration, u string) {
	if v, ok := os.LookupEnv(EnvName(name)); ok {
		if d, err := time.ParseDuration(v); err == nil {
			def = d
		} else {
			badEnv(fs, name, v, err)
		}
	}
	fs.DurationVar(p, name, def, usage(name, u))
}

// Bool defines a bool flag with an env fallback.
func Bool(fs *flag.FlagSet, p *bool, name string, def bool, u string) {
	if v, ok := os.LookupEnv(EnvName(name)); ok {
		if b, err := strconv.ParseBool(v); err == nil {
			def = b
		} else {
			badEnv(fs, name, v, err)
		}
	}
	fs.BoolVar(p, name, def, usage(name, u))
}

// List splits a comma-separated flag value, dropping empty items.
func List(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Usage makes fs's help say what the command does and show examples
// before its flags.
func Usage(fs *flag.FlagSet, line, summary string, examples ...string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: %s\n\n%s\n\nexample:\n", line, summary)
		for _, e := range examples {
			fmt.Fprintf(w, "  %s\n", e)
		}
		fmt.Fprintf(w, "\nflags:\n")
		fs.PrintDefaults()
	}
}
