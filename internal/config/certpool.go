package config

import (
	"crypto/x509"
	"fmt"
	"os"
)

// CertPool reads the PEM certificates of file (a flag's CA file) into a
// pool; a file without one is an error.
func CertPool(file string) (*x509.CertPool, error) {
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
