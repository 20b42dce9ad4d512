package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

// maxLookupBatch is the most keys one batched lookup asks for (the server takes up to 10,000).
const maxLookupBatch = 1024

// lookupsInFlight is how many calls of one kind may be on the wire at once; lookups made
// while that many are gather into the next batch. More than one keeps a slow answer (a
// pause on the server, a lost packet) from holding up every caller behind it.
const lookupsInFlight = 2

// lookupTimeout bounds a batched lookup: it serves several callers, so no one caller's
// context governs it (each caller still returns when its own context ends).
const lookupTimeout = 30 * time.Second

// lookupKind is what lookups must share to be answered by one BatchGetShards call.
type lookupKind struct {
	table       string
	consistency pcspb.Consistency
	endpoint    string
}

type lookup struct {
	key  []byte
	resp *pcspb.GetShardResponse
	err  error
	done chan struct{}
}

// lookupQueue is one kind's lookups: how many calls are on the wire, and who waits for the next.
type lookupQueue struct {
	inFlight int
	pending  []*lookup
}

// lookups coalesces concurrent GetShard calls. A call finding fewer than lookupsInFlight others
// of its kind on the wire goes out at once, alone, as a GetShard. Calls made while that many
// are on the wire wait and then go out together as one BatchGetShards when one returns, and so
// on: a thousand concurrent lookups cost a few round trips instead of a thousand. A read started
// after every caller in it began is as linearizable for each as its own call would be.
//
// A key the server refuses in a batch (outside every partition, malformed) is named in its
// answer; that key gets a call of its own and the keys on either side go again as batches, so
// each caller gets the answer its own call would have.
type lookups struct {
	c  *Client
	mu sync.Mutex
	q  map[lookupKind]*lookupQueue
}

func (l *lookups) get(ctx context.Context, k lookupKind, key []byte) (*pcspb.GetShardResponse, error) {
	l.mu.Lock()
	if l.q == nil {
		l.q = map[lookupKind]*lookupQueue{}
	}
	q := l.q[k]
	if q == nil {
		q = &lookupQueue{}
		l.q[k] = q
	}
	if q.inFlight < lookupsInFlight {
		q.inFlight++
		l.mu.Unlock()
		resp, err := l.single(ctx, k, key)
		l.next(k, q)
		return resp, err
	}
	lk := &lookup{key: key, done: make(chan struct{})}
	q.pending = append(q.pending, lk)
	l.mu.Unlock()
	select {
	case <-lk.done:
		return lk.resp, lk.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// next sends the kind's waiting lookups as one batch in place of a call that returned, or
// counts one call fewer on the wire if none wait.
func (l *lookups) next(k lookupKind, q *lookupQueue) {
	l.mu.Lock()
	if len(q.pending) == 0 {
		q.inFlight--
		if q.inFlight == 0 && l.q[k] == q {
			delete(l.q, k) // idle kinds cost nothing (tables come and go)
		}
		l.mu.Unlock()
		return
	}
	n := min(len(q.pending), maxLookupBatch)
	batch := q.pending[:n:n]
	q.pending = q.pending[n:]
	l.mu.Unlock()
	go func() {
		l.send(k, batch)
		l.next(k, q)
	}()
}

func (l *lookups) single(ctx context.Context, k lookupKind, key []byte) (*pcspb.GetShardResponse, error) {
	var resp *pcspb.GetShardResponse
	err := l.c.do(ctx, target{endpoint: k.endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.GetShard(ctx, &pcspb.GetShardRequest{Table: k.table, Key: key, Consistency: k.consistency})
		return err
	})
	return resp, err
}

// send answers a batch of lookups with one BatchGetShards. When the server refuses one key of
// the batch (outside every partition, malformed: it names the key), that key gets the answer
// of a call of its own and the keys on either side are sent again as batches.
func (l *lookups) send(k lookupKind, batch []*lookup) {
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	l.sendWithin(ctx, k, batch)
}

func (l *lookups) sendWithin(ctx context.Context, k lookupKind, batch []*lookup) {
	if len(batch) == 0 {
		return
	}
	if len(batch) == 1 {
		lk := batch[0]
		lk.resp, lk.err = l.single(ctx, k, lk.key)
		close(lk.done)
		return
	}
	keys := make([][]byte, len(batch))
	for i, lk := range batch {
		keys[i] = lk.key
	}
	var resp *pcspb.BatchGetShardsResponse
	var raw error // the server's own status, which names a refused key
	err := l.c.do(ctx, target{endpoint: k.endpoint}, func(ctx context.Context, cli pcspb.PCSClient) error {
		resp, raw = cli.BatchGetShards(ctx, &pcspb.BatchGetShardsRequest{Table: k.table, Keys: keys, Consistency: k.consistency})
		return raw
	})
	if err == nil && len(resp.Shards) != len(batch) {
		err = fmt.Errorf("%w: %d shards for %d keys", ErrInternal, len(resp.Shards), len(batch))
	}
	if err == nil {
		for i, lk := range batch {
			lk.resp = &pcspb.GetShardResponse{Header: proto.Clone(resp.Header).(*pcspb.ReadHeader), Shard: resp.Shards[i]}
			close(lk.done)
		}
		return
	}
	if i, ok := pcspb.BadKeyIndex(raw); ok && i < len(batch) {
		l.sendWithin(ctx, k, batch[i:i+1])
		l.sendWithin(ctx, k, batch[:i])
		l.sendWithin(ctx, k, batch[i+1:])
		return
	}
	for _, lk := range batch { // the batch failed as each call would have (no primary, deadline)
		lk.err = err
		close(lk.done)
	}
}
