package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/postdb/pcs/api/pcspb"
)

// MoveShard moves a replica of a shard from one node to another and waits until the move is
// done: PCS carries it out as an operator (a learner on the target, promoted once in line, the
// primary handed over if the source led, the source removed). Safe to call again after an
// error: a move already done returns at once, one under way is waited for.
func (c *Client) MoveShard(ctx context.Context, shardID, from, to uint64) (*pcspb.Shard, error) {
	done := func(sh *pcspb.Shard) bool {
		return slices.Contains(sh.Replicas, to) && !slices.Contains(sh.Replicas, from) && !slices.Contains(sh.Learners, from)
	}
	return c.runOperator(ctx, shardID, done, func(ctx context.Context, cli pcspb.PCSClient) (uint64, error) {
		resp, err := cli.MoveShard(ctx, &pcspb.MoveShardRequest{ShardId: shardID, FromNode: from, ToNode: to})
		if err != nil {
			return 0, err
		}
		return resp.OperatorId, nil
	})
}

// TransferPrimary makes another replica the shard's primary (its term bumps) and waits until
// it is.
func (c *Client) TransferPrimary(ctx context.Context, shardID, to uint64) (*pcspb.Shard, error) {
	done := func(sh *pcspb.Shard) bool { return sh.Primary == to }
	return c.runOperator(ctx, shardID, done, func(ctx context.Context, cli pcspb.PCSClient) (uint64, error) {
		resp, err := cli.TransferPrimary(ctx, &pcspb.TransferPrimaryRequest{ShardId: shardID, ToNode: to})
		if err != nil {
			return 0, err
		}
		return resp.OperatorId, nil
	})
}

