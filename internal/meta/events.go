package meta

import (
	"fmt"
	"strings"

	"github.com/postdb/pcs/api/pcspb"
)

// Event is an applied change an operator would want in an event log (the console's): members,
// nodes, tables, DDL, partitions, shards. Key-value writes, TSO windows and id allocations are
// not events.
type Event struct {
	Index uint64 `json:"index"` // Raft index of the command
	AtMs  uint64 `json:"at_ms"` // the proposer's wall clock, Unix ms (0 for old entries)
	Kind  string `json:"kind"`  // member, node, table, ddl, partition, shard, cluster
	Text  string `json:"text"`
}

// describeLocked says what cmd is about to change, as an event, while st still holds the names
// it refers to; ok is false for commands that are not events.
func describeLocked(st *state, cmd *pcspb.Command) (kind, text string, ok bool) {
	table := func(id uint64) string {
		if e, ok := st.cat.tables[id]; ok {
			return e.t.Name
		}
		return fmt.Sprintf("#%d", id)
	}
	shard := func(id uint64) string {
		if sh, ok := st.cat.shardByID.get(id); ok {
			if e, ok := st.cat.tables[sh.TableId]; ok {
				return fmt.Sprintf("shard %d (%s)", id, e.t.Name)
			}
		}
		return fmt.Sprintf("shard %d", id)
	}
	switch op := cmd.Op.(type) {
	case *pcspb.Command_SetMember:
		m := op.SetMember.Member
		if _, known := st.members[m.Name]; known {
			return "member", fmt.Sprintf("member %s updated its addresses (client %s)", m.Name, m.ClientAddr), true
		}
		return "member", fmt.Sprintf("member %s joined (client %s)", m.Name, m.ClientAddr), true
	case *pcspb.Command_RemoveMember:
		return "member", fmt.Sprintf("member %s removed", op.RemoveMember.Name), true
	case *pcspb.Command_SetClusterVersion:
		return "cluster", fmt.Sprintf("cluster version %d", op.SetClusterVersion.Version), true
	case *pcspb.Command_RegisterNode:
		n := op.RegisterNode.Node
		if _, known := st.cat.nodes[n.Id]; known {
			return "node", fmt.Sprintf("node %d re-registered at %s", n.Id, n.Address), true
		}
		return "node", fmt.Sprintf("node %d registered at %s", n.Id, n.Address), true
	case *pcspb.Command_SetNodeAdmin:
		a := op.SetNodeAdmin
		state := "up (admin state cleared)"
		switch {
		case a.Tombstone:
			state = "tombstone"
		case a.Offline:
			state = "offline (draining)"
		}
		return "node", fmt.Sprintf("node %d set %s", a.NodeId, state), true
	case *pcspb.Command_CreateTable:
		return "table", fmt.Sprintf("table %s created with %d shards", op.CreateTable.Table.Name, len(op.CreateTable.Shards)), true
	case *pcspb.Command_SetTableState:
		return "table", fmt.Sprintf("table %s is %s", table(op.SetTableState.TableId), strings.ToLower(strings.TrimPrefix(op.SetTableState.State.String(), "TABLE_STATE_"))), true
	case *pcspb.Command_DeleteTable:
		return "table", fmt.Sprintf("table %s deleted", table(op.DeleteTable.TableId)), true
	case *pcspb.Command_AlterTable:
		return "ddl", fmt.Sprintf("table %s: schema change started (%d steps)", table(op.AlterTable.TableId), len(op.AlterTable.Steps)), true
	case *pcspb.Command_AdvanceSchema:
		return "ddl", fmt.Sprintf("table %s: schema change advanced", table(op.AdvanceSchema.TableId)), true
	case *pcspb.Command_CancelAlter:
		return "ddl", fmt.Sprintf("table %s: schema change cancelled", table(op.CancelAlter.TableId)), true
	case *pcspb.Command_AlterPartitions:
		return "partition", fmt.Sprintf("table %s: %s", table(op.AlterPartitions.TableId), describeAlter(op.AlterPartitions.Alter)), true
	case *pcspb.Command_FinishPartitionJob:
		return "partition", fmt.Sprintf("table %s: partition job %d finished", table(op.FinishPartitionJob.TableId), op.FinishPartitionJob.JobId), true
	case *pcspb.Command_SplitShard:
		return "shard", fmt.Sprintf("%s split at %x into %d", shard(op.SplitShard.ShardId), op.SplitShard.SplitKey, op.SplitShard.NewShardId), true
	case *pcspb.Command_MergeShards:
		return "shard", fmt.Sprintf("%s merged into shard %d", shard(op.MergeShards.SourceId), op.MergeShards.ShardId), true
	case *pcspb.Command_ChangePrimary:
		c := op.ChangePrimary
		if c.RemoveNode != 0 {
			return "shard", fmt.Sprintf("%s: primary to node %d, node %d removed", shard(c.ShardId), c.NewPrimary, c.RemoveNode), true
		}
		return "shard", fmt.Sprintf("%s: primary to node %d", shard(c.ShardId), c.NewPrimary), true
	case *pcspb.Command_ChangeReplicas:
		c := op.ChangeReplicas
		switch {
		case c.AddLearner != 0:
			return "shard", fmt.Sprintf("%s: learner added on node %d", shard(c.ShardId), c.AddLearner), true
		case c.PromoteLearner != 0:
			return "shard", fmt.Sprintf("%s: learner on node %d promoted", shard(c.ShardId), c.PromoteLearner), true
		case c.RemoveNode != 0:
			return "shard", fmt.Sprintf("%s: replica on node %d removed", shard(c.ShardId), c.RemoveNode), true
		}
		return "shard", fmt.Sprintf("%s: replicas changed", shard(c.ShardId)), true
	}
	return "", "", false
}

func describeAlter(a *pcspb.PartitionAlter) string {
	switch op := a.GetOp().(type) {
	case *pcspb.PartitionAlter_AddRange:
		return "partition " + op.AddRange.Name + " added"
	case *pcspb.PartitionAlter_AddList:
		return "partition " + op.AddList.Name + " added"
	case *pcspb.PartitionAlter_Drop:
		return "partition " + op.Drop + " dropped"
	case *pcspb.PartitionAlter_Truncate:
		return "partition " + op.Truncate + " truncated"
	case *pcspb.PartitionAlter_SetReplicas:
		return fmt.Sprintf("replicas set to %d", op.SetReplicas)
	case *pcspb.PartitionAlter_CoverKey:
		return "interval partitions made for a row"
	}
	return "partitions changed"
}
