package command

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
	"github.com/tally-oss/tally/gen/tally/inventory/v1/inventoryv1connect"
	"github.com/tally-oss/tally/internal/backoff"
)

// Forwarding: any instance takes any command. One for a partition another
// instance writes is sent on to that instance, once (a forwarded call is
// never forwarded again: it carries forwardedHeader), over the same
// CommandService API with the caller's deadline, and the owner's answer,
// result or error, is relayed unchanged. When the owner cannot be reached
// or no longer writes the partition (a rebalance), the call waits and asks
// the group again, until its deadline: the command_id makes the retry safe,
// since an owner that wrote the command before failing answers the retry
// "replayed".

// forwardedHeader marks a call forwarded by another instance; its value is
// that instance's address.
const forwardedHeader = "Tally-Forwarded-By"

// authorizationHeader carries the caller's bearer token, which a forwarded
// call passes on so the owner authenticates and authorizes it again.
const authorizationHeader = "Authorization"

// forwardWait bounds the forwarding of a call without a deadline.
const forwardWait = 15 * time.Second

// forwarder holds the clients of the other instances.
type forwarder struct {
	root    context.Context // ends when the service closes: batches in flight stop
	self    string
	scheme  string // "http://" (h2c) or "https://"
	http    *http.Client
	metrics *Metrics
	mu      sync.Mutex
	clients map[string]any // owner + procedure → *connect.Client[Req, Resp]
	pipes   map[string]*pipe
	// batchBytes bounds the encoded commands of a pipe's Apply: the
	// owner's request limit (ServiceConfig.MaxRequestBytes).
	batchBytes int
}

// newForwarder forwards over h2c, or over TLS with tlsConfig when it is not
// nil (the instances serve TLS); batchBytes bounds a forwarded batch.
func newForwarder(root context.Context, self string, tlsConfig *tls.Config, m *Metrics, batchBytes int) *forwarder {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 256
	t.DialContext = (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	// HTTP/2 only (h2c, or negotiated over TLS): calls to one owner share
	// a connection instead of one connection per call in flight.
	t.Protocols = new(http.Protocols)
	scheme := "http://"
	if tlsConfig != nil {
		scheme = "https://"
		t.TLSClientConfig = tlsConfig.Clone()
		t.Protocols.SetHTTP2(true)
	} else {
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	// An owner whose host vanished without a reset is found out in
	// seconds, not when TCP gives up.
	t.HTTP2 = &http.HTTP2Config{SendPingTimeout: 2 * time.Second, PingTimeout: 2 * time.Second}
	return &forwarder{root: root, self: self, scheme: scheme, http: &http.Client{Transport: t}, metrics: m, clients: map[string]any{}, pipes: map[string]*pipe{},
		batchBytes: batchBytes}
}

// client returns the connect client of procedure at owner.
func client[Req, Resp any](f *forwarder, owner, procedure string) *connect.Client[Req, Resp] {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := owner + procedure
	if c, ok := f.clients[key]; ok {
		return c.(*connect.Client[Req, Resp])
	}
	// No gzip between instances: on a local network it costs more CPU
	// than the bytes it saves.
	c := connect.NewClient[Req, Resp](f.http, f.scheme+owner+procedure, connect.WithAcceptCompression("gzip", nil, nil))
	f.clients[key] = c
	return c
}

// forwarded reports whether a call came from another instance.
func forwarded(h http.Header) bool { return h.Get(forwardedHeader) != "" }

// retryable: the owner did not take the call (unreachable, shutting down,
// or not the owner any more); asking the group again may find the right
// one. Any other answer is the owner's and is relayed.
func retryable(err error) bool {
	var oa ownerAnswer
	if errors.As(err, &oa) {
		return oa.err.Code() == connect.CodeUnavailable
	}
	return connect.CodeOf(err) == connect.CodeUnavailable || !connect.IsWireError(err)
}

// ownerAnswer is an owner's error outcome for a forwarded command, as the
// error it would have answered the call with.
type ownerAnswer struct{ err *connect.Error }

func (a ownerAnswer) Error() string { return a.err.Error() }
func (a ownerAnswer) Unwrap() error { return a.err }

// call sends req to owner's procedure, once.
func call[Req, Resp any](ctx context.Context, f *forwarder, owner, procedure, rpc, authz string, req *Req) (*connect.Response[Resp], error) {
	r := connect.NewRequest(req)
	r.Header().Set(forwardedHeader, f.self)
	if authz != "" {
		r.Header().Set(authorizationHeader, authz) // the caller's credentials, passed on once
	}
	start := time.Now()
	resp, err := client[Req, Resp](f, owner, procedure).CallUnary(ctx, r)
	result := "ok"
	switch {
	case err != nil && retryable(err):
		result = "retried"
	case err != nil:
		result = "error"
	}
	f.metrics.forward(rpc, result, time.Since(start))
	return resp, err
}

// withForwardDeadline bounds the forwarding of a call: by forwardWait when
// the call has no deadline, else a little before its deadline, so the
// caller still hears why it failed (UNAVAILABLE and the reason) rather
// than only that its deadline passed.
func withForwardDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		return context.WithTimeout(ctx, forwardWait)
	}
	margin := min(time.Until(d)/10, 250*time.Millisecond)
	return context.WithDeadline(ctx, d.Add(-margin))
}

