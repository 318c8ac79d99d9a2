package domain_test

import (
	"go/build"
	"strings"
	"testing"
)

// The aggregate is pure because it cannot reach I/O: this package imports
// none of it, and the compiler keeps the kinds (package command) from
// adding it here.
func TestDomainImportsNoIO(t *testing.T) {
	pkg, err := build.Default.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []string{
		"net", "os", "net/http", "log/slog", "math/rand", "crypto/rand", "io/fs", "syscall", "database/sql",
		"github.com/twmb/franz-go", "github.com/jackc/pgx", "connectrpc.com/connect", "google.golang.org/grpc",
		"github.com/tally-oss/tally/internal",
	}
	// Everything else is refused too: a new import must be pure and added
	// here on purpose.
	pure := map[string]bool{
		"cmp": true, "errors": true, "fmt": true, "maps": true, "math": true, "slices": true, "strings": true, "time": true,
		"crypto/sha256": true, "encoding/binary": true,
	}
	if len(pkg.Imports) == 0 {
		t.Fatal("no imports found: is this the domain package?")
	}
	for _, imp := range pkg.Imports {
		for _, f := range forbidden {
			if imp == f || strings.HasPrefix(imp, f+"/") {
				t.Errorf("domain imports %s, which does I/O", imp)
			}
		}
		if !pure[imp] && !strings.HasPrefix(imp, "github.com/tally-oss/tally/gen/") && !strings.HasPrefix(imp, "google.golang.org/protobuf/") {
			t.Errorf("domain imports %s, which is not in the list of pure packages", imp)
		}
	}
}
