package serve

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/tally-oss/tally/internal/config"
)

// tlsFlags serve the API port over TLS, and say how command instances
// trust each other when they forward commands.
type tlsFlags struct {
	Cert     string
	Key      string
	ClientCA string
	PeerCA   string // only where commands are forwarded (the command role)
}

// register: forwards says the process forwards commands to its peers.
func (t *tlsFlags) register(fs *flag.FlagSet, forwards bool) {
	config.String(fs, &t.Cert, "tls-cert", "", "PEM certificate (chain) to serve the port over TLS with: HTTP/2 by ALPN for gRPC, HTTP/1.1 for Connect and gRPC-Web; empty serves h2c (plaintext). Needs --tls-key")
	config.String(fs, &t.Key, "tls-key", "", "PEM private key of --tls-cert")
	config.String(fs, &t.ClientCA, "tls-client-ca", "", "PEM CA certificates clients must present a certificate signed by (mutual TLS); empty asks for none")
	if forwards {
		config.String(fs, &t.PeerCA, "tls-peer-ca", "", "PEM CA certificates other command instances' certificates are verified against when commands are forwarded to them over TLS; empty trusts the system roots, the certificates in --tls-cert (the instances' shared self-signed certificate or CA chain) and --tls-client-ca")
	}
}

func (t *tlsFlags) validate() error {
	var errs []error
	if (t.Cert == "") != (t.Key == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if t.Cert == "" && t.ClientCA != "" {
		errs = append(errs, errors.New("--tls-client-ca needs --tls-cert and --tls-key"))
	}
	if t.Cert == "" && t.PeerCA != "" {
		errs = append(errs, errors.New("--tls-peer-ca needs --tls-cert and --tls-key"))
	}
	return errors.Join(errs...)
}

// presenting is a TLS config that presents this instance's --tls-cert.
func (t *tlsFlags) presenting() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// server returns the API's TLS config, nil when it serves h2c.
func (t *tlsFlags) server() (*tls.Config, error) {
	if t.Cert == "" {
		return nil, nil
	}
	cfg, err := t.presenting()
	if err != nil {
		return nil, err
	}
	if t.ClientCA != "" {
		if cfg.ClientCAs, err = config.CertPool(t.ClientCA); err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// peer returns the client config commands are forwarded to other instances
// with, nil when the API serves h2c. It presents this instance's
// certificate (the peers ask for one when they require client
// certificates) and trusts --tls-peer-ca or, without it, the system roots
// plus every certificate of --tls-cert and --tls-client-ca: instances that
// share a self-signed certificate, or certificates of one CA whose chain
// file includes it, or that verify clients against the CA that signed
// them, trust each other with no more configuration.
func (t *tlsFlags) peer() (*tls.Config, error) {
	if t.Cert == "" {
		return nil, nil
	}
	cfg, err := t.presenting()
	if err != nil {
		return nil, err
	}
	cert := cfg.Certificates[0]
	if t.PeerCA != "" {
		if cfg.RootCAs, err = config.CertPool(t.PeerCA); err != nil {
			return nil, fmt.Errorf("--tls-peer-ca: %w", err)
		}
		return cfg, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert: %w", err)
		}
		pool.AddCert(c)
	}
	if t.ClientCA != "" {
		b, err := os.ReadFile(t.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		pool.AppendCertsFromPEM(b)
	}
	cfg.RootCAs = pool
	return cfg, nil
}
