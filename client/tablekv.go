package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/catalog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Errors of the data-node key-value service, mapped from its status details.
var (
	// ErrEpochNotMatch: the route was stale (split, merge, replica change).
	ErrEpochNotMatch = errors.New("pcs: shard epoch not match")
	// ErrShardNotFound: the node has no replica of the shard.
	ErrShardNotFound = errors.New("pcs: shard not found on node")
	// ErrKeyNotInShard: the key is outside the shard's range.
	ErrKeyNotInShard = errors.New("pcs: key not in shard")
)

// TableKV reads and writes one table's rows on the data nodes. Keys are row keys (the keyenc
// encoding of the key columns); routes come from the client's cache and are refreshed when a
// node says they are stale or a node is unreachable, within the call's deadline.
type TableKV struct {
	c     *Client
	table string
}

// KV returns the key-value view of a table.
func (c *Client) KV(table string) *TableKV { return &TableKV{c: c, table: table} }

// nodes caches data node addresses by id.
type nodeAddrs struct {
	mu     sync.Mutex
	addrs  map[uint64]string
	labels map[uint64]map[string]string
	conns  map[string]*grpc.ClientConn
}

// NodeKV returns the KV client of a data node by id; addresses come from PCS (stale reads,
// cached) and connections are kept. Data nodes use it to reach each other.
func (c *Client) NodeKV(ctx context.Context, id uint64) (pcspb.KVClient, error) {
	return c.nodeKV(ctx, id)
}

func (c *Client) nodeKV(ctx context.Context, id uint64) (pcspb.KVClient, error) {
	c.nodes.mu.Lock()
	addr, ok := c.nodes.addrs[id]
	c.nodes.mu.Unlock()
	if !ok {
		resp, err := c.ListNodes(ctx, WithStale())
		if err != nil {
			return nil, err
		}
		c.nodes.mu.Lock()
		if c.nodes.labels == nil {
			c.nodes.labels = map[uint64]map[string]string{}
		}
		for _, n := range resp.Nodes {
			c.nodes.addrs[n.Node.Id] = n.Node.Address
			c.nodes.labels[n.Node.Id] = n.Node.Labels
		}
		addr, ok = c.nodes.addrs[id]
		c.nodes.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("%w: data node %d is not registered", ErrNotFound, id)
		}
	}
	c.nodes.mu.Lock()
	defer c.nodes.mu.Unlock()
	cc, ok := c.nodes.conns[addr]
	if !ok {
		var err error
		cc, err = grpc.NewClient(addr, append(c.opts.dialOptions(), grpc.WithTransportCredentials(c.opts.credentials(true)), grpc.WithConnectParams(fastReconnect))...)
		if err != nil {
			return nil, err
		}
		c.nodes.conns[addr] = cc
	}
	return pcspb.NewKVClient(cc), nil
}

// kvErr maps a data node error; stale reports whether the route should be refreshed and the
// call retried.
func kvErr(err error) (mapped error, stale bool) {
	st, ok := status.FromError(err)
	if !ok {
		return err, false
	}
	switch KVErrorOf(err).GetErr().(type) {
	case *pcspb.KVError_EpochNotMatch:
		return fmt.Errorf("%w: %s", ErrEpochNotMatch, st.Message()), true
	case *pcspb.KVError_NotPrimary:
		return fmt.Errorf("%w: %s", ErrNotPrimary, st.Message()), true
	case *pcspb.KVError_ShardNotFound:
		return fmt.Errorf("%w: %s", ErrShardNotFound, st.Message()), true
	case *pcspb.KVError_KeyNotInShard:
		return fmt.Errorf("%w: %s", ErrKeyNotInShard, st.Message()), true
	case *pcspb.KVError_NotEnoughReplicas:
		return fmt.Errorf("%w: %s", ErrNotEnoughReplicas, st.Message()), false
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("%w: %s", ErrUnavailable, st.Message()), true
	case codes.Aborted:
		return fmt.Errorf("%w: %s", ErrOutcomeUnknown, st.Message()), false
	}
	return fromStatus(err), false
}

