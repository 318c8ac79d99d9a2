package command

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tally-oss/tally/internal/backoff"
	"github.com/tally-oss/tally/internal/kafka"
	"github.com/tally-oss/tally/internal/server"
)

// WritersGroup is the default consumer group of the command instances.
const WritersGroup = "tally-writers"

// ServiceConfig configures the write side of one instance.
type ServiceConfig struct {
	WriterConfig
	// Group is the consumer group command instances join to be assigned
	// partitions. Default "tally-writers".
	Group string
	// Partitions is the events topic's partition count when this instance
	// creates it. Default 6.
	Partitions int32
	// Advertise is this instance's RPC address, told to clients that reach
	// it for a partition another instance writes.
	Advertise string
	// ForwardTLS, when not nil, is the client config commands are
	// forwarded to other instances with, over TLS (https): the peers'
	// trusted roots, and this instance's certificate when they require
	// one. nil forwards over h2c, for instances that serve without TLS.
	// Every instance of a group must agree.
	ForwardTLS *tls.Config
	// AssignWait bounds how long a command waits, when its deadline does
	// not say, for its partition's writer while partitions are being
	// (re)assigned: for a writer opening here, or for the group to name an
	// owner. Default 10s.
	AssignWait time.Duration
	// SessionTimeout is how long the group waits for a silent instance (a
	// SIGKILL, a pause) before its partitions move to the others: the
	// bound of a takeover. Default 6s, the least a Kafka broker accepts by
	// default (group.min.session.timeout.ms); the embedded broker accepts
	// 1s.
	SessionTimeout time.Duration
	// MaxRequestBytes is the request limit of the instances' listeners
	// (server.WithMaxRequestBytes), which every instance must share: the
	// Apply batches that carry forwarded calls stay under it. Default
	// server.DefaultMaxRequestBytes.
	MaxRequestBytes int
}

func (c *ServiceConfig) defaults() {
	c.WriterConfig.defaults()
	if c.Group == "" {
		c.Group = WritersGroup
	}
	if c.Partitions <= 0 {
		c.Partitions = 6
	}
	if c.AssignWait <= 0 {
		c.AssignWait = 10 * time.Second
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 6 * time.Second
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = server.DefaultMaxRequestBytes
	}
}

// Validate reports every problem with the configuration.
func (c *ServiceConfig) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("command: no Kafka brokers"))
	}
	if c.Partitions < 0 || c.Partitions > 10000 {
		errs = append(errs, fmt.Errorf("command: partitions must be 1 to 10000, got %d", c.Partitions))
	}
	return errors.Join(errs...)
}

// Service routes commands to the partition writers this instance owns.
// Instances share a consumer group over the events topic only to be assigned
// partitions; they never consume through it.
type Service struct {
	cfg        ServiceConfig
	log        *slog.Logger
	partitions int32
	group      *kgo.Client

	owners ownerCache

	mu       sync.Mutex
	ours     map[int32]bool // assigned here by the group, writer open or not
	writers  map[int32]*Writer
	opening  map[int32]context.CancelFunc
	openErr  map[int32]error // why a partition's writer last failed to open
	changed  chan struct{}   // closed and replaced whenever writers changes
	closed   bool
	wg       sync.WaitGroup
	rootCtx  context.Context
	rootStop context.CancelFunc
}

