package meta

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

// CommandVersion is the newest command format this build reads (and writes once the cluster
// version allows). Version 2 adds client request ids (exactly-once) and the proposer's clock;
// version 3 bounds client sessions by the log; version 4 adds shard merges; version 5 adds
// partition changes (ADD, DROP, TRUNCATE PARTITION, SET REPLICAS).
// Entries of every version up to it are read; the primary writes the cluster version in force,
// which rises only once every member reports it can read it (etcd's cluster version), so no
// member ever meets an entry it would apply differently.
const CommandVersion = 5

// VersionRequestIDs is the first command version whose entries carry request ids.
const VersionRequestIDs = 2

// VersionSessionsByLog is the first command version whose client sessions are bounded by the
// log, not by the proposers' clocks (see sessions), and whose id kinds are at most MaxIDKinds.
const VersionSessionsByLog = 3

// VersionMerge is the first command version with shard merges (CmdMergeShards): a member of an
// older build could not apply one, so PCS neither records nor asks for merges below it.
const VersionMerge = 4

// VersionPartitions is the first command version with partition changes (CmdAlterPartitions,
// CmdFinishPartitionJob, and tables with a partition job or dropped partitions).
const VersionPartitions = 5

// MaxReplicas is the largest replica count of a table.
const MaxReplicas = 9

// Limits on what a command may carry. They bound the size of a Raft entry and of the state.
const (
	MaxKeySize    = 4 << 10  // bytes
	MaxValueSize  = 1 << 20  // bytes
	MaxKindLen    = 64       // bytes of an id kind name
	MaxIDBlock    = 1 << 20  // ids in one allocation
	MaxIDKinds    = 1000     // kinds of ids (each is state, a snapshot record and a metric series)
	MaxNameLen    = 128      // bytes of a member name
	MaxSplitKey   = 8 << 10  // bytes of a split key (a routing key)
	MaxAddrLen    = 256      // bytes of an address
	MaxCommandLen = 64 << 20 // a create-table command carries every shard
)

// EncodeCommand validates op and returns the bytes of a command of the given format version
// (0: this build's CommandVersion). Below VersionRequestIDs the request id and the proposer's
// clock are left out: members that read only that version would ignore them.
func EncodeCommand(cmd *pcspb.Command, version ...uint32) ([]byte, error) {
	cmd.Version = CommandVersion
	if len(version) > 0 && version[0] != 0 {
		cmd.Version = min(version[0], CommandVersion)
	}
	if cmd.Version < VersionRequestIDs {
		cmd.Request, cmd.ProposedAtMs = nil, 0
	}
	if _, ok := cmd.Op.(*pcspb.Command_SetClusterVersion); ok && cmd.Version < 1 {
		cmd.Version = 1
	}
	if _, ok := cmd.Op.(*pcspb.Command_MergeShards); ok && cmd.Version < VersionMerge {
		return nil, fmt.Errorf("%w: a merge needs command version %d, the cluster is at %d", ErrUnknownVersion, VersionMerge, cmd.Version)
	}
	switch cmd.Op.(type) {
	case *pcspb.Command_AlterPartitions, *pcspb.Command_FinishPartitionJob:
		if cmd.Version < VersionPartitions {
			return nil, fmt.Errorf("%w: a partition change needs command version %d, the cluster is at %d", ErrUnknownVersion, VersionPartitions, cmd.Version)
		}
	}
	if err := ValidateCommand(cmd); err != nil {
		return nil, err
	}
	return proto.Marshal(cmd)
}

// DecodeCommand parses and validates a command.
func DecodeCommand(b []byte) (*pcspb.Command, error) {
	if len(b) > MaxCommandLen {
		return nil, fmt.Errorf("%w: %d bytes exceeds %d", ErrBadCommand, len(b), MaxCommandLen)
	}
	cmd := &pcspb.Command{}
	if err := proto.Unmarshal(b, cmd); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	if cmd.Version < 1 || cmd.Version > CommandVersion {
		return nil, fmt.Errorf("%w: %d (this node knows 1..%d)", ErrUnknownVersion, cmd.Version, CommandVersion)
	}
	if err := ValidateCommand(cmd); err != nil {
		return nil, err
	}
	return cmd, nil
}

