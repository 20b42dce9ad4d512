package client

import (
	"context"

	"github.com/postdb/pcs/api/pcspb"
)

// RegisterNode registers a data node (or finds the id its address already holds); the
// response also names the cluster.
func (c *Client) RegisterNode(ctx context.Context, address string, labels map[string]string, capacity uint64) (*pcspb.RegisterNodeResponse, error) {
	var resp *pcspb.RegisterNodeResponse
	err := c.do(ctx, target{write: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.RegisterNode(ctx, &pcspb.RegisterNodeRequest{Address: address, Labels: labels, CapacityBytes: capacity})
		return err
	})
	return resp, err
}

// ListNodes lists the registered data nodes with their state and load.
func (c *Client) ListNodes(ctx context.Context, opts ...OpOption) (*pcspb.ListNodesResponse, error) {
	o := collect(opts)
	var resp *pcspb.ListNodesResponse
	err := c.do(ctx, target{endpoint: o.endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.ListNodes(ctx, &pcspb.ListNodesRequest{Consistency: o.consistency})
		return err
	})
	return resp, err
}

// CreateTable creates a table: its shards are computed from the partition spec and placed.
func (c *Client) CreateTable(ctx context.Context, t *pcspb.Table) (*pcspb.CreateTableResponse, error) {
	var resp *pcspb.CreateTableResponse
	err := c.do(ctx, target{write: true, long: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.CreateTable(ctx, &pcspb.CreateTableRequest{Table: t})
		return err
	})
	return resp, err
}

// DropTable starts dropping a table.
func (c *Client) DropTable(ctx context.Context, name string) error {
	return c.do(ctx, target{write: true}, func(ctx context.Context, cli pcspb.PCSClient) error {
		_, err := cli.DropTable(ctx, &pcspb.DropTableRequest{Name: name})
		return err
	})
}

// GetTable returns a table and its shard count.
func (c *Client) GetTable(ctx context.Context, name string, opts ...OpOption) (*pcspb.GetTableResponse, error) {
	o := collect(opts)
	var resp *pcspb.GetTableResponse
	err := c.do(ctx, target{endpoint: o.endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.GetTable(ctx, &pcspb.GetTableRequest{Name: name, Consistency: o.consistency})
		return err
	})
	return resp, err
}

// ListTables lists tables.
func (c *Client) ListTables(ctx context.Context, opts ...OpOption) (*pcspb.ListTablesResponse, error) {
	o := collect(opts)
	var resp *pcspb.ListTablesResponse
	err := c.do(ctx, target{endpoint: o.endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.ListTables(ctx, &pcspb.ListTablesRequest{Consistency: o.consistency})
		return err
	})
	return resp, err
}

// GetShard returns the shard of table holding a row key (keyenc of the key columns).
// Concurrent calls for one table share round trips: see lookups.
func (c *Client) GetShard(ctx context.Context, table string, key []byte, opts ...OpOption) (*pcspb.GetShardResponse, error) {
	o := collect(opts)
	return c.lookups.get(ctx, lookupKind{table: table, consistency: o.consistency, endpoint: o.endpoint}, key)
}

// GetShardByID returns a shard by id.
func (c *Client) GetShardByID(ctx context.Context, id uint64, opts ...OpOption) (*pcspb.GetShardResponse, error) {
	o := collect(opts)
	var resp *pcspb.GetShardResponse
	err := c.do(ctx, target{endpoint: o.endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.GetShardByID(ctx, &pcspb.GetShardByIDRequest{Id: id, Consistency: o.consistency})
		return err
	})
	return resp, err
}

// ScanShards lists a table's shards in routing-key order from start to end (nil: unbounded).
func (c *Client) ScanShards(ctx context.Context, table string, start, end []byte, opts ...OpOption) (*pcspb.ScanShardsResponse, error) {
	o := collect(opts)
	var resp *pcspb.ScanShardsResponse
	err := c.do(ctx, target{endpoint: o.endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.ScanShards(ctx, &pcspb.ScanShardsRequest{Table: table, Start: start, End: end, Limit: o.limit, Consistency: o.consistency, WithStats: o.stats})
		return err
	})
	return resp, err
}

// HeartbeatStream opens a data node's heartbeat stream to the current primary. Callers reopen
// it (after a backoff) when it fails; the primary is rediscovered.
func (c *Client) HeartbeatStream(ctx context.Context) (pcspb.PCS_HeartbeatClient, error) {
	addr, err := c.primary(ctx)
	if err != nil {
		return nil, fromStatus(err)
	}
	cli, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	stream, err := cli.Heartbeat(ctx)
	if err != nil {
		c.forgetPrimary(addr)
		return nil, fromStatus(err)
	}
	return &hbStream{PCS_HeartbeatClient: stream, c: c, addr: addr}, nil
}

// hbStream forgets (or redirects) the cached primary when its stream fails.
type hbStream struct {
	pcspb.PCS_HeartbeatClient
	c    *Client
	addr string
}