// NewService creates the events topic if missing and joins the writers'
// group. Writers open in the background as partitions are assigned.
func NewService(ctx context.Context, cfg ServiceConfig) (*Service, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "command"),
		ours:    map[int32]bool{},
		writers: map[int32]*Writer{},
		opening: map[int32]context.CancelFunc{},
		openErr: map[int32]error{},
		changed: make(chan struct{}),
	}
	s.rootCtx, s.rootStop = context.WithCancel(context.Background())
	admCl, err := kgo.NewClient(kafka.Options(cfg.Brokers, cfg.Kafka, nil)...)
	if err != nil {
		return nil, err
	}
	n, err := kafka.EnsureTopic(ctx, kadm.NewClient(admCl), cfg.Topic, cfg.Partitions, kafka.EventTopicConfigs())
	admCl.Close()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if n != cfg.Partitions {
		s.log.Warn("events topic exists with a different partition count; using it", "topic", cfg.Topic, "partitions", n, "configured", cfg.Partitions)
	}
	s.partitions = n
	clientID := "tally-command"
	if cfg.Advertise != "" {
		clientID += "@" + cfg.Advertise
	}
	s.group, err = kgo.NewClient(append(kafka.Options(cfg.Brokers, cfg.Kafka, cfg.Logger),
		kgo.ClientID(clientID),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.RebalanceTimeout(RebalanceTimeout(cfg.SessionTimeout)),
		// A survivor learns of a rebalance at its next heartbeat.
		kgo.HeartbeatInterval(max(cfg.SessionTimeout/8, 100*time.Millisecond)),
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(s.assigned),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.OnPartitionsLost(s.revoked),
	)...)
	if err != nil {
		return nil, err
	}
	// Membership only: the writers read the log themselves.
	s.group.PauseFetchTopics(cfg.Topic)
	// The group is joined by the client's first poll; nothing is ever
	// fetched because the topic is paused.
	go func() {
		var logged time.Time
		for {
			f := s.group.PollFetches(s.rootCtx)
			if f.IsClientClosed() || s.rootCtx.Err() != nil {
				return
			}
			// The group's own errors (a missing ACL, the cluster gone)
			// come back here; say so, at most every half minute.
			if err := f.Err0(); err != nil && time.Since(logged) > 30*time.Second {
				logged = time.Now()
				if kafka.IsAuthorization(err) {
					s.log.Error("cannot join the writers' group: no partition is owned here", "group", cfg.Group, "error", err, "hint", kafka.ACLHint)
				} else {
					s.log.Warn("writers' group poll failed", "group", cfg.Group, "error", err)
				}
			}
		}
	}()
	return s, nil
}

func (s *Service) assigned(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.log.Info("partitions assigned", "partitions", m[s.cfg.Topic])
	s.cfg.Metrics.rebalanced("assigned", len(m[s.cfg.Topic]))
	s.owners.forget()
	for _, p := range m[s.cfg.Topic] {
		s.ours[p] = true
		if s.writers[p] != nil || s.opening[p] != nil {
			continue
		}
		ctx, cancel := context.WithCancel(s.rootCtx)
		s.opening[p] = cancel
		s.wg.Add(1)
		go s.open(ctx, p)
	}
}

// open takes over partition p, retrying until it succeeds or is revoked.
func (s *Service) open(ctx context.Context, p int32) {
	defer s.wg.Done()
	b := backoff.Backoff{Min: 200 * time.Millisecond}
	for {
		w, err := OpenWriter(ctx, s.cfg.WriterConfig, p)
		if err == nil {
			s.mu.Lock()
			if _, still := s.opening[p]; !still || s.closed {
				s.mu.Unlock()
				_ = w.Close(context.Background())
				return
			}
			delete(s.opening, p)
			delete(s.openErr, p)
			s.writers[p] = w
			s.notify()
			s.mu.Unlock()
			s.wg.Add(1)
			go s.watch(p, w)
			return
		}
		if ctx.Err() != nil {
			return
		}
		// A log this writer cannot trust (a version gap) will not heal by
		// itself: look again now and then, not every few seconds.
		var ooo *OutOfOrderError
		if b.Max = 5 * time.Second; errors.As(err, &ooo) {
			b.Max = time.Minute
		}
		d := b.Next()
		if kafka.IsAuthorization(err) {
			s.log.Error("opening partition writer failed", "partition", p, "error", err, "retry_in", d, "hint", kafka.ACLHint)
		} else {
			s.log.Warn("opening partition writer failed", "partition", p, "error", err, "retry_in", d)
		}
		s.mu.Lock()
		s.openErr[p] = err
		s.mu.Unlock()
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return
		}
	}
}

// watch forgets a writer that stopped on its own (fenced). The writer has
// already answered its queue and dropped its state (Writer.stop), so
// forgetting it leaves nothing behind.
func (s *Service) watch(p int32, w *Writer) {
	defer s.wg.Done()
	<-w.Done()
	s.mu.Lock()
	if s.writers[p] == w {
		delete(s.writers, p)
		s.notify()
	}
	s.mu.Unlock()
}

func (s *Service) revoked(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
	s.log.Info("partitions revoked", "partitions", m[s.cfg.Topic])
	s.cfg.Metrics.rebalanced("revoked", len(m[s.cfg.Topic]))
	s.owners.forget()
	s.mu.Lock()
	var closing []*Writer
	for _, p := range m[s.cfg.Topic] {
		delete(s.ours, p)
		if cancel := s.opening[p]; cancel != nil {
			cancel()
			delete(s.opening, p)
		}
		delete(s.openErr, p)
		if w := s.writers[p]; w != nil {
			closing = append(closing, w)
			delete(s.writers, p)
		}
	}
	s.notify()
	s.mu.Unlock()
	// Drain before the group moves on, so the next owner starts from a
	// log that has everything we accepted.
	for _, w := range closing {
		_ = w.Close(ctx)
	}
}

