package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/postdb/pcs/api/pcspb"
)

// maxTSOBatch is the most timestamps one stream request asks for (the logical range of a
// millisecond).
const maxTSOBatch = 1 << 18

type tsoResult struct {
	first uint64
	err   error
}

type tsoReq struct {
	ctx   context.Context
	count uint32
	done  chan tsoResult // buffered 1
}

var tsoReqPool = sync.Pool{New: func() any { return &tsoReq{done: make(chan tsoResult, 1)} }}

// tsoBatcher turns many concurrent GetTS calls into few stream round trips: one goroutine
// collects every pending request, asks the primary for their sum in one message and splits
// the answer.
type tsoBatcher struct {
	c      *Client
	reqs   chan *tsoReq
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	closed chan struct{}
}

func newTSOBatcher(c *Client) *tsoBatcher {
	b := &tsoBatcher{c: c, reqs: make(chan *tsoReq, 16384), stop: make(chan struct{}), closed: make(chan struct{})}
	return b
}

func (b *tsoBatcher) start() {
	b.once.Do(func() {
		b.wg.Add(1)
		go func() { defer b.wg.Done(); b.run() }()
	})
}

func (b *tsoBatcher) close() {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	b.wg.Wait()
}

// GetTS returns one timestamp.
func (c *Client) GetTS(ctx context.Context) (uint64, error) { return c.GetTSBatch(ctx, 1) }

// GetTSBatch returns the first of count consecutive timestamps (first .. first+count-1).
func (c *Client) GetTSBatch(ctx context.Context, count uint32) (uint64, error) {
	if count == 0 || count > maxTSOBatch {
		return 0, fmt.Errorf("%w: timestamp count %d (1..%d)", ErrInvalidArgument, count, maxTSOBatch)
	}
	b := c.tso
	b.start()
	r := tsoReqPool.Get().(*tsoReq)
	r.ctx, r.count = ctx, count
	select {
	case b.reqs <- r:
	case <-ctx.Done():
		tsoReqPool.Put(r)
		return 0, ctx.Err()
	case <-b.stop:
		tsoReqPool.Put(r)
		return 0, fmt.Errorf("%w: client closed", ErrUnavailable)
	}
	select {
	case res := <-r.done:
		r.ctx = nil
		tsoReqPool.Put(r)
		return res.first, res.err
	case <-ctx.Done():
		return 0, ctx.Err() // r is abandoned: the batcher may still answer into it
	}
}

type tsoStream struct {
	stream pcspb.PCS_TsoClient
	cancel context.CancelFunc
	addr   string
}

func (b *tsoBatcher) run() {
	var (
		st    *tsoStream
		batch []*tsoReq
		carry *tsoReq
	)
	defer func() {
		if st != nil {
			st.cancel()
		}
		for {
			select {
			case r := <-b.reqs:
				r.done <- tsoResult{err: fmt.Errorf("%w: client closed", ErrUnavailable)}
			default:
				return
			}
		}
	}()
	for {
		batch = batch[:0]
		if carry != nil {
			batch, carry = append(batch, carry), nil
		} else {
			select {
			case r := <-b.reqs:
				batch = append(batch, r)
			case <-b.stop:
				return
			}
		}
		total := batch[0].count
	drain:
		for {
			select {
			case r := <-b.reqs:
				if total+r.count > maxTSOBatch {
					carry = r
					break drain
				}
				batch = append(batch, r)
				total += r.count
			default:
				break drain
			}
		}
		st = b.serve(st, batch)
	}
}

// serve obtains timestamps for batch, retrying across primary changes, and answers every
// request. It returns the stream to use next (nil after a failure).
func (b *tsoBatcher) serve(st *tsoStream, batch []*tsoReq) *tsoStream {
	c := b.c
	backoff := c.opts.BackoffBase
	var last error
	for attempt := 0; ; attempt++ {
		// Drop callers that gave up.
		live := batch[:0]
		var total uint32
		for _, r := range batch {
			if r.ctx.Err() != nil {
				r.done <- tsoResult{err: r.ctx.Err()}
				continue
			}
			live = append(live, r)
			total += r.count
		}
		batch = live
		if len(batch) == 0 {
			return st
		}
		if attempt >= c.opts.MaxAttempts {
			err := fmt.Errorf("after %d attempts: %w", attempt, fromStatus(last))
			for _, r := range batch {
				r.done <- tsoResult{err: err}
			}
			return st
		}
		if attempt > 0 {
			select {
			case <-time.After(backoff):
			case <-b.stop:
				for _, r := range batch {
					r.done <- tsoResult{err: fmt.Errorf("%w: client closed", ErrUnavailable)}
				}
				return st
			}
			backoff = min(2*backoff, c.opts.BackoffMax)
		}
		var err error
		if st == nil {
			st, err = b.open()
		}
		var resp *pcspb.TsoResponse
		if err == nil {
			resp, err = st.roundTrip(total)
		}
		if err == nil {
			ts := resp.First
			for _, r := range batch {
				n := uint64(r.count) // read before answering: the caller reuses r at once
				r.done <- tsoResult{first: ts}
				ts += n
			}
			return st
		}
		last = err
		if st != nil {
			st.cancel()
			c.forgetPrimary(st.addr)
			st = nil
		}
		if np := notPrimary(err); np != nil && np.PrimaryAddr != "" {
			c.setPrimary(np.PrimaryAddr)
		}
		if !retryable(err) && !errors.Is(err, ErrUnavailable) {
			err = fromStatus(err)
			for _, r := range batch {
				r.done <- tsoResult{err: err}
			}
			return nil
		}
	}
}

func (b *tsoBatcher) open() (*tsoStream, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	addr, err := b.c.primary(ctx)
	cancel()
	if err != nil {
		return nil, err
	}
	cli, err := b.c.conn(addr)
	if err != nil {
		return nil, err
	}
	sctx, scancel := context.WithCancel(context.Background())
	stream, err := cli.Tso(sctx)
	if err != nil {
		scancel()
		return nil, err
	}
	return &tsoStream{stream: stream, cancel: scancel, addr: addr}, nil
}

func (s *tsoStream) roundTrip(count uint32) (*pcspb.TsoResponse, error) {
	if err := s.stream.Send(&pcspb.TsoRequest{Count: count}); err != nil {
		if errors.Is(err, io.EOF) {
			_, err = s.stream.Recv() // the real status
		}
		return nil, err
	}
	resp, err := s.stream.Recv()
	if err != nil {
		return nil, err
	}
	if resp.Count != count {
		return nil, fmt.Errorf("%w: asked for %d timestamps, got %d", ErrInternal, count, resp.Count)
	}
	return resp, nil
}
