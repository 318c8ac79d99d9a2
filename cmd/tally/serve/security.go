package serve

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/kafka"
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

// server returns the API's TLS config, nil when it serves h2c.
func (t *tlsFlags) server() (*tls.Config, error) {
	if t.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCA != "" {
		if cfg.ClientCAs, err = certPool(t.ClientCA); err != nil {
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
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.PeerCA != "" {
		if cfg.RootCAs, err = certPool(t.PeerCA); err != nil {
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

// passwordEnv holds the Kafka SASL password when no file does. It is not
// a flag, so the password never shows in a process listing.
const passwordEnv = "TALLY_KAFKA_SASL_PASSWORD"

// kafkaSecurityFlags say how to reach a secured Kafka cluster.
type kafkaSecurityFlags struct {
	TLS          bool
	TLSCA        string
	Mechanism    string
	User         string
	PasswordFile string
}

func (k *kafkaSecurityFlags) register(fs *flag.FlagSet) {
	config.Bool(fs, &k.TLS, "kafka-tls", false, "connect to the Kafka brokers over TLS (verified against the system roots, or --kafka-tls-ca)")
	config.String(fs, &k.TLSCA, "kafka-tls-ca", "", "PEM CA certificates the Kafka brokers' certificates are verified against; implies --kafka-tls")
	config.String(fs, &k.Mechanism, "kafka-sasl-mechanism", "", "SASL mechanism to authenticate to Kafka with: SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN (PLAIN only over --kafka-tls); empty: none")
	config.String(fs, &k.User, "kafka-sasl-user", "", "SASL user name")
	config.String(fs, &k.PasswordFile, "kafka-sasl-password-file", "", "file holding the SASL password (a trailing newline is dropped); or set "+passwordEnv)
}

func (k *kafkaSecurityFlags) enabled() bool {
	return k.TLS || k.TLSCA != "" || k.Mechanism != "" || k.User != "" || k.PasswordFile != ""
}

// validate: embedded says the process runs its own broker, which speaks
// plaintext without authentication.
func (k *kafkaSecurityFlags) validate(embedded bool) error {
	var errs []error
	if embedded && k.enabled() {
		errs = append(errs, errors.New("--kafka-tls and --kafka-sasl-* apply to --kafka-brokers, not to the embedded broker"))
	}
	_, envSet := os.LookupEnv(passwordEnv)
	switch {
	case k.Mechanism == "" && (k.User != "" || k.PasswordFile != ""):
		errs = append(errs, errors.New("--kafka-sasl-user and --kafka-sasl-password-file need --kafka-sasl-mechanism"))
	case k.Mechanism != "":
		switch strings.ToUpper(k.Mechanism) {
		case kafka.ScramSHA256, kafka.ScramSHA512, kafka.Plain:
		default:
			errs = append(errs, fmt.Errorf("--kafka-sasl-mechanism must be %s, %s or %s, got %q", kafka.ScramSHA256, kafka.ScramSHA512, kafka.Plain, k.Mechanism))
		}
		if k.User == "" {
			errs = append(errs, errors.New("--kafka-sasl-mechanism needs --kafka-sasl-user"))
		}
		if k.PasswordFile == "" && !envSet {
			errs = append(errs, fmt.Errorf("--kafka-sasl-mechanism needs --kafka-sasl-password-file or %s", passwordEnv))
		}
		if k.PasswordFile != "" && envSet {
			errs = append(errs, fmt.Errorf("give the SASL password by --kafka-sasl-password-file or %s, not both", passwordEnv))
		}
		if strings.EqualFold(k.Mechanism, kafka.Plain) && !k.TLS && k.TLSCA == "" {
			errs = append(errs, errors.New("--kafka-sasl-mechanism PLAIN sends the password as it is: it needs --kafka-tls"))
		}
	}
	return errors.Join(errs...)
}

// security returns the Kafka clients' security, nil for plaintext.
func (k *kafkaSecurityFlags) security() (*kafka.Security, error) {
	if !k.enabled() {
		return nil, nil
	}
	sec := &kafka.Security{}
	if k.TLS || k.TLSCA != "" {
		sec.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if k.TLSCA != "" {
			pool, err := certPool(k.TLSCA)
			if err != nil {
				return nil, fmt.Errorf("--kafka-tls-ca: %w", err)
			}
			sec.TLS.RootCAs = pool
		}
	}
	if k.Mechanism != "" {
		password, err := k.password()
		if err != nil {
			return nil, err
		}
		if sec.SASL, err = kafka.NewSASL(k.Mechanism, k.User, password); err != nil {
			return nil, fmt.Errorf("--kafka-sasl-mechanism: %w", err)
		}
	}
	return sec, nil
}

func (k *kafkaSecurityFlags) password() (string, error) {
	if k.PasswordFile == "" {
		return os.Getenv(passwordEnv), nil
	}
	b, err := os.ReadFile(k.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("--kafka-sasl-password-file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// certPool reads the PEM certificates of file into a pool.
func certPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
