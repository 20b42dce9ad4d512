// Package client is the Go client of PCS: it finds the primary from any list of endpoints and
// follows it across failovers, retries with bounded backoff, batches timestamp requests from
// many callers into one stream round trip, and resumes watches where they left off.
//
// Every call takes a context; the retry budget ends at the context's deadline or after
// MaxAttempts attempts, whichever comes first.
package client

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/grpctrace"
	"github.com/postdb/pcs/pcstls"
)

// Options tune a Client.
type Options struct {
	// MaxAttempts bounds the attempts of one call. Default 50.
	MaxAttempts int
	// tracerProvider and propagator (WithTracing), if set, trace the client's calls.
	tracerProvider trace.TracerProvider
	propagator     propagation.TextMapPropagator
	// BackoffBase is the first retry delay; it doubles up to BackoffMax. Defaults 5ms and 100ms.
	BackoffBase, BackoffMax time.Duration
	// AttemptTimeout bounds one attempt of a short call (reads, writes, TSO round trips,
	// primary discovery); a node that does not answer within it is given up on and the
	// primary looked up again. Default DefaultAttemptTimeout.
	AttemptTimeout time.Duration
	// ClusterID, if set, is sent with every call (see WithClusterID).
	ClusterID string
	// TLS, if set, is the identity for mutual TLS with PCS and the data nodes (see WithTLS).
	TLS *pcstls.Source
	// PCSNames and NodeNames are the identities (globs, as in the servers' allow lists) the
	// client accepts from PCS members and from data nodes under TLS: a member address rewritten
	// to point elsewhere cannot redirect the client to a server of another name. Defaults
	// DefaultPCSNames and DefaultNodeNames.
	PCSNames, NodeNames []string
}

// The server identities a TLS client accepts by default (the names pcs playground gives
// members and nodes).
const (
	DefaultPCSNames  = "pcs-*"
	DefaultNodeNames = "node-*"
)

// WithServerNames sets the identities accepted from PCS members and data nodes under TLS
// (nil keeps the default).
func WithServerNames(pcs, nodes []string) Option {
	return func(o *Options) {
		if pcs != nil {
			o.PCSNames = pcs
		}
		if nodes != nil {
			o.NodeNames = nodes
		}
	}
}

// WithTLS makes every connection, to PCS and to data nodes, mutual TLS with src's identity:
// the server's certificate must be signed by src's CA and name the address dialled. The files
// are re-read when they change, so a rotated certificate is used by the next connection.
func WithTLS(src *pcstls.Source) Option { return func(o *Options) { o.TLS = src } }

// credentials returns the transport credentials of the client's connections to PCS members
// (nodes false) or to data nodes.
func (o *Options) credentials(nodes bool) credentials.TransportCredentials {
	if o.TLS == nil {
		return insecure.NewCredentials()
	}
	allow := &pcstls.Allow{Kind: "PCS members", Patterns: o.PCSNames}
	if len(allow.Patterns) == 0 {
		allow.Patterns = []string{DefaultPCSNames}
	}
	if nodes {
		allow = &pcstls.Allow{Kind: "data nodes", Patterns: o.NodeNames}
		if len(allow.Patterns) == 0 {
			allow.Patterns = []string{DefaultNodeNames}
		}
	}
	return o.TLS.ClientCredentials(allow)
}

// DefaultAttemptTimeout is a few election timeouts of PCS's LAN defaults (200 ms): long
// enough for a write's quorum round under load, short enough that a paused primary, replaced
// after about two election timeouts, costs a client well under a second more.
const DefaultAttemptTimeout = 750 * time.Millisecond

// WithClusterID makes every call say it belongs to cluster id (16 hex digits): a PCS of
// another cluster refuses it with ErrClusterMismatch.
func WithClusterID(id string) Option { return func(o *Options) { o.ClusterID = id } }

// WithAttemptTimeout sets Options.AttemptTimeout.
func WithAttemptTimeout(d time.Duration) Option { return func(o *Options) { o.AttemptTimeout = d } }

// Option changes Options.
type Option func(*Options)

// dialOptions are the options every connection gets (tracing, if on).
func (o *Options) dialOptions() []grpc.DialOption {
	if o.tracerProvider == nil {
		return nil
	}
	return []grpc.DialOption{grpctrace.DialOption(o.tracerProvider, o.propagator)}
}

// tracer starts the client's own spans (a no-op without WithTracing).
func (o *Options) tracer() trace.Tracer {
	if o.tracerProvider == nil {
		return noop.NewTracerProvider().Tracer("")
	}
	return o.tracerProvider.Tracer("github.com/postdb/pcs/client")
}