// unavailableAfter is the error of a call whose forwarding did not succeed
// by its deadline: the last reason, and that nothing is known to be applied.
func unavailableAfter(ctx context.Context, last error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return connect.NewError(connect.CodeCanceled, errors.New("canceled"))
	}
	if last == nil {
		last = ctx.Err()
	}
	return connect.NewError(connect.CodeUnavailable, fmt.Errorf("the instance writing this SKU's partition could not take the command before the deadline (%v); retry with the same command_id", last))
}

// Forwarded unary calls travel in Apply batches: each owner has a pipe
// with one batch in flight at a time; the calls queued meanwhile go in the
// next (at most pipeBatch), as the writer's group commit does with its
// transactions. A call that finds the pipe idle leaves at once. An Apply
// costs about what one call does, so a forwarded command costs a fraction
// of a second RPC (BenchmarkInstances/3: one batch in flight did better
// than four or sixty-four). Each command's outcome is its call's answer:
// errorOf of an error outcome is the error the owner would have answered
// the call with.
const (
	pipeBatch   = MaxBatchCommands
	pipeSenders = 1
	pipeQueue   = 16384 // calls waiting for an owner, at most
)

// pipe is the forwarded calls queued for one owner.
type pipe struct {
	f       *forwarder
	owner   string
	authz   string // the callers' Authorization header
	key     string // in f.pipes
	mu      sync.Mutex
	queue   []*piped
	senders int
}

// piped is one forwarded call waiting in a pipe.
type piped struct {
	ctx      context.Context // the caller's: once done, the call is not sent
	cmd      *inventoryv1.Command
	size     int // of cmd in an ApplyRequest, bytes
	rpc      string
	deadline time.Time
	queued   time.Time
	done     chan pipedReply // buffered: a caller that gave up is not waited for
}

type pipedReply struct {
	outcome *inventoryv1.CommandOutcome
	err     error // the Apply failed as a whole
}

// pipe returns the pipe to owner of the calls made with the credentials
// authz: a batch carries one caller's credentials, which the owner checks
// again.
func (f *forwarder) pipe(owner, authz string) *pipe {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := owner + "\x00" + authz
	p := f.pipes[key]
	if p == nil {
		p = &pipe{f: f, owner: owner, authz: authz, key: key}
		f.pipes[key] = p
	}
	return p
}

// call queues cmd for the owner and waits for its outcome, or ctx.
func (p *pipe) call(ctx context.Context, rpc string, cmd *inventoryv1.Command) (*inventoryv1.CommandOutcome, error) {
	d, ok := ctx.Deadline()
	if !ok {
		d = time.Now().Add(forwardWait)
	}
	c := &piped{ctx: ctx, cmd: cmd, size: appliedSize(cmd), rpc: rpc, deadline: d, queued: time.Now(), done: make(chan pipedReply, 1)}
	p.mu.Lock()
	if len(p.queue) >= pipeQueue {
		p.mu.Unlock()
		return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("%d calls already wait to be forwarded to %s", pipeQueue, p.owner))
	}
	p.queue = append(p.queue, c)
	start := p.senders < pipeSenders
	if start {
		p.senders++
	}
	p.mu.Unlock()
	if start {
		go p.send()
	}
	select {
	case r := <-c.done:
		return r.outcome, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// send sends batches of the queue until it is empty.
func (p *pipe) send() {
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.senders--
			if p.senders == 0 {
				// Idle: forget it, so owners that come and go (new
				// addresses) leave nothing behind. A caller holding it
				// still gets a sender.
				p.f.mu.Lock()
				if p.f.pipes[p.key] == p {
					delete(p.f.pipes, p.key)
				}
				p.f.mu.Unlock()
			}
			p.mu.Unlock()
			return
		}
		n := p.batchLen()
		batch := slices.Clone(p.queue[:n])
		p.queue = slices.Delete(p.queue, 0, n)
		p.mu.Unlock()
		// Calls whose callers gave up are not sent: they were answered.
		batch = slices.DeleteFunc(batch, func(c *piped) bool { return c.ctx.Err() != nil })
		if len(batch) > 0 {
			p.sendBatch(batch)
		}
	}
}

