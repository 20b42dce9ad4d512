package kvnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

// MergeShards has this node, primary of a shard and of its right neighbour with the same
// configuration, absorb the neighbour into the shard as an entry of the shard's log, so that
// every replica merges at the same position. The neighbour is quiesced first: its lock is held
// (no write of it in flight) and its replicas are brought in line with this primary, so every
// replica holds it at the same position, which the entry names and each replica checks. The
// shard's epoch version becomes one past the higher of the two; requests routed by an older
// epoch are refused with EpochNotMatch, and the neighbour's with ShardNotFound, until the
// client refreshes its routes. A command for other versions, or shards this node does not
// lead, is ignored (stale). The survivor then reports the merge (ShardStats.MergedFrom) and
// PCS records it in its catalog.
func (n *Node) MergeShards(ctx context.Context, c *pcspb.MergeShardsCommand) error {
	l, ok := n.store.Replica(c.ShardId)
	r, rok := n.store.Replica(c.SourceId)
	if !ok || !rok || l.Primary != n.self() || r.Primary != n.self() || l.Epoch.GetVersion() != c.Version || r.Epoch.GetVersion() != c.SourceVersion {
		return nil
	}
	return n.serve(ctx, &pcspb.KVHeader{ShardId: l.Id, Epoch: l.Epoch}, nil, func(sh *pcspb.Shard) error {
		rl := n.shardLock(r.Id)
		rl.Lock()
		defer rl.Unlock()
		rsh, err := n.check(&pcspb.KVHeader{ShardId: r.Id, Epoch: r.Epoch})
		if err != nil {
			return err
		}
		if err := mergeable(sh, rsh); err != nil {
			return err
		}
		if rsh, err = n.syncLocked(ctx, rsh, true); err != nil {
			return notInLine(rsh, err)
		}
		if err := mergeable(sh, rsh); err != nil { // catching up may have changed its configuration
			return err
		}
		pos := n.store.Position(rsh.Id)
		survivor := proto.Clone(sh).(*pcspb.Shard)
		survivor.End = bytes.Clone(rsh.End)
		survivor.Epoch = &pcspb.ShardEpoch{ConfVer: sh.Epoch.GetConfVer(), Version: max(sh.Epoch.GetVersion(), rsh.Epoch.GetVersion()) + 1}
		m := &pcspb.MergeEntry{Survivor: survivor, SourceId: rsh.Id, SourceLsn: pos.LSN, SourceTerm: pos.Term}
		if err := n.writeLocked(ctx, sh, nil, nil, &control{merge: m}, nil); err != nil {
			return err
		}
		n.forgetReplica(rsh.Id)
		n.log.Info("shards merged", "shard", sh.Id, "absorbed", rsh.Id, "version", survivor.Epoch.Version)
		return nil
	})
}

// mergeable checks that right can be absorbed into left: the same table and partition, right
// starting where left ends, the same replicas and no learners on either.
func mergeable(left, right *pcspb.Shard) error {
	same := len(left.Replicas) == len(right.Replicas)
	for _, x := range left.Replicas {
		same = same && slices.Contains(right.Replicas, x)
	}
	switch {
	case left.TableId != right.TableId || left.Partition != right.Partition:
		return fmt.Errorf("%w: shards %d and %d are of different tables or partitions", ErrCannotMerge, left.Id, right.Id)
	case len(left.End) == 0 || !bytes.Equal(left.End, right.Start):
		return fmt.Errorf("%w: shard %d [%x, %x) is not followed by shard %d [%x, %x)", ErrCannotMerge, left.Id, left.Start, left.End, right.Id, right.Start, right.End)
	case !same || len(left.Learners) > 0 || len(right.Learners) > 0:
		return fmt.Errorf("%w: shards %d %v and %d %v need the same replicas and no learners", ErrCannotMerge, left.Id, left.Replicas, right.Id, right.Replicas)
	}
	return nil
}

// ErrCannotMerge: a merge was asked of shards that cannot make it (not neighbours, other
// replicas).
var ErrCannotMerge = errors.New("kvnode: cannot merge")

// ErrReplicaOverlaps: a replica PCS asked for overlaps one the node holds at a newer or equal
// version (PCS has not recorded a merge yet); it is not created.
var ErrReplicaOverlaps = errors.New("kvnode: replica overlaps a newer one")

// forgetReplica drops what the node keeps in memory of a replica that is gone (merged away).
func (n *Node) forgetReplica(id uint64) {
	n.mu.Lock()
	delete(n.repl, id)
	n.mu.Unlock()
	n.dropView(id)
	n.load.forget(id)
}
