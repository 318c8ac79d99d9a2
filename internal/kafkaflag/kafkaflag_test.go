package kafkaflag

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKafkaSecurityFlagsSayWhatIsWrong(t *testing.T) {
	file := filepath.Join(t.TempDir(), "password")
	for _, c := range []struct {
		name     string
		flags    Security
		embedded bool
		env      bool // TALLY_KAFKA_SASL_PASSWORD set
		want     string
	}{
		{"none", Security{}, true, false, ""},
		{"tls", Security{TLS: true}, false, false, ""},
		{"scram from a file", Security{Mechanism: "SCRAM-SHA-256", User: "u", PasswordFile: file}, false, false, ""},
		{"scram from the environment", Security{Mechanism: "scram-sha-512", User: "u"}, false, true, ""},
		{"plain over tls", Security{TLSCA: file, Mechanism: "PLAIN", User: "u"}, false, true, ""},
		{"embedded broker", Security{TLS: true}, true, false, "not to the embedded broker"},
		{"unknown mechanism", Security{Mechanism: "GSSAPI", User: "u"}, false, true, "must be SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN"},
		{"no user", Security{Mechanism: "SCRAM-SHA-256"}, false, true, "needs --kafka-sasl-user"},
		{"no password", Security{Mechanism: "SCRAM-SHA-256", User: "u"}, false, false, "needs --kafka-sasl-password-file or TALLY_KAFKA_SASL_PASSWORD"},
		{"two passwords", Security{Mechanism: "SCRAM-SHA-256", User: "u", PasswordFile: file}, false, true, "not both"},
		{"plain in the clear", Security{Mechanism: "PLAIN", User: "u"}, false, true, "needs --kafka-tls"},
		{"user without mechanism", Security{User: "u"}, false, false, "need --kafka-sasl-mechanism"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env {
				t.Setenv(PasswordEnv, "secret")
			} else {
				// Unset for the test, whatever the shell has.
				t.Setenv(PasswordEnv, "")
				os.Unsetenv(PasswordEnv)
			}
			err := c.flags.Validate(c.embedded)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("%v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("error %v, want %q", err, c.want)
			}
		})
	}
}

func TestSASLPasswordFileLosesItsTrailingNewline(t *testing.T) {
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := Security{Mechanism: "SCRAM-SHA-256", User: "u", PasswordFile: file}
	if p, err := f.password(); err != nil || p != "s3cret" {
		t.Fatalf("password %q, %v", p, err)
	}
	sec, err := f.Kafka()
	if err != nil || sec.SASL == nil || sec.SASL.Name() != "SCRAM-SHA-256" || sec.TLS != nil {
		t.Fatalf("security %+v, %v", sec, err)
	}
}
