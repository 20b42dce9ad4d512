package client

import (
	"context"

	"github.com/postdb/pcs/api/pcspb"
)

// The Client's calls by role, as etcd's client/v3 splits its client: an application that
// reads and writes rows needs Catalog and Rows; one that coordinates through PCS needs KV,
// Watcher and TSO; operators' tools need Cluster. Depend on the narrowest one (and mock it in
// unit tests); *Client implements them all.
type (
	// KV is the system key-value namespace: versioned keys, compare-and-swap, ranges.
	KV interface {
		Put(ctx context.Context, key, value []byte, opts ...OpOption) (*pcspb.PutResponse, error)
		Delete(ctx context.Context, key []byte, opts ...OpOption) (*pcspb.DeleteResponse, error)
		Get(ctx context.Context, key []byte, opts ...OpOption) (*pcspb.GetResponse, error)
		Range(ctx context.Context, prefix []byte, opts ...OpOption) (*pcspb.RangeResponse, error)
	}
	// Watcher streams changes of the system key-value namespace.
	Watcher interface {
		Watch(ctx context.Context, prefix []byte, startRevision uint64) <-chan WatchResponse
	}
	// TSO hands out globally ordered timestamps and unique ids.
	TSO interface {
		GetTS(ctx context.Context) (uint64, error)
		GetTSBatch(ctx context.Context, count uint32) (uint64, error)
		AllocIDs(ctx context.Context, kind string, count uint32) (uint64, error)
	}
	// Catalog creates, changes and reads tables.
	Catalog interface {
		CreateTable(ctx context.Context, t *pcspb.Table) (*pcspb.CreateTableResponse, error)
		DropTable(ctx context.Context, name string) error
		AlterTable(ctx context.Context, name string, steps [][]byte) (*pcspb.Table, error)
		GetTable(ctx context.Context, name string, opts ...OpOption) (*pcspb.GetTableResponse, error)
		ListTables(ctx context.Context, opts ...OpOption) (*pcspb.ListTablesResponse, error)
		GetTableVersion(ctx context.Context, name string, version uint64, opts ...OpOption) (*pcspb.SchemaVersion, error)
		ListJobs(ctx context.Context) ([]*pcspb.Job, error)
		CancelJob(ctx context.Context, table string) error
	}
	// Rows reads and writes a table's rows on the data nodes; keys are row keys (package
	// keyenc: the encoding of the table's key columns).
	Rows interface {
		KV(table string) *TableKV
		Route(ctx context.Context, table string, key []byte) (*pcspb.Shard, error)
	}
	// Cluster is what operators' tools use: PCS members and status, data nodes, shards and
	// scheduling.
	Cluster interface {
		Status(ctx context.Context, endpoint string, withDigest bool) (*pcspb.StatusResponse, error)
		MemberList(ctx context.Context, opts ...OpOption) (*pcspb.MemberListResponse, error)
		MemberAdd(ctx context.Context, name, peerAddr string, nonVoter, force bool) (*pcspb.MemberAddResponse, error)
		MemberPromote(ctx context.Context, name string, force bool) (*pcspb.MemberPromoteResponse, error)
		MemberRemove(ctx context.Context, name string, force bool) (*pcspb.MemberRemoveResponse, error)
		MemberTransfer(ctx context.Context, name string) (string, error)
		ListNodes(ctx context.Context, opts ...OpOption) (*pcspb.ListNodesResponse, error)
		SetNodeState(ctx context.Context, nodeID uint64, state string) error
		GetShardByID(ctx context.Context, id uint64, opts ...OpOption) (*pcspb.GetShardResponse, error)
		ScanShards(ctx context.Context, table string, start, end []byte, opts ...OpOption) (*pcspb.ScanShardsResponse, error)
		MoveShard(ctx context.Context, shardID, from, to uint64) (*pcspb.Shard, error)
		TransferPrimary(ctx context.Context, shardID, to uint64) (*pcspb.Shard, error)
		SplitShard(ctx context.Context, shardID uint64, key []byte) (left, right *pcspb.Shard, err error)
		ListOperators(ctx context.Context, shardID uint64, finished bool) ([]*pcspb.Operator, error)
		HotShards(ctx context.Context, table, by string, top uint32) (*pcspb.HotShardsResponse, error)
		Explain(ctx context.Context, shardID, nodeID uint64) ([]string, error)
		EvictPrimaries(ctx context.Context, nodeID uint64, undo bool) (*pcspb.ScheduleConfigResponse, error)
		CancelOperator(ctx context.Context, id uint64) error
		ScheduleConfig(ctx context.Context) (*pcspb.ScheduleConfigResponse, error)
		SetScheduleConfig(ctx context.Context, key, value string) (*pcspb.ScheduleConfigResponse, error)
		SnapshotSave(ctx context.Context, endpoint string) (data []byte, revision uint64, err error)
	}
)

var (
	_ KV      = (*Client)(nil)
	_ Watcher = (*Client)(nil)
	_ TSO     = (*Client)(nil)
	_ Catalog = (*Client)(nil)
	_ Rows    = (*Client)(nil)
	_ Cluster = (*Client)(nil)
)
