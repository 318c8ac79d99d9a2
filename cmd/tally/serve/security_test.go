package serve

import (
	"crypto/x509"
	"strings"
	"testing"

	"github.com/tally-oss/tally/internal/testenv"
)

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