// batchLen is how many calls at the head of the queue go in the next
// Apply: at most pipeBatch, and no more than the owner's request limit
// takes (each call alone is under it, as its own request was; many large
// ones together need not be). Call with p.mu held.
func (p *pipe) batchLen() int {
	n, size := 0, 0
	for n < len(p.queue) && n < pipeBatch {
		size += p.queue[n].size
		if n > 0 && size > p.f.batchBytes {
			break
		}
		n++
	}
	return n
}

// appliedSize is the bytes cmd takes in an ApplyRequest: tag, length and
// message.
func appliedSize(cmd *inventoryv1.Command) int {
	n := proto.Size(cmd)
	return 1 + protowire.SizeVarint(uint64(n)) + n
}

func (p *pipe) sendBatch(batch []*piped) {
	req := &inventoryv1.ApplyRequest{Commands: make([]*inventoryv1.Command, len(batch))}
	latest := batch[0].deadline
	for i, c := range batch {
		req.Commands[i] = c.cmd
		if c.deadline.After(latest) {
			latest = c.deadline
		}
	}
	ctx, cancel := context.WithDeadline(p.f.root, latest)
	defer cancel()
	r := connect.NewRequest(req)
	r.Header().Set(forwardedHeader, p.f.self)
	if p.authz != "" {
		r.Header().Set(authorizationHeader, p.authz)
	}
	resp, err := client[inventoryv1.ApplyRequest, inventoryv1.ApplyResponse](p.f, p.owner, inventoryv1connect.CommandServiceApplyProcedure).CallUnary(ctx, r)
	if err == nil && len(resp.Msg.GetOutcomes()) != len(batch) {
		err = connect.NewError(connect.CodeInternal, fmt.Errorf("%s answered %d outcomes for %d commands", p.owner, len(resp.Msg.GetOutcomes()), len(batch)))
	}
	for i, c := range batch {
		reply := pipedReply{err: err}
		result := "retried"
		switch {
		case err == nil:
			reply.outcome = resp.Msg.GetOutcomes()[i]
			result = "ok"
			if e := reply.outcome.GetError(); e != nil && e.GetCode() == connect.CodeUnavailable.String() {
				result = "retried"
			}
		case !retryable(err):
			result = "error"
		}
		p.f.metrics.forward(c.rpc, result, time.Since(c.queued))
		c.done <- reply
	}
}

// forwardCommand sends one command to owner through its pipe and returns
// the answer as the owner would have given it to the unary call. The
// owner's error answers are wire errors like those of a forwarded call:
// only UNAVAILABLE among them is retried.
func forwardCommand[Req, Resp any](ctx context.Context, h *Handler, r registered[Req, Resp], owner, authz string, req *Req) (*connect.Response[Resp], error) {
	bc := &inventoryv1.Command{}
	bc.ProtoReflect().Set(registry[r.k].field, protoreflect.ValueOfMessage(any(req).(proto.Message).ProtoReflect()))
	o, err := h.fwd.pipe(owner, authz).call(ctx, r.rpc, bc)
	if err != nil {
		return nil, err
	}
	if e := o.GetError(); e != nil {
		return nil, ownerAnswer{errorOf(e)}
	}
	if o.GetResult() == nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("%s answered neither a result nor an error", owner))
	}
	out := new(Resp)
	any(out).(proto.Message).ProtoReflect().Set(r.result, protoreflect.ValueOfMessage(o.GetResult().ProtoReflect()))
	return connect.NewResponse(out), nil
}