// SplitShard splits a shard at key (empty: its primary picks the middle key of its data) and
// waits until the catalog records it; it returns both halves. PCS carries the split out as an
// operator. A retried submission cannot split twice: a shard holds one operator at a time, so
// a second is refused (ErrFailedPrecondition) while the first runs.
func (c *Client) SplitShard(ctx context.Context, shardID uint64, key []byte) (left, right *pcspb.Shard, err error) {
	var resp *pcspb.SplitShardResponse
	err = c.do(ctx, target{long: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.SplitShard(ctx, &pcspb.SplitShardRequest{ShardId: shardID, SplitKey: key})
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	if err := c.WaitOperator(ctx, shardID, resp.OperatorId); err != nil {
		return nil, nil, err
	}
	r, err := c.GetShardByID(ctx, resp.NewShardId)
	if errors.Is(err, ErrNotFound) {
		return nil, nil, fmt.Errorf("%w: shard %d was split by another request", ErrStaleEpoch, shardID)
	}
	if err != nil {
		return nil, nil, err
	}
	l, err := c.GetShardByID(ctx, shardID)
	if err != nil {
		return nil, nil, err
	}
	return l.Shard, r.Shard, nil
}

// runOperator submits an operator and waits until the shard shows the result. Submitting is
// safe to repeat: the shard holds one operator at a time, and a shard busy with another is
// waited for, then looked at again.
func (c *Client) runOperator(ctx context.Context, shardID uint64, done func(*pcspb.Shard) bool,
	submit func(context.Context, pcspb.PCSClient) (uint64, error)) (*pcspb.Shard, error) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		sh, err := c.GetShardByID(ctx, shardID)
		if err != nil {
			return nil, err
		}
		if done(sh.Shard) {
			return sh.Shard, nil
		}
		var id uint64
		err = c.do(ctx, target{long: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
			id, err = submit(ctx, cli)
			return err
		})
		switch {
		case errors.Is(err, ErrFailedPrecondition):
			// The shard has another operator: wait for it, then decide again.
		case err != nil:
			return nil, err
		}
		if err := c.WaitOperator(ctx, shardID, id); err != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// ErrOperatorFailed means an operator ended without finishing its steps (cancelled, timed out).
var ErrOperatorFailed = errors.New("pcs: operator did not finish")

// WaitOperator waits until the shard has no queued or running operator (id: the one to report
// on; 0 for any). It returns ErrOperatorFailed if operator id ended cancelled or timed out.
func (c *Client) WaitOperator(ctx context.Context, shardID, id uint64) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		ops, err := c.ListOperators(ctx, shardID, true)
		if err != nil {
			return err
		}
		busy := false
		for _, op := range ops {
			switch {
			case op.State == "queued" || op.State == "running":
				busy = true
			case op.Id == id && id != 0 && op.State != "done":
				return fmt.Errorf("%w: operator %d %s: %s", ErrOperatorFailed, op.Id, op.State, op.Reason)
			}
		}
		if !busy {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// ListOperators lists the primary's queued and running operators (of one shard, or all with
// shardID 0); with finished, also the recently finished ones.
func (c *Client) ListOperators(ctx context.Context, shardID uint64, finished bool) ([]*pcspb.Operator, error) {
	var resp *pcspb.ListOperatorsResponse
	err := c.do(ctx, target{}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.ListOperators(ctx, &pcspb.ListOperatorsRequest{ShardId: shardID, Finished: finished})
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp.Operators, nil
}

// EvictPrimaries makes a data node lead no shard (its primaries move to other replicas; none
// are given to it), or with undo lets it lead again. It returns the configuration in force.
func (c *Client) EvictPrimaries(ctx context.Context, nodeID uint64, undo bool) (*pcspb.ScheduleConfigResponse, error) {
	var resp *pcspb.ScheduleConfigResponse
	err := c.do(ctx, target{}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.EvictPrimaries(ctx, &pcspb.EvictPrimariesRequest{NodeId: nodeID, Undo: undo})
		return err
	})
	return resp, err
}

// Explain returns why the coordinator does or does not move a shard (shardID) or a node (nodeID;
// give one of them): one statement a line.
func (c *Client) Explain(ctx context.Context, shardID, nodeID uint64) ([]string, error) {
	var resp *pcspb.ExplainResponse
	err := c.do(ctx, target{}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.Explain(ctx, &pcspb.ExplainRequest{ShardId: shardID, NodeId: nodeID})
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp.Lines, nil
}

// HotShards returns the shards with the most traffic (by keys, reads, writes or bytes; "" is
// keys), at most top of them (0: 20), of one table or all (""), with every node's load as hot
// scheduling sees it.
func (c *Client) HotShards(ctx context.Context, table, by string, top uint32) (*pcspb.HotShardsResponse, error) {
	var resp *pcspb.HotShardsResponse
	err := c.do(ctx, target{}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.HotShards(ctx, &pcspb.HotShardsRequest{Table: table, By: by, Top: top})
		return err
	})
	return resp, err
}

// AddOperator submits an operator: kind move (from, to), transfer-primary (to), remove (from)
// or add (to). It returns at once with the queued operator.
func (c *Client) AddOperator(ctx context.Context, shardID uint64, kind string, from, to uint64) (*pcspb.Operator, error) {
	var resp *pcspb.AddOperatorResponse
	// A retry cannot queue a second operator: a shard holds one at a time (the retry is refused
	// with ErrFailedPrecondition naming the first).
	err := c.do(ctx, target{}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.AddOperator(ctx, &pcspb.AddOperatorRequest{ShardId: shardID, Kind: kind, FromNode: from, ToNode: to})
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp.Operator, nil
}

// CancelOperator cancels a queued or running operator; the shard stays as its finished steps
// left it (the checkers tidy up a half-added replica).
func (c *Client) CancelOperator(ctx context.Context, id uint64) error {
	return c.do(ctx, target{}, func(ctx context.Context, cli pcspb.PCSClient) error {
		_, err := cli.CancelOperator(ctx, &pcspb.CancelOperatorRequest{Id: id})
		return err
	})
}

// ScheduleConfig returns the scheduling settings in force and the schedulers.
func (c *Client) ScheduleConfig(ctx context.Context) (*pcspb.ScheduleConfigResponse, error) {
	var resp *pcspb.ScheduleConfigResponse
	err := c.do(ctx, target{}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.GetScheduleConfig(ctx, &pcspb.ScheduleConfigRequest{})
		return err
	})
	return resp, err
}

// SetScheduleConfig changes one scheduling setting (see `pcsctl config get` for the names).
func (c *Client) SetScheduleConfig(ctx context.Context, key, value string) (*pcspb.ScheduleConfigResponse, error) {
	var resp *pcspb.ScheduleConfigResponse
	err := c.do(ctx, target{write: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.SetScheduleConfig(ctx, &pcspb.SetScheduleConfigRequest{Key: key, Value: value})
		return err
	})
	return resp, err
}
