package kafka_test

import (
	"strings"
	"testing"

	"github.com/tally-oss/tally/internal/kafka"
)

// The printed commands are kafka-acls.sh's own spelling, so an operator
// can pipe them to a shell.
func TestACLCommandsAreKafkaACLsInvocations(t *testing.T) {
	got := strings.Join(kafka.ACLCommands("tally", "k1:9093"), "\n")
	want := `kafka-acls.sh --bootstrap-server k1:9093 --add --allow-principal User:tally --operation Create --operation Describe --operation DescribeConfigs --operation Read --operation Write --topic tally.inventory. --resource-pattern-type prefixed
kafka-acls.sh --bootstrap-server k1:9093 --add --allow-principal User:tally --operation Read --operation Describe --group tally- --resource-pattern-type prefixed
kafka-acls.sh --bootstrap-server k1:9093 --add --allow-principal User:tally --operation Write --operation Describe --transactional-id tally- --resource-pattern-type prefixed`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