// notify wakes commands waiting for a writer. Call with s.mu held.
func (s *Service) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// writer returns the local writer of partition p. When another instance
// writes p it returns a *NotOwnerError naming it at once; while p is being
// (re)assigned (opening here, or no owner known yet) it waits, up to ctx's
// deadline or AssignWait.
func (s *Service) writer(ctx context.Context, p int32) (*Writer, error) {
	// Give up a little before the caller does, so it hears why.
	wait := s.cfg.AssignWait
	if d, ok := ctx.Deadline(); ok {
		left := time.Until(d)
		wait = min(wait, left-min(left/10, 250*time.Millisecond))
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	// How often to ask the group again while no owner is known.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	sameAddress := false
	for {
		s.mu.Lock()
		w, closed, changed, mine := s.writers[p], s.closed, s.changed, s.ours[p]
		openErr := s.openErr[p]
		s.mu.Unlock()
		if closed {
			return nil, ErrShuttingDown
		}
		if w != nil {
			return w, nil
		}
		if !mine {
			owner := s.owners.lookup(ctx, s, p)
			if owner != "" && owner != s.cfg.Advertise {
				return nil, &NotOwnerError{Partition: p, Owner: owner}
			}
			// The group names this instance's address for a partition it
			// does not hold: a view from before a rebalance, or two
			// instances sharing --advertise (then it lasts).
			sameAddress = owner != ""
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			switch {
			case mine && openErr != nil:
				// Ours, but it cannot open: say why, not "ask another".
				return nil, fmt.Errorf("%w: partition %d: %w", ErrUnavailable, p, openErr)
			case mine:
				return nil, &UnavailableError{Reason: fmt.Sprintf("partition %d is being rebuilt from the log here", p)}
			case sameAddress:
				s.owners.warnSameAddress(s.log, p, s.cfg.Advertise)
				return nil, &UnavailableError{Reason: fmt.Sprintf("partition %d is written by another instance that advertises this instance's address %s: give each instance its own --advertise (or it is this instance's previous run, killed during a rebalance, which the group drops within %s)", p, s.cfg.Advertise, RebalanceTimeout(s.cfg.SessionTimeout))}
			}
			return nil, &NotOwnerError{Partition: p}
		}
	}
}

// ownerCache remembers which instance writes each partition, as the group
// last said, for a short while: a command for another instance's partition
// must not cost a group lookup.
type ownerCache struct {
	mu         sync.Mutex
	at         time.Time
	owners     map[int32]string
	refreshing chan struct{} // closed when the lookup under way ends
	warnedAt   time.Time
}

// ownersTTL is how long a lookup is trusted; a rebalance here, or a
// forward that fails, forgets it sooner.
const ownersTTL = 2 * time.Second

func (c *ownerCache) lookup(ctx context.Context, s *Service, p int32) string {
	c.mu.Lock()
	fresh := c.owners != nil && time.Since(c.at) <= ownersTTL && (c.owners[p] != "" || time.Since(c.at) <= 100*time.Millisecond)
	if fresh {
		defer c.mu.Unlock()
		return c.owners[p]
	}
	// One lookup at a time, outside the lock; the others wait for it.
	if wait := c.refreshing; wait != nil {
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ""
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.owners[p]
	}
	done := make(chan struct{})
	c.refreshing = done
	c.mu.Unlock()
	owners, err := s.describeOwners(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.owners, c.at = owners, time.Now()
	}
	c.refreshing = nil
	close(done)
	return c.owners[p]
}

// forget drops what the group said: it has changed.
func (c *ownerCache) forget() {
	c.mu.Lock()
	c.owners = nil
	c.mu.Unlock()
}

func (c *ownerCache) warnSameAddress(log *slog.Logger, p int32, addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.warnedAt) > time.Minute {
		c.warnedAt = time.Now()
		log.Error("another instance advertises this instance's address: commands for its partitions cannot be forwarded; give each instance its own --advertise (unless it is this instance's previous run, killed during a rebalance: the group drops it within the rebalance timeout)", "partition", p, "advertise", addr)
	}
}

// ForgetOwners makes the next command ask the group who writes what: a
// forward to the owner it named failed.
func (s *Service) ForgetOwners() { s.owners.forget() }