// WithTracing traces the client's calls with tp: a span per row operation and per RPC, the
// trace context carried to PCS and the data nodes (W3C trace context, or prop if not nil), so
// one trace follows a row write through every node it reaches.
func WithTracing(tp trace.TracerProvider, prop propagation.TextMapPropagator) Option {
	return func(o *Options) {
		if prop == nil {
			prop = propagation.TraceContext{}
		}
		o.tracerProvider, o.propagator = tp, prop
	}
}

// WithMaxAttempts sets Options.MaxAttempts.
func WithMaxAttempts(n int) Option { return func(o *Options) { o.MaxAttempts = n } }

// WithBackoff sets the retry backoff.
func WithBackoff(base, maxDelay time.Duration) Option {
	return func(o *Options) { o.BackoffBase, o.BackoffMax = base, maxDelay }
}

// Client talks to a PCS cluster. It is safe for concurrent use.
type Client struct {
	opts      Options
	endpoints []string

	mu struct {
		sync.Mutex
		conns   map[string]*grpc.ClientConn
		primary string // client address of the primary; "" when unknown
	}
	tso       *tsoBatcher
	routes    routeCache
	lookups   lookups
	stopWatch context.CancelFunc
	nodes     nodeAddrs
	reqs      *requests
	clusterID atomic.Value // string: sent with every call so that another cluster refuses it
}

// New returns a client for the cluster reachable at any of endpoints (client addresses).
// It does not connect until the first call.
func New(endpoints []string, opts ...Option) (*Client, error) {
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("%w: no endpoints", ErrInvalidArgument)
	}
	o := Options{MaxAttempts: 50, BackoffBase: 5 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
	for _, f := range opts {
		f(&o)
	}
	c := &Client{opts: o, endpoints: append([]string(nil), endpoints...)}
	c.mu.conns = map[string]*grpc.ClientConn{}
	c.tso = newTSOBatcher(c)
	c.lookups.c = c
	c.reqs = newRequests()
	c.clusterID.Store(o.ClusterID)
	c.routes.tables = map[string]*tableRoutes{}
	c.nodes.addrs = map[uint64]string{}
	c.nodes.conns = map[string]*grpc.ClientConn{}
	return c, nil
}

// Close releases the client's connections and fails pending calls.
func (c *Client) Close() error {
	c.tso.close()
	c.routes.mu.Lock()
	if c.stopWatch != nil {
		c.stopWatch()
	}
	c.routes.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, cc := range c.mu.conns {
		cc.Close()
		delete(c.mu.conns, a)
	}
	c.nodes.mu.Lock()
	for a, cc := range c.nodes.conns {
		cc.Close()
		delete(c.nodes.conns, a)
	}
	c.nodes.mu.Unlock()
	return nil
}

// Endpoints returns the configured endpoints.
func (c *Client) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// SetClusterID sets the cluster id sent with every later call (a data node learns it when it
// registers).
func (c *Client) SetClusterID(id string) { c.clusterID.Store(id) }

// withClusterID adds the cluster id, if known, to an outgoing call.
func (c *Client) withClusterID(ctx context.Context) context.Context {
	if id, _ := c.clusterID.Load().(string); id != "" {
		return metadata.AppendToOutgoingContext(ctx, pcspb.ClusterIDHeader, id)
	}
	return ctx
}

func (c *Client) conn(addr string) (pcspb.PCSClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cc, ok := c.mu.conns[addr]
	if !ok {
		var err error
		cc, err = grpc.NewClient(addr, append(c.opts.dialOptions(),
			grpc.WithTransportCredentials(c.opts.credentials(false)),
			grpc.WithConnectParams(fastReconnect),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.MaxCallSendMsgSize(8<<20)),
			grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				return invoker(c.withClusterID(ctx), method, req, reply, cc, opts...)
			}),
			grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(c.withClusterID(ctx), desc, cc, method, opts...)
			}))...)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalidArgument, addr, err)
		}
		c.mu.conns[addr] = cc
	}
	return pcspb.NewPCSClient(cc), nil
}

func (c *Client) setPrimary(addr string) {
	c.mu.Lock()
	c.mu.primary = addr
	c.mu.Unlock()
}

// ForgetPrimary makes the next call look the primary up again (a caller that saw the primary
// stop answering on a stream of its own).
func (c *Client) ForgetPrimary() { c.setPrimary("") }

// forgetPrimary clears the cached primary if it is still addr.
func (c *Client) forgetPrimary(addr string) {
	c.mu.Lock()
	if c.mu.primary == addr {
		c.mu.primary = ""
	}
	c.mu.Unlock()
}