// DecodeEntry parses a Raft entry for applying. Unlike DecodeCommand it does not judge the
// command by this build's limits (the proposer did; a later build may have raised them): an
// entry is applied by what it says. It fails only for bytes this build cannot read at all — a
// newer format version, an operation it does not know, a message without its required parts.
func DecodeEntry(b []byte) (*pcspb.Command, error) {
	cmd := &pcspb.Command{}
	if err := proto.Unmarshal(b, cmd); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	if cmd.Version < 1 || cmd.Version > CommandVersion {
		return nil, fmt.Errorf("%w: %d (this node knows 1..%d)", ErrUnknownVersion, cmd.Version, CommandVersion)
	}
	var missing bool
	switch op := cmd.Op.(type) {
	case nil:
		return nil, fmt.Errorf("%w: no operation this build knows", ErrBadCommand)
	case *pcspb.Command_SetMember:
		missing = op.SetMember.GetMember() == nil
	case *pcspb.Command_RegisterNode:
		missing = op.RegisterNode.GetNode() == nil
	case *pcspb.Command_CreateTable:
		missing = op.CreateTable.GetTable() == nil
	case *pcspb.Command_AlterPartitions:
		missing = op.AlterPartitions.GetAlter().GetOp() == nil
	}
	if missing {
		return nil, fmt.Errorf("%w: %T without its message", ErrBadCommand, cmd.Op)
	}
	return cmd, nil
}

// ValidateKey checks a key of the system namespace.
func ValidateKey(key []byte) error {
	if len(key) == 0 {
		return fmt.Errorf("%w: empty key", ErrInvalid)
	}
	if len(key) > MaxKeySize {
		return fmt.Errorf("%w: key of %d bytes exceeds %d", ErrInvalid, len(key), MaxKeySize)
	}
	return nil
}

// ValidateValue checks a value of the system namespace.
func ValidateValue(v []byte) error {
	if len(v) > MaxValueSize {
		return fmt.Errorf("%w: value of %d bytes exceeds %d", ErrInvalid, len(v), MaxValueSize)
	}
	return nil
}

// ValidateKind checks an id kind name: 1..64 bytes of printable UTF-8.
func ValidateKind(kind string) error {
	if kind == "" || len(kind) > MaxKindLen || !utf8.ValidString(kind) {
		return fmt.Errorf("%w: id kind %q must be 1..%d bytes of UTF-8", ErrInvalid, kind, MaxKindLen)
	}
	return nil
}

// ValidateMember checks a member's name and addresses.
func ValidateMember(m *pcspb.Member) error {
	if m == nil || m.Name == "" || len(m.Name) > MaxNameLen || !utf8.ValidString(m.Name) {
		return fmt.Errorf("%w: member name must be 1..%d bytes of UTF-8", ErrInvalid, MaxNameLen)
	}
	for _, a := range []string{m.PeerAddr, m.ClientAddr, m.HttpAddr} {
		if len(a) > MaxAddrLen {
			return fmt.Errorf("%w: address of %d bytes exceeds %d", ErrInvalid, len(a), MaxAddrLen)
		}
	}
	return nil
}

