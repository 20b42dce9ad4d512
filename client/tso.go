package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/postdb/pcs/api/pcspb"
)

// maxTSOBatch is the most timestamps one stream request asks for (the logical range of a
// millisecond).
const maxTSOBatch = 1 << 18

// tsoMaxInFlight is how many batches may be on the stream at once. While they are in flight,
// new callers gather into the next batch.
const tsoMaxInFlight = 4

type tsoResult struct {
	first uint64
	err   error
}

type tsoReq struct {
	ctx      context.Context
	count    uint32
	attempts int
	done     chan tsoResult // buffered 1
}

var tsoReqPool = sync.Pool{New: func() any { return &tsoReq{done: make(chan tsoResult, 1)} }}

// answer delivers a result. It reads nothing from r afterwards: the caller reuses r at once.
func (r *tsoReq) answer(res tsoResult) { r.done <- res }

// tsoBatcher turns many concurrent GetTS calls into few stream round trips, pipelined.
//
// Callers append requests to a pending list (a mutex-guarded slice: a thousand callers contend
// far less on it than on a channel). The sender goroutine takes the whole list, sends one
// request for the sum of their counts on the session's stream, and goes back for more while
// up to tsoMaxInFlight batches are in flight. The session's receiver goroutine matches answers
// to batches in order and splits them. When a stream fails, its in-flight batches go back to
// the front of the pending list and are sent again on a new stream (to the new primary), so a
// caller gets a timestamp issued after the failure, never one from a deposed primary.
type tsoBatcher struct {
	c    *Client
	wake chan struct{} // capacity 1: "the pending list became non-empty"
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup

	mu struct {
		sync.Mutex
		pending []*tsoReq
		closed  bool
	}
}

func newTSOBatcher(c *Client) *tsoBatcher {
	return &tsoBatcher{c: c, wake: make(chan struct{}, 1), stop: make(chan struct{})}
}

func (b *tsoBatcher) start() {
	b.once.Do(func() {
		b.wg.Add(1)
		go func() { defer b.wg.Done(); b.run() }()
	})
}

func (b *tsoBatcher) close() {
	b.mu.Lock()
	if !b.mu.closed {
		b.mu.closed = true
		close(b.stop)
	}
	b.mu.Unlock()
	b.wg.Wait()
	b.mu.Lock()
	pending := b.mu.pending
	b.mu.pending = nil
	b.mu.Unlock()
	failAll(pending, fmt.Errorf("%w: client closed", ErrUnavailable))
}

func failAll(reqs []*tsoReq, err error) {
	for _, r := range reqs {
		r.answer(tsoResult{err: err})
	}
}