// connReady waits briefly for the connection to a data node to be up, so that a write is only
// sent on a live connection: a write that fails on a live connection may have been applied, one
// that could not be sent was not.
func (c *Client) connReady(ctx context.Context, id uint64) bool {
	c.nodes.mu.Lock()
	cc := c.nodes.conns[c.nodes.addrs[id]]
	c.nodes.mu.Unlock()
	if cc == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	for {
		st := cc.GetState()
		if st == connectivity.Ready {
			return true
		}
		cc.Connect()
		if !cc.WaitForStateChange(ctx, st) {
			return false
		}
	}
}

// rowRetryWindow bounds how long after its first attempt a row write is retried: the data
// nodes keep the record of an applied request for 10 minutes.
const rowRetryWindow = 5 * time.Minute

// newShardWait and newShardBackoff: after PCS adds a row's interval, the write is retried every
// newShardBackoff at most for newShardWait while the new shards' replicas are made.
const (
	newShardWait    = time.Second
	newShardBackoff = 10 * time.Millisecond
)

// onShard runs call against the primary of the shard holding key, refreshing stale routes. Each
// attempt has the attempt timeout: a node that does not answer (paused, cut off) is given up on
// and the route looked up again. A write carries a request id, so the data node applies it once
// however often it is retried (across a failover too: the record travels with the write); it
// ends with ErrOutcomeUnknown only if the deadline runs out after an attempt that may have
// been applied.
func (t *TableKV) onShard(ctx context.Context, key []byte, write bool, call func(ctx context.Context, kv pcspb.KVClient, h *pcspb.KVHeader, rk []byte) error) error {
	c := t.c
	var rid *pcspb.RequestID
	if write {
		rid = c.reqs.begin()
		defer c.reqs.end(rid.Seq)
	}
	firstSent := time.Now()
	maybeApplied := false
	unknown := func(err error) error {
		if maybeApplied {
			return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		}
		return err
	}
	backoff := c.opts.BackoffBase
	limit := newAttemptLimit(c.attemptTimeout())
	var last error
	again := false          // retry at once: the routes were just refreshed
	refreshed := false      // the table's routes were looked up again after "no partition"
	var coveredAt time.Time // when PCS added the row's interval, if it was asked to
	maxAttempts := c.opts.MaxAttempts
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if again {
			again = false
		} else if attempt > 0 {
			select {
			case <-ctx.Done():
				return unknown(errors.Join(ctx.Err(), last))
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, c.opts.BackoffMax)
			if !coveredAt.IsZero() && time.Since(coveredAt) < newShardWait {
				// The new partition's replicas are being made (tens of milliseconds): look
				// again soon rather than backing off as from a fault.
				backoff = min(backoff, newShardBackoff)
			}
		}
		if maybeApplied && time.Since(firstSent) > rowRetryWindow {
			return unknown(last)
		}
		sh, rk, err := c.route(ctx, t.table, key)
		if errors.Is(err, catalog.ErrNoPartition) {
			// No partition holds the row, as the cached spec says. An interval table makes one
			// on demand for a write (idempotent: many writers may ask at once); otherwise the
			// spec is looked up again once, in case a partition was added since.
			switch {
			case write && coveredAt.IsZero() && errors.Is(err, catalog.ErrIntervalMissing):
				if _, cerr := c.AlterPartitions(ctx, t.table, &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_CoverKey{CoverKey: key}}); cerr != nil {
					return unknown(fmt.Errorf("adding the row's interval: %w", cerr))
				}
				coveredAt = time.Now()
				maxAttempts += int(newShardWait / newShardBackoff)
			case !refreshed:
				refreshed = true
			default:
				return unknown(err)
			}
			c.invalidateTable(t.table)
			again, last = true, err
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return unknown(err)
			}
			last = err
			continue
		}
		kv, err := c.nodeKV(ctx, sh.Primary)
		if err == nil && write && !c.connReady(ctx, sh.Primary) {
			err = fmt.Errorf("%w: data node %d is not reachable", ErrUnavailable, sh.Primary)
		}
		if err != nil {
			last = err
			c.InvalidateShard(t.table, sh)
			continue
		}
		actx, cancel := context.WithTimeout(ctx, limit.cur)
		if rid != nil {
			actx = c.reqs.stamp(actx, rid, maybeApplied, firstSent)
		}
		err = call(actx, kv, &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}, rk)
		timedOut := err != nil && ctx.Err() == nil && (actx.Err() != nil || status.Code(err) == codes.DeadlineExceeded)
		cancel()
		if err == nil {
			return nil
		}
		mapped, stale := kvErr(err)
		if ctx.Err() != nil {
			maybeApplied = maybeApplied || (write && !stale)
			return unknown(errors.Join(mapped, last)) // what held it up, too
		}
		code := status.Code(err)
		if timedOut || (code == codes.Unavailable && KVErrorOf(err) == nil) || code == codes.Aborted || errors.Is(mapped, ErrNotEnoughReplicas) {
			// No answer in time, a connection that failed under the call, or a write whose
			// replication did not finish or reached too few replicas: try again (a write is
			// deduplicated by the node).
			maybeApplied = maybeApplied || write
			last = mapped
			if timedOut {
				limit.timedOut()
			}
			c.InvalidateShard(t.table, sh)
			continue
		}
		if !stale {
			return unknown(mapped)
		}
		last = mapped
		c.InvalidateShard(t.table, sh)
	}
	return unknown(fmt.Errorf("after %d attempts: %w", c.opts.MaxAttempts, last))
}

