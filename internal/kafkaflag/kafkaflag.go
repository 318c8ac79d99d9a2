// Package kafkaflag holds the flags every subcommand that reaches Kafka
// shares to reach a secured cluster (--kafka-tls, --kafka-tls-ca,
// --kafka-sasl-*), and turns them into a *kafka.Security. The SASL password
// is read from a file or the environment, never from a flag.
package kafkaflag

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/kafka"
)

// PasswordEnv holds the Kafka SASL password when no file does. It is not
// a flag, so the password never shows in a process listing.
const PasswordEnv = "TALLY_KAFKA_SASL_PASSWORD"

// Security are the flags that say how to reach a secured Kafka cluster:
// TLS and SASL.
type Security struct {
	TLS          bool
	TLSCA        string
	Mechanism    string
	User         string
	PasswordFile string
}

// Register defines the flags on fs.
func (k *Security) Register(fs *flag.FlagSet) {
	config.Bool(fs, &k.TLS, "kafka-tls", false, "connect to the Kafka brokers over TLS (verified against the system roots, or --kafka-tls-ca)")
	config.String(fs, &k.TLSCA, "kafka-tls-ca", "", "PEM CA certificates the Kafka brokers' certificates are verified against; implies --kafka-tls")
	config.String(fs, &k.Mechanism, "kafka-sasl-mechanism", "", "SASL mechanism to authenticate to Kafka with: SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN (PLAIN only over --kafka-tls); empty: none")
	config.String(fs, &k.User, "kafka-sasl-user", "", "SASL user name")
	config.String(fs, &k.PasswordFile, "kafka-sasl-password-file", "", "file holding the SASL password (a trailing newline is dropped); or set "+PasswordEnv)
}

// Enabled reports whether any of the flags is set.
func (k *Security) Enabled() bool {
	return k.TLS || k.TLSCA != "" || k.Mechanism != "" || k.User != "" || k.PasswordFile != ""
}

// Validate reports every problem with the flags. embedded says the process runs its own broker, which speaks
// plaintext without authentication.
func (k *Security) Validate(embedded bool) error {
	var errs []error
	if embedded && k.Enabled() {
		errs = append(errs, errors.New("--kafka-tls and --kafka-sasl-* apply to --kafka-brokers, not to the embedded broker"))
	}
	_, envSet := os.LookupEnv(PasswordEnv)
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
			errs = append(errs, fmt.Errorf("--kafka-sasl-mechanism needs --kafka-sasl-password-file or %s", PasswordEnv))
		}
		if k.PasswordFile != "" && envSet {
			errs = append(errs, fmt.Errorf("give the SASL password by --kafka-sasl-password-file or %s, not both", PasswordEnv))
		}
		if strings.EqualFold(k.Mechanism, kafka.Plain) && !k.TLS && k.TLSCA == "" {
			errs = append(errs, errors.New("--kafka-sasl-mechanism PLAIN sends the password as it is: it needs --kafka-tls"))
		}
	}
	return errors.Join(errs...)
}

// Kafka returns the Kafka clients' security, nil for plaintext. It reads
// the CA and password files.
func (k *Security) Kafka() (*kafka.Security, error) {
	if !k.Enabled() {
		return nil, nil
	}
	sec := &kafka.Security{}
	if k.TLS || k.TLSCA != "" {
		sec.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
		if k.TLSCA != "" {
			pool, err := config.CertPool(k.TLSCA)
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

func (k *Security) password() (string, error) {
	if k.PasswordFile == "" {
		return os.Getenv(PasswordEnv), nil
	}
	b, err := os.ReadFile(k.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("--kafka-sasl-password-file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
