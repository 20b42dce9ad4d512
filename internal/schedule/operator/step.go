package operator

import (
	"fmt"
	"slices"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/schedule/view"
)

// StepKind is what one step does.
type StepKind uint8

const (
	// AddLearner adds a learner on Node; its primary sends it a snapshot, then the log.
	AddLearner StepKind = iota
	// PromoteLearner makes the learner on Node a replica once the primary reports it in line.
	PromoteLearner
	// TransferPrimary hands the primary role to the replica on Node once it is in line.
	TransferPrimary
	// RemoveReplica takes Node's replica or learner out (never the primary's).
	RemoveReplica
	// Split asks the shard's primary to split it at Key (empty: its middle key) into itself
	// and shard NewShard; done once the catalog records the shard past Version.
	Split
	// Absorb (a merge) asks the shard's primary (Node) to absorb its right neighbour Source, led by the
	// same node with the same replicas, at the shard's Version and the neighbour's
	// SourceVersion; done once the catalog records the shard past Version.
	Absorb
)

var stepNames = []string{"add-learner", "promote", "transfer-primary", "remove", "split", "merge"}

func (k StepKind) String() string {
	if int(k) < len(stepNames) {
		return stepNames[k]
	}
	return fmt.Sprintf("step(%d)", uint8(k))
}

// ParseStepKind is the inverse of StepKind.String.
func ParseStepKind(s string) (StepKind, error) {
	if i := slices.Index(stepNames, s); i >= 0 {
		return StepKind(i), nil
	}
	return 0, fmt.Errorf("%w: unknown step %q", ErrInvalid, s)
}

// Step is one change on a shard.
type Step struct {
	Kind StepKind
	Node uint64
	// Split only: the split key (bytes; empty: the middle), the new half's id reserved for it,
	// and the shard's range version to split at.
	Key      string
	NewShard uint64
	Version  uint64
	// ByLoad: the primary picks the key that halves the shard's recent load.
	ByLoad bool
	// Merge only: the neighbour absorbed and its range version (Version is the shard's).
	Source, SourceVersion uint64
}

func (s Step) String() string {
	if s.Kind == Absorb {
		return fmt.Sprintf("merge %d into it", s.Source)
	}
	if s.Kind == Split {
		if s.ByLoad {
			return fmt.Sprintf("split into %d by load", s.NewShard)
		}
		return fmt.Sprintf("split into %d at %x", s.NewShard, s.Key)
	}
	return fmt.Sprintf("%s %d", s.Kind, s.Node)
}

// Done reports whether sh shows the step carried out.
func (s Step) Done(sh *view.Shard) bool {
	switch s.Kind {
	case AddLearner:
		return sh.Holds(s.Node)
	case PromoteLearner:
		return slices.Contains(sh.Replicas, s.Node)
	case TransferPrimary:
		return sh.Primary == s.Node
	case RemoveReplica:
		return !sh.Holds(s.Node)
	case Split, Absorb:
		return sh.Version > s.Version
	}
	return false
}

// Ready reports whether the step may be carried out now: a learner or replica the primary
// reports in line, for the steps that need one.
func (s Step) Ready(sh *view.Shard) bool {
	switch s.Kind {
	case PromoteLearner:
		return slices.Contains(sh.Learners, s.Node) && sh.IsInLine(s.Node)
	case TransferPrimary:
		return slices.Contains(sh.Replicas, s.Node) && sh.IsInLine(s.Node)
	case RemoveReplica:
		return sh.Primary != s.Node
	}
	return true
}

// IsConfChange reports whether the step is a configuration change PCS makes in its catalog
// (Command); a split or a merge is carried out by the shard's primary (SplitCommand,
// MergeCommand) and recorded when it reports it.
func (s Step) IsConfChange() bool { return s.Kind != Split && s.Kind != Absorb }

// MergeCommand is what the shard's primary is told to carry out a merge step.
func (s Step) MergeCommand(sh *view.Shard) *pcspb.MergeShardsCommand {
	return &pcspb.MergeShardsCommand{ShardId: sh.ID, Version: s.Version, SourceId: s.Source, SourceVersion: s.SourceVersion}
}

// Versioned returns the shard's range version once the step is carried out (a split or merge
// bumps it; other steps leave it).
func (s Step) Versioned(version uint64) uint64 {
	switch s.Kind {
	case Split:
		return version + 1
	case Absorb:
		return max(version, s.SourceVersion) + 1
	}
	return version
}

// SplitCommand is what the shard's primary is told to carry out a split step.
func (s Step) SplitCommand(sh *view.Shard) *pcspb.SplitShardCommand {
	return &pcspb.SplitShardCommand{ShardId: sh.ID, Version: s.Version, SplitKey: []byte(s.Key), NewShardId: s.NewShard, ByLoad: s.ByLoad}
}

// Command is the configuration change that carries out the step on sh.
func (s Step) Command(sh *view.Shard) *pcspb.CmdChangeReplicas {
	c := &pcspb.CmdChangeReplicas{ShardId: sh.ID, Term: sh.Term, ConfVer: sh.ConfVer}
	switch s.Kind {
	case AddLearner:
		c.AddLearner = s.Node
	case PromoteLearner:
		c.PromoteLearner = s.Node
	case TransferPrimary:
		c.NewPrimary = s.Node
	case RemoveReplica:
		c.RemoveNode = s.Node
	}
	return c
}

// Apply returns sh as it is after the step's command: what the catalog does with it (every
// change bumps conf_ver; a primary change bumps the term too).
func (s Step) Apply(sh *view.Shard) *view.Shard {
	n := *sh
	n.Replicas = slices.Clone(sh.Replicas)
	n.Learners = slices.Clone(sh.Learners)
	switch s.Kind {
	case AddLearner:
		n.Learners = append(n.Learners, s.Node)
	case PromoteLearner:
		n.Learners = slices.DeleteFunc(n.Learners, func(x uint64) bool { return x == s.Node })
		n.Replicas = append(n.Replicas, s.Node)
	case TransferPrimary:
		n.Primary = s.Node
		n.Replicas = append([]uint64{s.Node}, slices.DeleteFunc(n.Replicas, func(x uint64) bool { return x == s.Node })...)
		n.Term++
	case RemoveReplica:
		n.Learners = slices.DeleteFunc(n.Learners, func(x uint64) bool { return x == s.Node })
		n.Replicas = slices.DeleteFunc(n.Replicas, func(x uint64) bool { return x == s.Node })
	case Split:
		n.Version++ // the size the new half takes is unknown until the primary reports it
		return &n
	case Absorb:
		n.Version = s.Versioned(n.Version)
		return &n
	}
	n.ConfVer++
	return &n
}
