package serve

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tally-oss/tally/internal/auth"
	"github.com/tally-oss/tally/internal/config"
)

// RunToken is `tally token issue`: it mints a bearer token signed with the
// HS256 key of --auth-key-file (or the key `tally serve` makes when given none) and
// prints it.
func RunToken(_ context.Context, args []string) error {
	const usage = "usage: tally token issue --key-file FILE --role ROLE [--store S1,S2] [--subject NAME] [--ttl 24h]"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprintln(os.Stderr, usage+"\n\nexample:\n  tally token issue --role pos --store S1\n\n`tally token issue -h` lists its flags.")
		return flag.ErrHelp
	}
	if len(args) == 0 || args[0] != "issue" {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("tally token issue", flag.ContinueOnError)
	var keyFile, role, stores, subject string
	var ttl time.Duration
	config.String(fs, &keyFile, "key-file", "data/auth/hs256.key", "the HS256 key the server verifies with (its --auth-key-file; tally serve without --auth-* flags keeps it under --data-dir/auth)")
	config.String(fs, &role, "role", "", "pos, ecommerce, warehouse, analyst or admin (comma-separated for several)")
	config.String(fs, &stores, "store", "", "comma-separated stores the token grants; * grants every store")
	config.String(fs, &subject, "subject", "", "who the token is for (default: role@stores); stored on every event it writes")
	config.Duration(fs, &ttl, "ttl", 24*time.Hour, "how long the token is valid")
	config.Usage(fs, "tally token issue --role ROLE [--store S1,S2] [--subject NAME] [--ttl 24h] [--key-file FILE]",
		"Mint a bearer token signed with the server's HS256 key.",
		`curl -H "Authorization: Bearer $(tally token issue --role pos --store S1)" ...`)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if role == "" {
		return errors.New("--role is required")
	}
	if ttl <= 0 {
		return fmt.Errorf("--ttl must be positive, got %v", ttl)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("read the key: %w", err)
	}
	var roles []auth.Role
	for _, r := range config.List(role) {
		roles = append(roles, auth.Role(r))
	}
	if subject == "" {
		subject = role + "@" + strings.ReplaceAll(stores, ",", "+")
	}
	tok, err := auth.Issue([]byte(strings.TrimSpace(string(key))), subject, roles, config.List(stores), ttl)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}
