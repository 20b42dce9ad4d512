// Package client is the Go client of PCS: it finds the primary from any list of endpoints and
// follows it across failovers, retries with bounded backoff, batches timestamp requests from
// many callers into one stream round trip, and resumes watches where they left off.
//
// Every call takes a context; the retry budget ends at the context's deadline or after
// MaxAttempts attempts, whichever comes first.
package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/postdb/pcs/api/pcspb"
)

// Options tune a Client.
type Options struct {
	// MaxAttempts bounds the attempts of one call. Default 50.
	MaxAttempts int
	// BackoffBase is the first retry delay; it doubles up to BackoffMax. Defaults 5ms and 100ms.
	BackoffBase, BackoffMax time.Duration
}

// Option changes Options.
type Option func(*Options)

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
	stopWatch context.CancelFunc
	nodes     nodeAddrs
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

func (c *Client) conn(addr string) (pcspb.PCSClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cc, ok := c.mu.conns[addr]
	if !ok {
		var err error
		cc, err = grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithConnectParams(fastReconnect),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.MaxCallSendMsgSize(8<<20)))
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

// forgetPrimary clears the cached primary if it is still addr.
func (c *Client) forgetPrimary(addr string) {
	c.mu.Lock()
	if c.mu.primary == addr {
		c.mu.primary = ""
	}
	c.mu.Unlock()
}

// primary returns the primary's address, discovering it through the endpoints if needed.
func (c *Client) primary(ctx context.Context) (string, error) {
	c.mu.Lock()
	p := c.mu.primary
	c.mu.Unlock()
	if p != "" {
		return p, nil
	}
	var last error = ErrUnavailable
	for _, ep := range c.endpoints {
		cli, err := c.conn(ep)
		if err != nil {
			return "", err
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(sctx, &pcspb.StatusRequest{})
		cancel()
		if err != nil {
			last = err
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			continue
		}
		if st.PrimaryAddr != "" {
			c.setPrimary(st.PrimaryAddr)
			return st.PrimaryAddr, nil
		}
		last = fmt.Errorf("%w: %s knows no primary (state %s)", ErrUnavailable, ep, st.State)
	}
	return "", last
}

// target says where a call goes.
type target struct {
	endpoint string // a fixed node; "" means the primary
}

// do runs call against the target, retrying retryable failures with backoff.
func (c *Client) do(ctx context.Context, t target, call func(context.Context, pcspb.PCSClient) error) error {
	backoff := c.opts.BackoffBase
	var last error
	immediate := false
	for attempt := 0; attempt < c.opts.MaxAttempts; attempt++ {
		if attempt > 0 && !immediate {
			select {
			case <-ctx.Done():
				return errors.Join(ctx.Err(), fromStatus(last))
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, c.opts.BackoffMax)
		}
		immediate = false
		addr := t.endpoint
		if addr == "" {
			p, err := c.primary(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
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
		err = call(ctx, cli)
		if err == nil {
			return nil
		}
		last = err
		if ctx.Err() != nil || !retryable(err) {
			return fromStatus(err)
		}
		if t.endpoint == "" {
			if np := notPrimary(err); np != nil && np.PrimaryAddr != "" && np.PrimaryAddr != addr {
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
	return fmt.Errorf("after %d attempts: %w", c.opts.MaxAttempts, fromStatus(last))
}

// fastReconnect retries a lost connection within tens of milliseconds (gRPC's default waits a
// second before the first retry, which would add a second to every failover and restart).
var fastReconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
}