// Get reads a row; found is false if it does not exist. By default the shard's primary serves
// it; WithFollowerRead and WithStaleRead let a replica serve it (WithReadFrom: one in a zone),
// and the primary still does if no replica can.
func (t *TableKV) Get(ctx context.Context, key []byte, opts ...OpOption) (value []byte, found bool, err error) {
	ctx, span := t.c.opts.tracer().Start(ctx, "TableKV.Get", trace.WithAttributes(attribute.String("table", t.table)))
	defer span.End()
	if o := collect(opts); o.rowRead != pcspb.ReadConsistency_READ_CONSISTENCY_PRIMARY {
		value, found, err = t.replicaGet(ctx, key, o)
		if err == nil || ctx.Err() != nil || errors.Is(err, ErrInvalidArgument) {
			return value, found, err
		}
	}
	err = t.onShard(ctx, key, false, func(ctx context.Context, kv pcspb.KVClient, h *pcspb.KVHeader, rk []byte) error {
		resp, err := kv.Get(ctx, &pcspb.KVGetRequest{Header: h, Key: rk})
		if err == nil {
			value, found = resp.Value, resp.Found
		}
		return err
	})
	if errors.Is(err, catalog.ErrIntervalMissing) {
		return nil, false, nil // no partition for its interval yet: the row does not exist
	}
	return value, found, err
}

// replicaGet reads a row on one replica of its shard (see Get): one attempt, whose failure
// sends the read to the primary.
func (t *TableKV) replicaGet(ctx context.Context, key []byte, o opOptions) ([]byte, bool, error) {
	c := t.c
	sh, rk, err := c.route(ctx, t.table, key)
	if errors.Is(err, catalog.ErrIntervalMissing) {
		return nil, false, nil // no partition for its interval yet: the row does not exist
	}
	if err != nil {
		return nil, false, err
	}
	node := c.pickReplica(sh, o.readFrom)
	kv, err := c.nodeKV(ctx, node)
	if err != nil {
		return nil, false, err
	}
	actx, cancel := context.WithTimeout(ctx, c.attemptTimeout())
	defer cancel()
	resp, err := kv.Get(actx, &pcspb.KVGetRequest{Header: &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}, Key: rk,
		Consistency: o.rowRead, MaxStalenessMs: uint32(min(o.maxStale.Milliseconds(), 1<<31))})
	if err != nil {
		mapped, stale := kvErr(err)
		if stale {
			c.InvalidateShard(t.table, sh)
		}
		return nil, false, fmt.Errorf("%w: reading on replica node %d", mapped, node)
	}
	if o.staleness != nil {
		*o.staleness = time.Duration(resp.StalenessMs) * time.Millisecond
	}
	return resp.Value, resp.Found, nil
}