func (s *hbStream) Recv() (*pcspb.HeartbeatResponse, error) {
	resp, err := s.PCS_HeartbeatClient.Recv()
	if err != nil {
		if np := notPrimary(err); np != nil && np.PrimaryAddr != "" && np.PrimaryAddr != s.addr {
			s.c.setPrimary(np.PrimaryAddr)
		} else {
			s.c.forgetPrimary(s.addr)
		}
	}
	return resp, err
}

// BatchGetShards routes many row keys of one table in one call; shards[i] holds keys[i].
func (c *Client) BatchGetShards(ctx context.Context, table string, keys [][]byte, opts ...OpOption) ([]*pcspb.Shard, error) {
	o := collect(opts)
	var resp *pcspb.BatchGetShardsResponse
	err := c.do(ctx, target{endpoint: o.endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.BatchGetShards(ctx, &pcspb.BatchGetShardsRequest{Table: table, Keys: keys, Consistency: o.consistency})
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp.Shards, nil
}

// AlterTable starts an online schema change of one new version per step; it returns once the
// first step is the newest version. The steps advance as the data nodes load them.
func (c *Client) AlterTable(ctx context.Context, name string, steps [][]byte) (*pcspb.Table, error) {
	var resp *pcspb.AlterTableResponse
	err := c.do(ctx, target{write: true, long: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.AlterTable(ctx, &pcspb.AlterTableRequest{Name: name, Steps: steps})
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp.Table, nil
}

// AlterPartitions changes a table's partitions (ADD, DROP, TRUNCATE PARTITION) or its replica
// count, and returns the table as changed. The data nodes carry out the change as a job
// (ListJobs); rows route by the new partitions at once.
func (c *Client) AlterPartitions(ctx context.Context, name string, alter *pcspb.PartitionAlter) (*pcspb.Table, error) {
	var resp *pcspb.AlterPartitionsResponse
	err := c.do(ctx, target{write: true, long: true}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.AlterPartitions(ctx, &pcspb.AlterPartitionsRequest{Name: name, Alter: alter})
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp.Table, nil
}

// GetTableVersion returns a live schema version of a table.
func (c *Client) GetTableVersion(ctx context.Context, name string, version uint64, opts ...OpOption) (*pcspb.SchemaVersion, error) {
	o := collect(opts)
	var resp *pcspb.GetTableResponse
	err := c.do(ctx, target{endpoint: o.endpoint}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.GetTable(ctx, &pcspb.GetTableRequest{Name: name, Version: version, Consistency: o.consistency})
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp.Schema, nil
}

// ListJobs lists the DDL jobs under way, with the primary's view of their progress.
func (c *Client) ListJobs(ctx context.Context) ([]*pcspb.Job, error) {
	var resp *pcspb.ListJobsResponse
	err := c.do(ctx, target{}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.ListJobs(ctx, &pcspb.ListJobsRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp.Jobs, nil
}

// CancelJob cancels a table's create (rolled back by dropping) or an ALTER's pending steps.
func (c *Client) CancelJob(ctx context.Context, table string) error {
	return c.do(ctx, target{write: true}, func(ctx context.Context, cli pcspb.PCSClient) error {
		_, err := cli.CancelJob(ctx, &pcspb.CancelJobRequest{Table: table})
		return err
	})
}

// SetNodeState records an operator's decision about a data node: up, offline (no new
// replicas) or tombstone (removed; refused while it holds replicas).
func (c *Client) SetNodeState(ctx context.Context, nodeID uint64, state string) error {
	return c.do(ctx, target{write: true}, func(ctx context.Context, cli pcspb.PCSClient) error {
		_, err := cli.SetNodeState(ctx, &pcspb.SetNodeStateRequest{NodeId: nodeID, State: state})
		return err
	})
}

// AskSplit reserves the id of the new half of a split a shard's primary wants to make.
func (c *Client) AskSplit(ctx context.Context, shardID uint64, epoch *pcspb.ShardEpoch) (uint64, error) {
	var resp *pcspb.AskSplitResponse
	err := c.do(ctx, target{}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.AskSplit(ctx, &pcspb.AskSplitRequest{ShardId: shardID, Epoch: epoch})
		return err
	})
	if err != nil {
		return 0, err
	}
	return resp.NewShardId, nil
}

// RemoveReplicas asks PCS, as a shard's primary, to take replicas that did not persist a write
// out of the shard's configuration; it returns the new configuration.
func (c *Client) RemoveReplicas(ctx context.Context, req *pcspb.RemoveReplicasRequest) (*pcspb.Shard, error) {
	var resp *pcspb.RemoveReplicasResponse
	err := c.do(ctx, target{}, func(ctx context.Context, cli pcspb.PCSClient) (err error) {
		resp, err = cli.RemoveReplicas(ctx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp.Shard, nil
}