// enqueue adds requests to the pending list (front: retried ones first); false if closed.
func (b *tsoBatcher) enqueue(front bool, reqs ...*tsoReq) bool {
	b.mu.Lock()
	if b.mu.closed {
		b.mu.Unlock()
		return false
	}
	first := len(b.mu.pending) == 0
	if front {
		b.mu.pending = append(reqs, b.mu.pending...)
	} else {
		b.mu.pending = append(b.mu.pending, reqs...)
	}
	b.mu.Unlock()
	if first {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// GetTS returns one timestamp.
func (c *Client) GetTS(ctx context.Context) (uint64, error) { return c.GetTSBatch(ctx, 1) }

// GetTSBatch returns the first of count consecutive timestamps (first .. first+count-1).
func (c *Client) GetTSBatch(ctx context.Context, count uint32) (uint64, error) {
	if count == 0 || count > maxTSOBatch {
		return 0, fmt.Errorf("%w: timestamp count %d (1..%d)", ErrInvalidArgument, count, maxTSOBatch)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b := c.tso
	b.start()
	r := tsoReqPool.Get().(*tsoReq)
	r.ctx, r.count, r.attempts = ctx, count, 0
	if !b.enqueue(false, r) {
		tsoReqPool.Put(r)
		return 0, fmt.Errorf("%w: client closed", ErrUnavailable)
	}
	var res tsoResult
	if done := ctx.Done(); done == nil {
		res = <-r.done
	} else {
		select {
		case res = <-r.done:
		case <-done:
			return 0, ctx.Err() // r is abandoned: the batcher may still answer into it
		}
	}
	r.ctx = nil
	tsoReqPool.Put(r)
	return res.first, res.err
}

// tsoSession is one Tso stream to one primary, with its in-flight batches in send order.
type tsoSession struct {
	b      *tsoBatcher
	stream pcspb.PCS_TsoClient
	cancel context.CancelFunc
	addr   string
	slots  chan struct{} // one token per batch that may be in flight

	mu struct {
		sync.Mutex
		inflight [][]*tsoReq
		sentAt   []time.Time // when each in-flight batch was sent
		failed   bool
	}
	failedCh chan struct{}
}

func (b *tsoBatcher) run() {
	var (
		sess    *tsoSession
		backoff = b.c.opts.BackoffBase
	)
	defer func() {
		if sess != nil {
			sess.close()
		}
	}()
	for {
		select {
		case <-b.wake:
		case <-b.stop:
			return
		}
		for {
			b.mu.Lock()
			taken := b.mu.pending
			b.mu.pending = nil
			b.mu.Unlock()
			if len(taken) == 0 {
				break
			}
			taken = b.dropExpired(taken)
			for len(taken) > 0 {
				if sess == nil || sess.isFailed() {
					if sess != nil {
						sess.close()
						sess = nil
						if !b.sleep(backoff) {
							failAll(taken, fmt.Errorf("%w: client closed", ErrUnavailable))
							return
						}
						backoff = min(2*backoff, b.c.opts.BackoffMax)
					}
					var err error
					sess, err = b.open()
					if err != nil {
						sess = nil
						taken = b.retryOrFail(taken, err)
						if !b.sleep(backoff) {
							failAll(taken, fmt.Errorf("%w: client closed", ErrUnavailable))
							return
						}
						backoff = min(2*backoff, b.c.opts.BackoffMax)
						continue
					}
				}
				n, total := 0, uint32(0)
				for n < len(taken) && total+taken[n].count <= maxTSOBatch {
					total += taken[n].count
					n++
				}
				if !sess.send(taken[:n:n], total) {
					continue // the session failed; its batches were requeued; taken is still ours
				}
				backoff = b.c.opts.BackoffBase
				taken = taken[n:]
			}
		}
	}
}

// dropExpired answers requests whose callers gave up and returns the rest.
func (b *tsoBatcher) dropExpired(reqs []*tsoReq) []*tsoReq {
	live := reqs[:0]
	for _, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.answer(tsoResult{err: err})
			continue
		}
		live = append(live, r)
	}
	return live
}

// retryOrFail counts an attempt against each request, fails those out of attempts (or whose
// error is not retryable) and returns the rest.
func (b *tsoBatcher) retryOrFail(reqs []*tsoReq, err error) []*tsoReq {
	live := reqs[:0]
	for _, r := range reqs {
		r.attempts++
		if !retryable(err) && !errors.Is(err, ErrUnavailable) {
			r.answer(tsoResult{err: fromStatus(err)})
			continue
		}
		if r.attempts >= b.c.opts.MaxAttempts {
			r.answer(tsoResult{err: fmt.Errorf("after %d attempts: %w", r.attempts, fromStatus(err))})
			continue
		}
		if cerr := r.ctx.Err(); cerr != nil {
			r.answer(tsoResult{err: cerr})
			continue
		}
		live = append(live, r)
	}
	return live
}

func (b *tsoBatcher) sleep(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-b.stop:
		return false
	}
}

func (b *tsoBatcher) open() (*tsoSession, error) {
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
		b.c.forgetPrimary(addr)
		return nil, err
	}
	s := &tsoSession{b: b, stream: stream, cancel: scancel, addr: addr,
		slots: make(chan struct{}, tsoMaxInFlight), failedCh: make(chan struct{})}
	for i := 0; i < tsoMaxInFlight; i++ {
		s.slots <- struct{}{}
	}
	b.wg.Add(2)
	go func() { defer b.wg.Done(); s.receive() }()
	go func() { defer b.wg.Done(); s.watch() }()
	return s, nil
}

