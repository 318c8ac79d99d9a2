package command

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kslog"
)

// errCommitAborted: the client ended a transaction it was asked to commit
// with an abort and reported success. Its events are not in the log.
var errCommitAborted = errors.New("the Kafka client ended the transaction with an abort instead of the commit asked of it")

// clientAbortedCommit begins the line franz-go logs when
// EndTransaction(TryCommit) issues an abort instead: under KIP-890 part 2,
// when it holds no partition as added to the transaction (it marks one only
// on a successful produce response) although records were produced. It then
// returns nil, as for a commit. A writer that believed it would answer
// commands as accepted whose events the log aborted, and the next
// rebuild of the partition would find its versions broken. This was seen
// once in CI on the embedded broker (an abort marker where the writer had
// committed; the next events built on the lost one): why the client held
// no partition as added after ProduceSync succeeded was not found, so the
// writer watches for the abort itself. TestCommitGuardSeesTheClientAbort
// pins the wording against the franz-go in go.mod.
const clientAbortedCommit = "no produce succeeded in this transaction"

// commitGuard is the writer producer's logger: it notices the client
// turning a commit into an abort, and passes the client's warnings and
// errors on to the writer's log.
type commitGuard struct {
	next    kgo.Logger
	aborted atomic.Bool
}

func newCommitGuard(log *slog.Logger) *commitGuard {
	return &commitGuard{next: kslog.New(log.With("component", "kafka"))}
}

// Level is info, the level of the line the guard watches for.
func (g *commitGuard) Level() kgo.LogLevel { return kgo.LogLevelInfo }

func (g *commitGuard) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if level == kgo.LogLevelInfo {
		if strings.HasPrefix(msg, clientAbortedCommit) {
			g.aborted.Store(true)
		}
		return // the client narrates every transaction at info
	}
	g.next.Log(level, msg, keyvals...)
}

// txnProducer is a transactional client whose commits its guard checks.
type txnProducer struct {
	*kgo.Client
	guard *commitGuard
}

// newTxnProducer opens a transactional client; its warnings and errors go
// to log.
func newTxnProducer(log *slog.Logger, opts ...kgo.Opt) (*txnProducer, error) {
	guard := newCommitGuard(log)
	cl, err := kgo.NewClient(append(opts, kgo.WithLogger(guard))...)
	if err != nil {
		return nil, err
	}
	return &txnProducer{Client: cl, guard: guard}, nil
}

// begin begins a transaction.
func (p *txnProducer) begin() error {
	if err := p.BeginTransaction(); err != nil {
		return err
	}
	p.guard.aborted.Store(false)
	return nil
}

// commit commits the transaction begun last, and fails with
// errCommitAborted when the client ended it with an abort instead.
func (p *txnProducer) commit(ctx context.Context) error {
	if err := p.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return err
	}
	if p.guard.aborted.Load() {
		return errCommitAborted
	}
	return nil
}