// primary returns the primary's address, discovering it through the endpoints if needed:
// every endpoint is asked at once, and the primary of the highest term wins once a majority of
// the endpoints answered (or all that will, within an attempt timeout) — a paused or dead
// endpoint never holds discovery up.
func (c *Client) primary(ctx context.Context) (string, error) {
	return c.primaryWithin(ctx, c.attemptTimeout())
}

// primaryWithin is primary with discovery bounded by limit.
func (c *Client) primaryWithin(ctx context.Context, limit time.Duration) (string, error) {
	c.mu.Lock()
	p := c.mu.primary
	c.mu.Unlock()
	if p != "" {
		return p, nil
	}
	type answer struct {
		ep  string
		st  *pcspb.StatusResponse
		err error
	}
	sctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	answers := make(chan answer, len(c.endpoints))
	for _, ep := range c.endpoints {
		cli, err := c.conn(ep)
		if err != nil {
			return "", err
		}
		go func() {
			st, err := cli.Status(sctx, &pcspb.StatusRequest{})
			answers <- answer{ep, st, err}
		}()
	}
	var (
		best     *pcspb.StatusResponse
		last     error = ErrUnavailable
		answered int
	)
	for range c.endpoints {
		var a answer
		select {
		case a = <-answers:
		case <-sctx.Done():
		}
		if sctx.Err() != nil && a.ep == "" {
			break
		}
		if a.err != nil {
			last = a.err
			continue
		}
		answered++
		if a.st.PrimaryAddr == "" {
			last = fmt.Errorf("%w: %s knows no primary (state %s)", ErrUnavailable, a.ep, a.st.State)
		} else if best == nil || a.st.Term > best.Term {
			best = a.st
		}
		if best != nil && answered > len(c.endpoints)/2 {
			break
		}
	}
	if best != nil {
		c.setPrimary(best.PrimaryAddr)
		return best.PrimaryAddr, nil
	}
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	return "", last
}

// target says where a call goes and how it may be retried.
type target struct {
	endpoint string // a fixed node; "" means the primary
	// write: the call changes state; it carries a request id so that the server applies it
	// once however often it is retried.
	write bool
	// long: the call may legitimately take long (DDL, moves, membership): it gets no
	// per-attempt deadline below the caller's.
	long bool
}

// requests numbers a client's writes and tracks which are still waiting for their answer.
type requests struct {
	mu       sync.Mutex
	clientID uint64 // a new one if PCS dropped the session (renew)
	next     uint64
	inflight map[uint64]struct{}
}

func newRequests() *requests {
	return &requests{clientID: randomID(), next: 1, inflight: map[uint64]struct{}{}}
}

// randomID is a random non-zero client id.
func randomID() uint64 {
	var b [8]byte
	id := uint64(0)
	for id == 0 {
		_, _ = rand.Read(b[:])
		id = binary.LittleEndian.Uint64(b[:])
	}
	return id
}

func (r *requests) begin() *pcspb.RequestID {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq := r.next
	r.next++
	r.inflight[seq] = struct{}{}
	return &pcspb.RequestID{ClientId: r.clientID, Seq: seq}
}

// renew gives up client id old for a new one (PCS dropped its session) and begins a request
// under it.
func (r *requests) renew(old uint64) *pcspb.RequestID {
	r.mu.Lock()
	if r.clientID == old {
		r.clientID = randomID()
	}
	r.mu.Unlock()
	return r.begin()
}

func (r *requests) end(seq uint64) {
	r.mu.Lock()
	delete(r.inflight, seq)
	r.mu.Unlock()
}

// ackedBelow is the lowest seq still waiting for its answer (every lower one has its answer).
func (r *requests) ackedBelow() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	low := r.next
	for seq := range r.inflight {
		low = min(low, seq)
	}
	return low
}

// stamp puts the request id of one attempt on ctx: whether an earlier attempt may have been
// applied, how long ago the first was sent, and which answers the client has.
func (r *requests) stamp(ctx context.Context, id *pcspb.RequestID, retry bool, firstSent time.Time) context.Context {
	id.Retry, id.AgeMs, id.AckedBelow = retry, uint64(time.Since(firstSent).Milliseconds()), r.ackedBelow()
	return pcspb.WithRequestID(ctx, id)
}

func (c *Client) attemptTimeout() time.Duration {
	if c.opts.AttemptTimeout > 0 {
		return c.opts.AttemptTimeout
	}
	return DefaultAttemptTimeout
}

