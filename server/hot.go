package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/internal/schedule"
)

// HotShards answers, on the primary, which shards carry the most traffic (moving averages of
// their primaries' reports) and every node's load as hot scheduling measures it: the keys/s of
// the shards it leads.
func (v *service) HotShards(ctx context.Context, req *pcspb.HotShardsRequest) (*pcspb.HotShardsResponse, error) {
	s := v.s
	cli, err := s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.HotShards(ctx, req)
	}
	measure, err := hotMeasure(req.By)
	if err != nil {
		return nil, toStatus(err)
	}
	top := int(req.Top)
	switch {
	case top == 0:
		top = 20
	case top > 1000:
		return nil, toStatus(fmt.Errorf("%w: top %d is more than 1000", ErrInvalid, top))
	}
	var hot map[uint64]time.Duration
	var cfg schedule.Config
	var now time.Duration
	if err := s.withCoordinator(func(c *schedule.Coordinator) error {
		hot, cfg, now = c.HotSince(), c.Config(), s.sched.now()
		return nil
	}); err != nil {
		return nil, toStatus(err)
	}
	resp := &pcspb.HotShardsResponse{}
	led := map[uint64]float64{}
	found := req.Table == ""
	for _, t := range s.fsm.Tables() {
		if req.Table != "" && t.Name != req.Table {
			continue
		}
		found = true
		for _, sh := range s.fsm.TableShards(t.Id) {
			ld := s.live.ShardLoad(sh.Id)
			led[sh.Primary] += ld.Reads + ld.Writes
			if ld.Reads+ld.Writes > 0 {
				resp.Shards = append(resp.Shards, &pcspb.HotShard{Shard: sh, Table: t.Name, ReadPerSec: ld.Reads, WritePerSec: ld.Writes,
					ReadBytesPerSec: ld.ReadBytes, WriteBytesPerSec: ld.WriteBytes})
			}
		}
	}
	if !found {
		return nil, toStatus(fmt.Errorf("%w: %q", meta.ErrTableNotFound, req.Table))
	}
	slices.SortStableFunc(resp.Shards, func(a, b *pcspb.HotShard) int {
		if c := cmp.Compare(measure(b), measure(a)); c != 0 {
			return c
		}
		return cmp.Compare(a.Shard.Id, b.Shard.Id)
	})
	resp.Shards = resp.Shards[:min(top, len(resp.Shards))]
	up := 0
	var sum float64
	for _, n := range s.fsm.DataNodes() {
		if n.Tombstone {
			continue
		}
		nl := &pcspb.NodeLoad{NodeId: n.Id, KeysPerSec: led[n.Id]}
		if at, ok := hot[n.Id]; ok {
			nl.HotForMs = (now - at).Milliseconds()
		}
		resp.Nodes = append(resp.Nodes, nl)
		if s.liveState(n) == "up" {
			up++
			sum += led[n.Id]
		}
	}
	if up > 0 {
		resp.MeanKeysPerSec = sum / float64(up)
		resp.HotThreshold = resp.MeanKeysPerSec * (1 + cfg.Hot.Ratio)
	}
	return resp, nil
}

func hotMeasure(by string) (func(*pcspb.HotShard) float64, error) {
	switch by {
	case "", "keys":
		return func(h *pcspb.HotShard) float64 { return h.ReadPerSec + h.WritePerSec }, nil
	case "reads":
		return func(h *pcspb.HotShard) float64 { return h.ReadPerSec }, nil
	case "writes":
		return func(h *pcspb.HotShard) float64 { return h.WritePerSec }, nil
	case "bytes":
		return func(h *pcspb.HotShard) float64 { return h.ReadBytesPerSec + h.WriteBytesPerSec }, nil
	}
	return nil, fmt.Errorf("%w: --by %q (keys, reads, writes or bytes)", ErrInvalid, by)
}

// Explain answers, on the primary, why the coordinator does or does not move a shard or a node.
func (v *service) Explain(ctx context.Context, req *pcspb.ExplainRequest) (*pcspb.ExplainResponse, error) {
	s := v.s
	if (req.ShardId == 0) == (req.NodeId == 0) {
		return nil, toStatus(fmt.Errorf("%w: explain one shard or one node", ErrInvalid))
	}
	cli, err := s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.Explain(ctx, req)
	}
	view, err := s.scheduleView(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	var lines []string
	err = s.withCoordinator(func(c *schedule.Coordinator) error {
		var err error
		if req.ShardId != 0 {
			lines, err = c.ExplainShard(s.sched.now(), view, req.ShardId)
		} else {
			lines, err = c.ExplainNode(s.sched.now(), view, req.NodeId)
		}
		return err
	})
	if errors.Is(err, schedule.ErrNotFound) {
		if req.ShardId != 0 {
			err = fmt.Errorf("%w: %w", meta.ErrShardNotFound, err)
		} else {
			err = fmt.Errorf("%w: %w", meta.ErrNodeNotFound, err)
		}
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &pcspb.ExplainResponse{Lines: lines}, nil
}
