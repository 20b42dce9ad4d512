package kvnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/postdb/pcs/api/pcspb"
)

// rangeMiddle returns a key about halfway between start and end (end empty: unbounded), read
// as big-endian fractions, or nil if there is none strictly between them.
func rangeMiddle(start, end []byte) []byte {
	n := max(len(start), len(end)) + 1
	pad := func(b []byte) *big.Int {
		return new(big.Int).SetBytes(append(bytes.Clone(b), make([]byte, n-len(b))...))
	}
	lo, hi := pad(start), new(big.Int).Lsh(big.NewInt(1), uint(8*n))
	if len(end) > 0 {
		hi = pad(end)
	}
	inside := func(k []byte) bool {
		return bytes.Compare(k, start) > 0 && (len(end) == 0 || bytes.Compare(k, end) < 0)
	}
	mid := new(big.Int).Rsh(new(big.Int).Add(lo, hi), 1).FillBytes(make([]byte, n))
	for len(mid) > 1 && mid[len(mid)-1] == 0 && inside(mid[:len(mid)-1]) {
		mid = mid[:len(mid)-1]
	}
	if inside(mid) {
		return mid
	}
	// The bounds differ only in trailing zero bytes: the smallest key after start.
	if next := append(bytes.Clone(start), 0); inside(next) {
		return next
	}
	return nil
}

// maxLoadSplitShare: a split by load is refused unless the larger half takes at most this
// share of the shard's sampled accesses (one key taking most of the load cannot be split away).
const maxLoadSplitShare = 2.0 / 3

// ErrCannotSplit: a split was asked of a shard that cannot make it (too few keys, a key outside
// the shard, the new id in use).
var ErrCannotSplit = errors.New("kvnode: cannot split")

// SplitShard splits a shard this node is primary of, as an entry of the shard's log so that
// every replica splits at the same position; PCS learns of it from the next heartbeat. A
// command for another version of the shard, or a shard this node does not lead, is ignored
// (the command is stale). An empty key splits the data into halves of about equal size; by
// load, the recent accesses (sampled) into halves of about equal traffic.
func (n *Node) SplitShard(ctx context.Context, c *pcspb.SplitShardCommand) (err error) {
	sh, ok := n.store.Replica(c.ShardId)
	if !ok || sh.Primary != n.self() || sh.Epoch.GetVersion() != c.Version {
		return nil
	}
	ctx, span := n.tracer().Start(ctx, "kvnode.split", trace.WithAttributes(attribute.Int64("shard", int64(c.ShardId)), attribute.Bool("by_load", c.ByLoad)))
	defer func() { endSpan(span, err) }()
	h := &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}
	return n.serve(ctx, h, nil, func(sh *pcspb.Shard) error {
		key := c.SplitKey
		if len(key) == 0 && c.ByLoad {
			k, share := n.load.splitKey(sh.Id, sh.Start, sh.End)
			if k == nil || share > maxLoadSplitShare {
				return fmt.Errorf("%w: shard %d: no sampled key divides its recent load better than %.0f%% (best %.0f%%)",
					ErrCannotSplit, sh.Id, 100*maxLoadSplitShare, 100*share)
			}
			key = k
		}
		if len(key) == 0 {
			var err error
			if _, key, err = n.store.SplitPoint(sh.Id); err != nil {
				return err
			}
			if key == nil {
				// Fewer than two keys (an empty table being pre-split): the middle of the range.
				if key = rangeMiddle(sh.Start, sh.End); key == nil {
					return fmt.Errorf("%w: shard %d has fewer than two keys and no key between its bounds", ErrCannotSplit, sh.Id)
				}
			}
		}
		if bytes.Compare(key, sh.Start) <= 0 || (len(sh.End) > 0 && bytes.Compare(key, sh.End) >= 0) {
			return fmt.Errorf("%w: key %x is not strictly inside shard %d [%x, %x)", ErrCannotSplit, key, sh.Id, sh.Start, sh.End)
		}
		if _, exists := n.store.Replica(c.NewShardId); exists || c.NewShardId == 0 {
			return fmt.Errorf("%w: shard id %d is in use", ErrCannotSplit, c.NewShardId)
		}
		right := &pcspb.Shard{Id: c.NewShardId, TableId: sh.TableId, Start: bytes.Clone(key), End: sh.End,
			Epoch: &pcspb.ShardEpoch{ConfVer: sh.Epoch.GetConfVer(), Version: sh.Epoch.GetVersion() + 1},
			Term:  sh.Term, Primary: sh.Primary, Replicas: sh.Replicas, Learners: sh.Learners, Partition: sh.Partition}
		rl := n.shardLock(right.Id)
		rl.Lock()
		defer rl.Unlock()
		if err := n.writeLocked(ctx, sh, nil, nil, &control{split: right}, nil); err != nil {
			return err
		}
		// Every replica in line with the parent has the new shard's first position.
		n.mu.Lock()
		prs, nrs := n.state(sh), n.state(right)
		for k, v := range prs.inSync {
			nrs.inSync[k] = v
		}
		n.mu.Unlock()
		n.load.split(sh.Id, right.Id)
		n.metrics.splits.Inc()
		n.log.Info("shard split", "shard", sh.Id, "new_shard", right.Id, "key", fmt.Sprintf("%x", key), "version", right.Epoch.Version)
		return nil
	})
}