// maxAttemptGrowth bounds how far attemptLimit stretches the attempt timeout.
const maxAttemptGrowth = 8

// attemptLimit is the timeout of one call's next attempt: the configured one at first, doubled
// after every attempt that timed out, up to maxAttemptGrowth times it. A node that is slow
// rather than gone (overloaded, a long fsync, a machine under load) gets the time it needs to
// answer, instead of a storm of retries none of which it can answer in time; a paused or dead
// one still costs only the first few short attempts before the primary is looked up again.
type attemptLimit struct {
	base, cur time.Duration
}

func newAttemptLimit(base time.Duration) attemptLimit { return attemptLimit{base: base, cur: base} }

func (a *attemptLimit) timedOut() { a.cur = min(2*a.cur, maxAttemptGrowth*a.base) }

// do runs call against the target, retrying retryable failures with backoff. An attempt that
// does not answer within the attempt timeout is abandoned and the primary looked up again. A
// write is retried only because the server deduplicates it; if the deadline ends while an
// attempt may have been applied, the error is ErrOutcomeUnknown.
func (c *Client) do(ctx context.Context, t target, call func(context.Context, pcspb.PCSClient) error) error {
	var rid *pcspb.RequestID
	if t.write {
		rid = c.reqs.begin()
		defer func() { c.reqs.end(rid.Seq) }()
	}
	firstSent := time.Now()
	maybeApplied := false
	unknown := func(err error) error {
		if maybeApplied {
			return fmt.Errorf("%w: %w", ErrOutcomeUnknown, fromStatus(err))
		}
		return fromStatus(err)
	}
	backoff := c.opts.BackoffBase
	limit := newAttemptLimit(c.attemptTimeout())
	var last error
	immediate := false
	for attempt := 0; attempt < c.opts.MaxAttempts; attempt++ {
		if attempt > 0 && !immediate {
			select {
			case <-ctx.Done():
				return unknown(errors.Join(ctx.Err(), last))
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, c.opts.BackoffMax)
		}
		immediate = false
		addr := t.endpoint
		if addr == "" {
			p, err := c.primaryWithin(ctx, limit.cur)
			if err != nil {
				if ctx.Err() != nil {
					return unknown(errors.Join(ctx.Err(), last))
				}
				if errors.Is(err, context.DeadlineExceeded) {
					limit.timedOut()
				}
				last = err
				continue
			}
			addr = p
		}
		cli, err := c.conn(addr)
		if err != nil {
			return err
		}
		actx, cancel := ctx, context.CancelFunc(func() {})
		if !t.long {
			actx, cancel = context.WithTimeout(ctx, limit.cur)
		}
		if rid != nil {
			actx = c.reqs.stamp(actx, rid, maybeApplied, firstSent)
		}
		err = call(actx, cli)
		timedOut := err != nil && ctx.Err() == nil && (actx.Err() != nil || status.Code(err) == codes.DeadlineExceeded)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		if ctx.Err() != nil {
			maybeApplied = maybeApplied || (t.write && notPrimary(err) == nil)
			return unknown(err)
		}
		if timedOut {
			// The node did not answer in time (paused, partitioned, overloaded): look the
			// primary up again at once. A write may have been applied; its retry is deduplicated.
			maybeApplied = maybeApplied || t.write
			if t.endpoint == "" {
				c.forgetPrimary(addr)
			}
			limit.timedOut()
			immediate = true
			continue
		}
		if rid != nil && !maybeApplied && errors.Is(fromStatus(err), ErrSessionExpired) {
			// Refused, not applied: the same request again under a new client id.
			c.reqs.end(rid.Seq)
			rid = c.reqs.renew(rid.ClientId)
			immediate = true
			continue
		}
		if !retryable(err) {
			return fromStatus(err)
		}
		np := notPrimary(err)
		// A node that is not the primary refuses before proposing; any other failure of a write
		// may have come after it was proposed.
		maybeApplied = maybeApplied || (t.write && np == nil)
		if t.endpoint == "" {
			if np != nil && np.PrimaryAddr != "" && np.PrimaryAddr != addr {
				c.setPrimary(np.PrimaryAddr)
				immediate = true // a redirect, not a failure: retry at once
				continue
			}
			c.forgetPrimary(addr)
		}
	}
	if last == nil {
		last = ErrUnavailable
	}
	return unknown(fmt.Errorf("after %d attempts: %w", c.opts.MaxAttempts, fromStatus(last)))
}

// fastReconnect retries a lost connection within tens of milliseconds (gRPC's default waits a
// second before the first retry, which would add a second to every failover and restart).
var fastReconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
}
