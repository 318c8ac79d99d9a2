package serve

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/internal/config"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/kafkaflag"
)

// RunKafkaACLs is `tally kafka-acls`: it prints the kafka-acls.sh commands
// that grant a principal what Tally's roles need on a cluster with an
// authorizer, or with --apply creates those ACLs itself, authenticating as
// an administrator by the --kafka-sasl-* flags.
func RunKafkaACLs(ctx context.Context, args []string) error {
	out := os.Stdout
	fs := flag.NewFlagSet("tally kafka-acls", flag.ContinueOnError)
	var principal, brokers string
	var apply bool
	var sec kafkaflag.Security
	config.String(fs, &principal, "principal", "", `the principal Tally's roles authenticate as, "User:tally" (a bare name gets User:)`)
	config.String(fs, &brokers, "kafka-brokers", "", "comma-separated Kafka bootstrap brokers (printed into the commands; --apply connects to them)")
	config.Bool(fs, &apply, "apply", false, "create the ACLs through the Kafka admin API instead of printing commands; the --kafka-sasl-* credentials must be allowed to alter ACLs")
	sec.Register(fs)
	config.Usage(fs, "tally kafka-acls --principal User:tally [--kafka-brokers HOST:9092] [--apply --kafka-sasl-mechanism SCRAM-SHA-512 --kafka-sasl-user admin ...]",
		"Print (or --apply) the Kafka ACLs a Tally principal needs on a cluster with an authorizer.",
		"tally kafka-acls --principal User:tally --kafka-brokers kafka-1:9093 | sh")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var errs []error
	if principal == "" {
		errs = append(errs, errors.New("--principal is required"))
	}
	if apply && brokers == "" {
		errs = append(errs, errors.New("--apply needs --kafka-brokers"))
	}
	if err := sec.Validate(false); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if !apply {
		bootstrap := brokers
		if bootstrap == "" {
			bootstrap = "BROKER:9092"
		}
		for _, c := range kafka.ACLCommands(principal, bootstrap) {
			fmt.Fprintln(out, c)
		}
		return nil
	}
	ks, err := sec.Kafka()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(kafka.Options(config.List(brokers), ks, nil)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := kafka.CreateACLs(ctx, kadm.NewClient(cl), principal)
	if err != nil {
		return fmt.Errorf("after %d ACLs created: %w", n, err)
	}
	fmt.Fprintf(out, "created %d ACLs for %s\n", n, principal)
	return nil
}
