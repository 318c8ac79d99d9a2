package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// Name prefixes of what Tally uses on a cluster, which its ACLs grant.
const (
	// TopicPrefix starts the name of every topic Tally reads or writes:
	// EventsTopic, SnapshotsTopic, DLQTopic.
	TopicPrefix = "tally.inventory."
	// IDPrefix starts every consumer group (tally-writers,
	// tally-projector-postgres, tally-projector-bigquery) and transactional
	// id (tally-writer-<p>, tally-snapshot-<p>) Tally uses. A group renamed
	// by a flag needs its own ACL unless it keeps the prefix.
	IDPrefix = "tally-"
)

// Grant is a set of permissions on the resources of a kind whose names
// start with a prefix.
type Grant struct {
	Resource   string // "topic", "group" or "transactional-id"
	Prefix     string
	Operations []kadm.ACLOperation
	Why        string
}

// Grants are the ACLs a principal running any of Tally's roles needs on a
// cluster with an authorizer: nothing beyond its own topics, groups and
// transactional ids. No cluster permission: idempotent producers (the
// dead-letter producer) need Write on a topic since Kafka 3.0 (KIP-679),
// not IdempotentWrite on the cluster. DESIGN.md, "Kafka ACLs", lists them for operators;
// `tally kafka-acls` prints or creates them.
func Grants() []Grant {
	return []Grant{
		{"topic", TopicPrefix, []kadm.ACLOperation{kadm.OpCreate, kadm.OpDescribe, kadm.OpDescribeConfigs, kadm.OpRead, kadm.OpWrite},
			"the events, snapshots and dead-letter topics: created at start when missing (Create; a cluster whose topics an operator makes does without it), their retention checked (DescribeConfigs), written and read"},
		{"group", IDPrefix, []kadm.ACLOperation{kadm.OpRead, kadm.OpDescribe},
			"the writers' group, which assigns partitions to command instances, and the projectors' groups"},
		{"transactional-id", IDPrefix, []kadm.ACLOperation{kadm.OpWrite, kadm.OpDescribe},
			"the fenced transactional writer of each partition and its snapshot producer"},
	}
}

// ACLBuilders returns Grants for principal ("User:name"; a bare name gets
// the User: prefix) as kadm builders, ready for kadm.Client.CreateACLs.
func ACLBuilders(principal string) []*kadm.ACLBuilder {
	principal = userPrincipal(principal)
	var bs []*kadm.ACLBuilder
	for _, g := range Grants() {
		b := kadm.NewACLs().Allow(principal).AllowHosts().Operations(g.Operations...)
		switch g.Resource {
		case "topic":
			b = b.Topics(g.Prefix)
		case "group":
			b = b.Groups(g.Prefix)
		case "transactional-id":
			b = b.TransactionalIDs(g.Prefix)
		}
		bs = append(bs, b.ResourcePatternType(kadm.ACLPatternPrefixed))
	}
	return bs
}

// CreateACLs creates Grants for principal through adm, whose client must
// be allowed to alter the cluster's ACLs, and returns how many it created.
func CreateACLs(ctx context.Context, adm *kadm.Client, principal string) (int, error) {
	n := 0
	var errs []error
	for _, b := range ACLBuilders(principal) {
		if err := b.ValidateCreate(); err != nil {
			return n, err
		}
		results, err := adm.CreateACLs(ctx, b)
		if err != nil {
			return n, fmt.Errorf("create ACLs: %w", err)
		}
		for _, r := range results {
			if r.Err != nil {
				errs = append(errs, fmt.Errorf("ACL %s %s %s on %s %q: %w", r.Principal, r.Permission, r.Operation, r.Type, r.Name, r.Err))
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}

// ACLCommands returns the kafka-acls.sh invocations that create Grants for
// principal, for clusters administered with Kafka's own tools.
func ACLCommands(principal, bootstrap string) []string {
	principal = userPrincipal(principal)
	var out []string
	for _, g := range Grants() {
		var ops []string
		for _, op := range g.Operations {
			ops = append(ops, "--operation "+opName(op))
		}
		out = append(out, fmt.Sprintf("kafka-acls.sh --bootstrap-server %s --add --allow-principal %s %s --%s %s --resource-pattern-type prefixed",
			bootstrap, principal, strings.Join(ops, " "), g.Resource, g.Prefix))
	}
	return out
}

// opName is kafka-acls.sh's name of op (Describe, DescribeConfigs, ...).
func opName(op kadm.ACLOperation) string {
	s := op.String() // DESCRIBE_CONFIGS
	var b strings.Builder
	for _, w := range strings.Split(strings.ToLower(s), "_") {
		if w != "" {
			b.WriteString(strings.ToUpper(w[:1]) + w[1:])
		}
	}
	return b.String()
}

// userPrincipal gives a bare user name Kafka's "User:" principal type.
func userPrincipal(p string) string {
	if strings.Contains(p, ":") {
		return p
	}
	return "User:" + p
}

// IsAuthorization reports whether err is Kafka refusing an operation to
// Tally's principal: an ACL is missing, which no retry fixes until an
// operator grants it (`tally kafka-acls`).
func IsAuthorization(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.GroupAuthorizationFailed) ||
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed) || errors.Is(err, kerr.ClusterAuthorizationFailed)
}

// ACLHint is the advice logged beside an authorization error.
const ACLHint = "Kafka refused this principal an operation: grant the ACLs `tally kafka-acls --principal User:<name>` prints (DESIGN.md, \"Kafka ACLs\")"