// ValidateCommand checks every field of a command against the limits.
func ValidateCommand(cmd *pcspb.Command) error {
	var err error
	switch op := cmd.Op.(type) {
	case *pcspb.Command_Put:
		if err = ValidateKey(op.Put.GetKey()); err == nil {
			err = ValidateValue(op.Put.GetValue())
		}
	case *pcspb.Command_Delete:
		err = ValidateKey(op.Delete.GetKey())
	case *pcspb.Command_TsoWindow:
		if op.TsoWindow.GetPhysicalMs() == 0 || op.TsoWindow.GetPhysicalMs() >= 1<<45 {
			err = fmt.Errorf("%w: tso window %d out of range", ErrInvalid, op.TsoWindow.GetPhysicalMs())
		}
	case *pcspb.Command_AllocIds:
		if err = ValidateKind(op.AllocIds.GetKind()); err == nil {
			if c := op.AllocIds.GetCount(); c == 0 || c > MaxIDBlock {
				err = fmt.Errorf("%w: id count %d (1..%d)", ErrInvalid, c, MaxIDBlock)
			}
		}
	case *pcspb.Command_SetMember:
		err = ValidateMember(op.SetMember.GetMember())
	case *pcspb.Command_RemoveMember:
		if n := op.RemoveMember.GetName(); n == "" || len(n) > MaxNameLen {
			err = fmt.Errorf("%w: member name must be 1..%d bytes", ErrInvalid, MaxNameLen)
		}
	case *pcspb.Command_RegisterNode:
		n := op.RegisterNode.GetNode()
		if n == nil || n.Address == "" || len(n.Address) > MaxAddrLen || len(n.Labels) > 32 {
			err = fmt.Errorf("%w: a node needs an address of 1..%d bytes and at most 32 labels", ErrInvalid, MaxAddrLen)
		}
		for k, v := range n.GetLabels() {
			if k == "" || len(k) > 64 || len(v) > 256 {
				err = fmt.Errorf("%w: label %q=%q: keys 1..64 bytes, values up to 256", ErrInvalid, k, v)
			}
		}
	case *pcspb.Command_CreateTable:
		t := op.CreateTable.GetTable()
		if t == nil || t.Name == "" || len(t.Name) > MaxNameLen || !utf8.ValidString(t.Name) {
			err = fmt.Errorf("%w: table name must be 1..%d bytes of UTF-8", ErrInvalid, MaxNameLen)
		} else if t.Replicas < 1 || t.Replicas > MaxReplicas {
			err = fmt.Errorf("%w: replica count %d (1..%d)", ErrInvalid, t.Replicas, MaxReplicas)
		}
	case *pcspb.Command_AlterPartitions:
		a := op.AlterPartitions.GetAlter()
		switch o := a.GetOp().(type) {
		case nil:
			err = fmt.Errorf("%w: no partition change", ErrInvalid)
		case *pcspb.PartitionAlter_SetReplicas:
			if o.SetReplicas < 1 || o.SetReplicas > MaxReplicas {
				err = fmt.Errorf("%w: replica count %d (1..%d)", ErrInvalid, o.SetReplicas, MaxReplicas)
			}
		case *pcspb.PartitionAlter_Drop, *pcspb.PartitionAlter_Truncate:
			if n := a.GetDrop() + a.GetTruncate(); n == "" || len(n) > MaxNameLen {
				err = fmt.Errorf("%w: partition name must be 1..%d bytes", ErrInvalid, MaxNameLen)
			}
		case *pcspb.PartitionAlter_CoverKey:
			if k := o.CoverKey; len(k) == 0 || len(k) > MaxKeySize {
				err = fmt.Errorf("%w: cover key of %d bytes (1..%d)", ErrInvalid, len(k), MaxKeySize)
			}
		}
	case *pcspb.Command_FinishPartitionJob:
	case *pcspb.Command_SplitShard:
		if k := op.SplitShard.SplitKey; len(k) == 0 || len(k) > MaxSplitKey {
			err = fmt.Errorf("%w: split key of %d bytes (1..%d)", ErrInvalid, len(k), MaxSplitKey)
		}
	case *pcspb.Command_MergeShards:
		if m := op.MergeShards; m.ShardId == 0 || m.SourceId == 0 || m.ShardId == m.SourceId {
			err = fmt.Errorf("%w: a merge needs two shard ids", ErrInvalid)
		}
	case *pcspb.Command_SetClusterVersion:
		if v := op.SetClusterVersion.GetVersion(); v < 1 || v > CommandVersion {
			err = fmt.Errorf("%w: cluster version %d (1..%d)", ErrInvalid, v, CommandVersion)
		}
	case *pcspb.Command_SetTableState, *pcspb.Command_DeleteTable, *pcspb.Command_AlterTable, *pcspb.Command_AdvanceSchema,
		*pcspb.Command_CancelAlter, *pcspb.Command_SetNodeAdmin, *pcspb.Command_ChangePrimary, *pcspb.Command_ChangeReplicas:
	case nil:
		err = fmt.Errorf("%w: no operation", ErrBadCommand)
	default:
		err = fmt.Errorf("%w: unknown operation %T", ErrBadCommand, op)
	}
	return err
}
