package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Security is how Tally's clients reach a secured Kafka cluster: TLS to the
// brokers and SASL authentication. A nil *Security (and the zero value) is
// plaintext without authentication: the embedded broker, a local cluster.
type Security struct {
	// TLS, when not nil, dials the brokers over TLS with this config.
	TLS *tls.Config
	// SASL, when not nil, authenticates every connection.
	SASL sasl.Mechanism
	// Hooks are added to every client made from Options with this
	// Security: the process's client metrics (ClientMetrics.Hook).
	Hooks []kgo.Hook
}

// SASL mechanisms Tally speaks.
const (
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
	Plain       = "PLAIN"
)

// NewSASL returns the mechanism named (ScramSHA256, ScramSHA512 or Plain,
// in any case) for user and password.
func NewSASL(mechanism, user, password string) (sasl.Mechanism, error) {
	var errs []error
	if user == "" {
		errs = append(errs, errors.New("a SASL user is required"))
	}
	if password == "" {
		errs = append(errs, errors.New("a SASL password is required"))
	}
	var m sasl.Mechanism
	switch strings.ToUpper(mechanism) {
	case ScramSHA256:
		m = scram.Auth{User: user, Pass: password}.AsSha256Mechanism()
	case ScramSHA512:
		m = scram.Auth{User: user, Pass: password}.AsSha512Mechanism()
	case Plain:
		m = plain.Auth{User: user, Pass: password}.AsMechanism()
	default:
		errs = append(errs, fmt.Errorf("unknown SASL mechanism %q (want %s, %s or %s)", mechanism, ScramSHA256, ScramSHA512, Plain))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}
