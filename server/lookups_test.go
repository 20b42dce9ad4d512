package server

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// rpcCount is how many calls of a method the server has answered OK.
func rpcCount(t *testing.T, s *Server, method string) uint64 {
	t.Helper()
	var m dto.Metric
	if err := s.metrics.grpcSeconds.WithLabelValues("/pcs.v1.PCS/"+method, "OK").(interface{ Write(*dto.Metric) error }).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// TestGetShardCoalesces: many concurrent GetShard calls of one client share round trips (a
// BatchGetShards per batch), and each caller gets what its own call would: the shard holding
// its key, or, for a key outside every partition, the error a lone call gets, even when it
// shared a batch with keys that route.
func TestGetShardCoalesces(t *testing.T) {
	tc := newTestCluster(t, 1, fastNodes)
	tc.startNodes(3, 3)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	if _, err := c.CreateTable(ctx, rangeTable("events", "100", "200", "300")); err != nil {
		t.Fatal(err)
	}
	_, lone := c.GetShard(ctx, "events", tsKey(500, 1)) // past the last bound: no partition
	if lone == nil {
		t.Fatal("a key past every partition routed")
	}
	s := tc.primary()
	before, beforeBatch := rpcCount(t, s, "GetShard"), rpcCount(t, s, "BatchGetShards")
	const callers, each = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for w := range callers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range each {
				ts := r.Int64N(330)
				key := tsKey(ts, r.Int64())
				resp, err := c.GetShard(ctx, "events", key)
				if ts >= 300 {
					if err == nil || err.Error() != lone.Error() {
						errs <- errors.Join(errors.New("a key past every partition"), err)
					}
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				want, _, err := s.FSM().ShardForKey("events", key)
				if err != nil || resp.Shard.GetId() != want.Id {
					errs <- errors.Join(errors.New("routed to another shard"), err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	lookups, batches := rpcCount(t, s, "GetShard")-before, rpcCount(t, s, "BatchGetShards")-beforeBatch
	t.Logf("%d lookups: %d GetShard and %d BatchGetShards calls", callers*each, lookups, batches)
	if batches == 0 || lookups+batches >= callers*each {
		t.Fatalf("%d lookups took %d GetShard and %d BatchGetShards calls: not coalesced", callers*each, lookups, batches)
	}
}
