package client

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/postdb/pcs/api/pcspb"
)

// WatchResponse is one batch of events, a progress report (no events: revisions up to Revision
// matched no key of the watch), or the error that ended the watch.
type WatchResponse struct {
	Events []*pcspb.Event
	// Revision: every matching event up to it has been delivered.
	Revision uint64
	Err      error
}

// Watch streams the events of keys with prefix from startRevision (0: from now). When the node
// serving it fails, the watch resumes at the next endpoint from the revision after the last one
// delivered, so no event is lost or repeated. The channel closes when ctx ends or after a
// response carrying a non-retryable error (ErrCompacted, for one).
func (c *Client) Watch(ctx context.Context, prefix []byte, startRevision uint64) <-chan WatchResponse {
	out := make(chan WatchResponse, 16)
	go func() {
		defer close(out)
		next := startRevision
		backoff := c.opts.BackoffBase
		for i := 0; ctx.Err() == nil; i++ {
			ep := c.endpoints[i%len(c.endpoints)]
			progressed, err := c.watchOnce(ctx, ep, prefix, &next, out)
			if ctx.Err() != nil {
				return
			}
			if err != nil && !retryable(err) && !errors.Is(err, io.EOF) {
				select {
				case out <- WatchResponse{Err: fromStatus(err)}:
				case <-ctx.Done():
				}
				return
			}
			if progressed {
				backoff = c.opts.BackoffBase
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, c.opts.BackoffMax)
		}
	}()
	return out
}

func (c *Client) watchOnce(ctx context.Context, ep string, prefix []byte, next *uint64, out chan<- WatchResponse) (bool, error) {
	cli, err := c.conn(ep)
	if err != nil {
		return false, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cli.Watch(wctx, &pcspb.WatchRequest{Prefix: prefix, StartRevision: *next})
	if err != nil {
		return false, err
	}
	progressed := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			return progressed, err
		}
		progressed = true
		if *next == 0 {
			*next = resp.Revision + 1 // "from now" is now fixed
		}
		if len(resp.Events) == 0 && resp.Revision < *next {
			continue // the stream's confirmation: nothing new
		}
		select {
		case out <- WatchResponse{Events: resp.Events, Revision: resp.Revision}:
			*next = resp.Revision + 1
		case <-ctx.Done():
			return progressed, ctx.Err()
		}
	}
}