// watch fails the session when its oldest batch has waited longer than the attempt timeout
// (a paused or cut-off primary): its batches go to whichever node is primary now.
func (s *tsoSession) watch() {
	limit := s.b.c.attemptTimeout()
	t := time.NewTicker(limit / 4)
	defer t.Stop()
	for {
		select {
		case <-s.failedCh:
			return
		case <-t.C:
		}
		s.mu.Lock()
		late := len(s.mu.sentAt) > 0 && time.Since(s.mu.sentAt[0]) > limit
		s.mu.Unlock()
		if late {
			s.fail(status.Errorf(codes.Unavailable, "tso: %s did not answer within %v", s.addr, limit), nil)
			return
		}
	}
}

func (s *tsoSession) isFailed() bool {
	select {
	case <-s.failedCh:
		return true
	default:
		return false
	}
}

func (s *tsoSession) close() { s.cancel() }

// send puts a batch on the stream; false if the session has failed (batch not taken).
func (s *tsoSession) send(batch []*tsoReq, total uint32) bool {
	select {
	case <-s.slots:
	case <-s.failedCh:
		return false
	}
	s.mu.Lock()
	if s.mu.failed {
		s.mu.Unlock()
		return false
	}
	s.mu.inflight = append(s.mu.inflight, batch)
	s.mu.sentAt = append(s.mu.sentAt, time.Now())
	s.mu.Unlock()
	if err := s.stream.Send(&pcspb.TsoRequest{Count: total}); err != nil {
		// The receiver sees the stream fail too and requeues everything in flight.
		s.cancel()
	}
	return true
}

// receive matches answers to in-flight batches until the stream fails.
func (s *tsoSession) receive() {
	for {
		resp, err := s.stream.Recv()
		if err == nil {
			s.mu.Lock()
			if len(s.mu.inflight) == 0 {
				s.mu.Unlock()
				s.fail(fmt.Errorf("%w: unsolicited tso answer", ErrInternal), nil)
				return
			}
			batch := s.mu.inflight[0]
			s.mu.inflight, s.mu.sentAt = s.mu.inflight[1:], s.mu.sentAt[1:]
			s.mu.Unlock()
			var total uint32
			for _, r := range batch {
				total += r.count
			}
			if resp.Count != total {
				err = fmt.Errorf("%w: asked for %d timestamps, got %d", ErrInternal, total, resp.Count)
				s.fail(err, batch)
				return
			}
			ts := resp.First
			for _, r := range batch {
				n := uint64(r.count)
				r.answer(tsoResult{first: ts})
				ts += n
			}
			s.slots <- struct{}{}
			continue
		}
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: tso stream closed by %s", ErrUnavailable, s.addr)
		}
		s.fail(err, nil)
		return
	}
}

// fail marks the session failed and sends its in-flight batches (and extra) back for a retry.
func (s *tsoSession) fail(err error, extra []*tsoReq) {
	s.mu.Lock()
	already := s.mu.failed
	s.mu.failed = true
	var reqs []*tsoReq
	for _, batch := range s.mu.inflight {
		reqs = append(reqs, batch...)
	}
	s.mu.inflight, s.mu.sentAt = nil, nil
	s.mu.Unlock()
	if !already {
		close(s.failedCh)
	}
	s.cancel()
	reqs = append(extra, reqs...)
	c := s.b.c
	if np := notPrimary(err); np != nil && np.PrimaryAddr != "" && np.PrimaryAddr != s.addr {
		c.setPrimary(np.PrimaryAddr)
	} else {
		c.forgetPrimary(s.addr)
	}
	reqs = s.b.retryOrFail(reqs, err)
	if len(reqs) > 0 && !s.b.enqueue(true, reqs...) {
		failAll(reqs, fmt.Errorf("%w: client closed", ErrUnavailable))
	}
}