// pickReplica chooses the replica of sh to read from: one on a node whose zone label is zone,
// else any replica, at random (reads spread over the replicas).
func (c *Client) pickReplica(sh *pcspb.Shard, zone string) uint64 {
	c.nodes.mu.Lock()
	defer c.nodes.mu.Unlock()
	if zone != "" {
		var in []uint64
		for _, r := range sh.Replicas {
			if c.nodes.labels[r]["zone"] == zone {
				in = append(in, r)
			}
		}
		if len(in) > 0 {
			return in[rand.IntN(len(in))]
		}
	}
	return sh.Replicas[rand.IntN(len(sh.Replicas))]
}

// Put writes a row.
func (t *TableKV) Put(ctx context.Context, key, value []byte) error {
	ctx, span := t.c.opts.tracer().Start(ctx, "TableKV.Put", trace.WithAttributes(attribute.String("table", t.table)))
	defer span.End()
	return t.onShard(ctx, key, true, func(ctx context.Context, kv pcspb.KVClient, h *pcspb.KVHeader, rk []byte) error {
		_, err := kv.Put(ctx, &pcspb.KVPutRequest{Header: h, Key: rk, Value: value})
		return err
	})
}

// Delete removes a row.
func (t *TableKV) Delete(ctx context.Context, key []byte) error {
	ctx, span := t.c.opts.tracer().Start(ctx, "TableKV.Delete", trace.WithAttributes(attribute.String("table", t.table)))
	defer span.End()
	return t.onShard(ctx, key, true, func(ctx context.Context, kv pcspb.KVClient, h *pcspb.KVHeader, rk []byte) error {
		_, err := kv.Delete(ctx, &pcspb.KVDeleteRequest{Header: h, Key: rk})
		return err
	})
}

// Scan returns up to limit rows with start <= key < end (nil end: no bound), in key order. It
// visits every shard of the table (hash partitions scatter a key range over all of them).
func (t *TableKV) Scan(ctx context.Context, start, end []byte, limit int) ([]*pcspb.KVPair, error) {
	c := t.c
	shards, err := c.ScanShards(ctx, t.table, nil, nil, WithLimit(100_000), WithStale())
	if err != nil {
		return nil, err
	}
	var out []*pcspb.KVPair
	for _, sh := range shards.Shards {
		leaf := sh.Start[:4]
		kv, err := c.nodeKV(ctx, sh.Primary)
		if err != nil {
			return nil, err
		}
		s := append(bytes.Clone(leaf), start...)
		var e []byte
		if len(end) > 0 {
			e = append(bytes.Clone(leaf), end...)
		}
		resp, err := kv.Scan(ctx, &pcspb.KVScanRequest{Header: &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}, Start: s, End: e, Limit: uint32(limit)})
		if err != nil {
			mapped, _ := kvErr(err)
			return nil, mapped
		}
		for _, p := range resp.Pairs {
			out = append(out, &pcspb.KVPair{Key: p.Key[4:], Value: p.Value})
		}
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Key, out[j].Key) < 0 })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// MapKVError maps an error from a raw KV call the way TableKV does.
func MapKVError(err error) error {
	mapped, _ := kvErr(err)
	return mapped
}
