package serve

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tally-oss/tally/internal/testenv"
)

func TestKafkaSecurityFlagsSayWhatIsWrong(t *testing.T) {
	file := filepath.Join(t.TempDir(), "password")
	for _, c := range []struct {
		name     string
		flags    kafkaSecurityFlags
		embedded bool
		env      bool // TALLY_KAFKA_SASL_PASSWORD set
		want     string
	}{
		{"none", kafkaSecurityFlags{}, true, false, ""},
		{"tls", kafkaSecurityFlags{TLS: true}, false, false, ""},
		{"scram from a file", kafkaSecurityFlags{Mechanism: "SCRAM-SHA-256", User: "u", PasswordFile: file}, false, false, ""},
		{"scram from the environment", kafkaSecurityFlags{Mechanism: "scram-sha-512", User: "u"}, false, true, ""},
		{"plain over tls", kafkaSecurityFlags{TLSCA: file, Mechanism: "PLAIN", User: "u"}, false, true, ""},
		{"embedded broker", kafkaSecurityFlags{TLS: true}, true, false, "not to the embedded broker"},
		{"unknown mechanism", kafkaSecurityFlags{Mechanism: "GSSAPI", User: "u"}, false, true, "must be SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN"},
		{"no user", kafkaSecurityFlags{Mechanism: "SCRAM-SHA-256"}, false, true, "needs --kafka-sasl-user"},
		{"no password", kafkaSecurityFlags{Mechanism: "SCRAM-SHA-256", User: "u"}, false, false, "needs --kafka-sasl-password-file or TALLY_KAFKA_SASL_PASSWORD"},
		{"two passwords", kafkaSecurityFlags{Mechanism: "SCRAM-SHA-256", User: "u", PasswordFile: file}, false, true, "not both"},
		{"plain in the clear", kafkaSecurityFlags{Mechanism: "PLAIN", User: "u"}, false, true, "needs --kafka-tls"},
		{"user without mechanism", kafkaSecurityFlags{User: "u"}, false, false, "need --kafka-sasl-mechanism"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env {
				t.Setenv(passwordEnv, "secret")
			} else {
				// Unset for the test, whatever the shell has.
				t.Setenv(passwordEnv, "")
				os.Unsetenv(passwordEnv)
			}
			err := c.flags.validate(c.embedded)
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
	f := kafkaSecurityFlags{Mechanism: "SCRAM-SHA-256", User: "u", PasswordFile: file}
	if p, err := f.password(); err != nil || p != "s3cret" {
		t.Fatalf("password %q, %v", p, err)
	}
	sec, err := f.security()
	if err != nil || sec.SASL == nil || sec.SASL.Name() != "SCRAM-SHA-256" || sec.TLS != nil {
		t.Fatalf("security %+v, %v", sec, err)
	}
}

func TestTLSFlagsGoTogether(t *testing.T) {
	for _, c := range []struct {
		flags tlsFlags
		want  string
	}{
		{tlsFlags{}, ""},
		{tlsFlags{Cert: "c", Key: "k", ClientCA: "ca", PeerCA: "p"}, ""},
		{tlsFlags{Cert: "c"}, "--tls-cert and --tls-key go together"},
		{tlsFlags{Key: "k"}, "--tls-cert and --tls-key go together"},
		{tlsFlags{ClientCA: "ca"}, "--tls-client-ca needs --tls-cert"},
		{tlsFlags{PeerCA: "p"}, "--tls-peer-ca needs --tls-cert"},
	} {
		err := c.flags.validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.flags, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: error %v, want %q", c.flags, err, c.want)
		}
	}
}

// Without --tls-peer-ca an instance trusts the certificates of its own
// --tls-cert file (instances sharing one certificate) and --tls-client-ca
// (instances whose certificates one CA signed); --tls-peer-ca replaces
// both.
func TestPeersAreTrustedByOwnCertificateClientCAOrPeerCA(t *testing.T) {
	ca := testenv.NewCA(t)
	own := ca.Issue(t, "a", "127.0.0.1")
	sibling := ca.Issue(t, "b", "127.0.0.1")
	verifies := func(f tlsFlags, leaf []byte) bool {
		t.Helper()
		cfg, err := f.peer()
		if err != nil {
			t.Fatal(err)
		}
		if len(cfg.Certificates) != 1 {
			t.Fatalf("the forwarder presents %d certificates, want its own", len(cfg.Certificates))
		}
		c, err := x509.ParseCertificate(leaf)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Verify(x509.VerifyOptions{Roots: cfg.RootCAs, DNSName: "127.0.0.1"})
		return err == nil
	}
	if !verifies(tlsFlags{Cert: own.CertFile, Key: own.KeyFile}, own.TLS.Certificate[0]) {
		t.Error("an instance does not trust a peer with its own certificate")
	}
	if verifies(tlsFlags{Cert: own.CertFile, Key: own.KeyFile}, sibling.TLS.Certificate[0]) {
		t.Error("an instance trusts a peer's certificate from a CA nothing names")
	}
	if !verifies(tlsFlags{Cert: own.CertFile, Key: own.KeyFile, ClientCA: ca.File}, sibling.TLS.Certificate[0]) {
		t.Error("an instance does not trust a peer whose certificate --tls-client-ca signed")
	}
	if !verifies(tlsFlags{Cert: own.CertFile, Key: own.KeyFile, PeerCA: ca.File}, sibling.TLS.Certificate[0]) {
		t.Error("an instance does not trust a peer whose certificate --tls-peer-ca signed")
	}
	other := testenv.NewCA(t)
	if verifies(tlsFlags{Cert: own.CertFile, Key: own.KeyFile, ClientCA: ca.File, PeerCA: other.File}, sibling.TLS.Certificate[0]) {
		t.Error("--tls-peer-ca does not replace the default trust")
	}
	if cfg, err := (&tlsFlags{}).peer(); cfg != nil || err != nil {
		t.Errorf("without TLS the forwarder has a TLS config %v, %v; want none (h2c)", cfg, err)
	}
}