// doUnary decides cmd here if this instance writes its partition, else
// forwards the request to the instance that does, as described above. A
// forwarded call is answered here or not at all.
func doUnary[Req, Resp any](ctx context.Context, h *Handler, r registered[Req, Resp], req *connect.Request[Req], cmd *Command) (*Result, *connect.Response[Resp], error) {
	if h.fwd == nil || forwarded(req.Header()) {
		res, err := h.svc.Do(ctx, cmd)
		return res, nil, err
	}
	ctx, cancel := withForwardDeadline(ctx)
	defer cancel()
	b := backoff.Backoff{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond}
	var last error
	for {
		res, err := h.svc.Do(ctx, cmd)
		var no *NotOwnerError
		if !errors.As(err, &no) || no.Owner == "" {
			// A give-up here after failed forwards says why they failed.
			if err != nil && last != nil && (errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)) {
				return nil, nil, unavailableAfter(ctx, last)
			}
			return res, nil, err
		}
		var resp *connect.Response[Resp]
		var ferr error
		if _, more := r.def.(responder[Resp]); more {
			// Its response says more than an Apply outcome: its own RPC.
			resp, ferr = call[Req, Resp](ctx, h.fwd, no.Owner, r.procedure, r.rpc, req.Header().Get(authorizationHeader), req.Msg)
		} else {
			resp, ferr = forwardCommand(ctx, h, r, no.Owner, req.Header().Get(authorizationHeader), req.Msg)
		}
		if ferr == nil || !retryable(ferr) {
			var oa ownerAnswer
			if errors.As(ferr, &oa) {
				ferr = oa.err
			}
			return nil, resp, ferr
		}
		last = fmt.Errorf("forwarding to %s: %w", no.Owner, ferr)
		h.svc.ForgetOwners()
		select {
		case <-time.After(b.Next()):
		case <-ctx.Done():
			return nil, nil, unavailableAfter(ctx, last)
		}
	}
}

// applyRemote forwards the commands of an Apply batch whose partitions
// other instances write (their outcomes are *NotOwnerErrors naming the
// owner): one sub-batch per owner, in parallel, the batch's order kept
// within each, and each owner's outcomes placed back. Commands whose owner
// cannot be reached are decided again (here, or forwarded to whoever the
// group names then) until the deadline.
func (h *Handler) applyRemote(ctx context.Context, authz string, in []*inventoryv1.Command, cmds []*Command, outcomes []Outcome, forwardedOut []*inventoryv1.CommandOutcome) {
	ctx, cancel := withForwardDeadline(ctx)
	defer cancel()
	b := backoff.Backoff{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond}
	for {
		byOwner := map[string][]int{}
		for i, o := range outcomes {
			var no *NotOwnerError
			if errors.As(o.Err, &no) && no.Owner != "" {
				byOwner[no.Owner] = append(byOwner[no.Owner], i)
			}
		}
		if len(byOwner) == 0 {
			return
		}
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			retry []int
		)
		for owner, idx := range byOwner {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sub := &inventoryv1.ApplyRequest{Commands: make([]*inventoryv1.Command, len(idx))}
				for j, i := range idx {
					sub.Commands[j] = in[i]
				}
				resp, err := call[inventoryv1.ApplyRequest, inventoryv1.ApplyResponse](ctx, h.fwd, owner, inventoryv1connect.CommandServiceApplyProcedure, "Apply", authz, sub)
				if err == nil && len(resp.Msg.GetOutcomes()) != len(idx) {
					err = connect.NewError(connect.CodeInternal, fmt.Errorf("%s answered %d outcomes for %d commands", owner, len(resp.Msg.GetOutcomes()), len(idx)))
				}
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					for j, i := range idx {
						o := resp.Msg.GetOutcomes()[j]
						if e := o.GetError(); e != nil && e.GetCode() == connect.CodeUnavailable.String() {
							// The owner could not take it (no longer the
							// owner, its log unavailable): decide it again.
							outcomes[i].Err = fmt.Errorf("%w: forwarded to %s: %s", ErrUnavailable, owner, e.GetMessage())
							retry = append(retry, i)
							continue
						}
						forwardedOut[i], outcomes[i] = o, Outcome{}
					}
				case retryable(err):
					for _, i := range idx {
						outcomes[i].Err = fmt.Errorf("%w: forwarding to %s: %w", ErrUnavailable, owner, err)
					}
					retry = append(retry, idx...)
				default:
					for _, i := range idx {
						outcomes[i].Err = fmt.Errorf("forwarding to %s: %w", owner, err)
					}
				}
			}()
		}
		wg.Wait()
		if len(retry) == 0 {
			return
		}
		h.svc.ForgetOwners()
		select {
		case <-time.After(b.Next()):
		case <-ctx.Done():
			return // the outcomes say why
		}
		again := make([]*Command, len(cmds))
		for _, i := range retry {
			again[i] = cmds[i]
		}
		for _, i := range retry {
			outcomes[i] = Outcome{}
		}
		for i, o := range h.svc.DoBatch(ctx, again) {
			if again[i] != nil {
				outcomes[i] = o
			}
		}
	}
}