// describeOwners asks the group which member writes each partition, by the
// address it advertises.
func (s *Service) describeOwners(ctx context.Context) (map[int32]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	owners, stable, err := Writers(ctx, kadm.NewClient(s.group), s.cfg.Group, s.cfg.Topic)
	if err == nil && !stable {
		// Assignments of a rebalance under way are not the owners yet.
		err = fmt.Errorf("writers' group %s is rebalancing", s.cfg.Group)
	}
	return owners, err
}

// RebalanceTimeout is how long the writers' group waits, in a rebalance,
// for its members to rejoin and take their assignments: max(10 s, five
// session timeouts), not the client's default 60 s. An instance killed in
// the middle of a rebalance (after joining, before its SyncGroup) holds
// the partitions it was given until then (the embedded broker expires it
// only by this timeout, not by its session's): the longest takeover. A
// revoke only drains the writers' last group commit, well within it; a
// writer rebuilds its state after the rebalance, outside it.
func RebalanceTimeout(session time.Duration) time.Duration {
	return max(10*time.Second, 5*session)
}

// Writers asks the writers' group which instance writes each partition of
// topic, by the address it advertises (in its client id), and whether the
// group is stable (while it rebalances, the assignments are not final).
func Writers(ctx context.Context, adm *kadm.Client, group, topic string) (owners map[int32]string, stable bool, err error) {
	groups, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return nil, false, err
	}
	g := groups[group]
	if g.Err != nil {
		return nil, false, g.Err
	}
	owners = map[int32]string{}
	for _, m := range g.Members {
		ca, ok := m.Assigned.AsConsumer()
		if !ok {
			continue
		}
		_, addr, _ := strings.Cut(m.ClientID, "@")
		for _, t := range ca.Topics {
			if t.Topic == topic {
				for _, q := range t.Partitions {
					owners[q] = addr
				}
			}
		}
	}
	return owners, g.State == "Stable", nil
}

// Do decides and commits one command.
func (s *Service) Do(ctx context.Context, cmd *Command) (*Result, error) {
	w, err := s.writer(ctx, kafka.PartitionFor(cmd.SKU, s.partitions))
	if err != nil {
		return nil, err
	}
	return w.Do(ctx, cmd)
}

// Outcome is the result or error of one command of a batch.
type Outcome struct {
	Result *Result
	Err    error
}

// DoBatch runs commands (nil entries are skipped and keep their place) and
// returns one outcome per command, in order. Commands for one SKU are
// applied in the order given; commands for different partitions commit in
// parallel.
func (s *Service) DoBatch(ctx context.Context, cmds []*Command) []Outcome {
	out := make([]Outcome, len(cmds))
	byPartition := map[int32][]*request{}
	ch := make(chan reply, len(cmds))
	for i, c := range cmds {
		if c == nil {
			continue
		}
		p := kafka.PartitionFor(c.SKU, s.partitions)
		byPartition[p] = append(byPartition[p], &request{ctx: ctx, cmd: c, done: ch, idx: i})
	}
	// Each partition's writer is looked for at once: one being rebuilt
	// (a takeover) must not hold up the others' commands.
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		waiting int
	)
	for p, reqs := range byPartition {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w, err := s.writer(ctx, p)
			if err == nil {
				err = w.submit(reqs)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				for _, r := range reqs {
					out[r.idx].Err = err
				}
				return
			}
			waiting += len(reqs)
		}()
	}
	wg.Wait()
	var replays []reply // retries of commands accepted before, answered from the log
	defer func() {
		for _, r := range replays {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := s.cfg.WriterConfig.readResult(ctx, r.from)
				out[r.idx] = Outcome{Result: res, Err: err}
			}()
		}
		wg.Wait()
	}()
	for ; waiting > 0; waiting-- {
		select {
		case r := <-ch:
			out[r.idx] = Outcome{Result: r.res, Err: r.err}
			if r.from != nil {
				replays = append(replays, r)
			}
		case <-ctx.Done():
			for i := range out {
				if cmds[i] != nil && out[i].Result == nil && out[i].Err == nil {
					out[i].Err = ctx.Err()
				}
			}
			return out
		}
	}
	return out
}

// Close stops taking commands, drains and closes every writer, and leaves
// the group.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for p, cancel := range s.opening {
		cancel()
		delete(s.opening, p)
	}
	writers := s.writers
	s.writers = map[int32]*Writer{}
	s.notify()
	s.mu.Unlock()
	var errs []error
	for _, w := range writers {
		errs = append(errs, w.Close(ctx))
	}
	s.rootStop()
	s.group.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}
