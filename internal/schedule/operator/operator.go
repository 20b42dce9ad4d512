// Package operator defines operators: the scheduler's decisions as data. An operator is an
// ordered list of steps on one shard; each step says, from the observed shard, whether it is
// done and, if not, which configuration change carries it out. Operators change nothing
// themselves: the coordinator applies their commands and persists them through Raft, so a new
// PCS primary resumes them.
package operator

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/schedule/view"
)

// Kind says why an operator exists; it sets its priority and which budget it draws on.
type Kind uint8

// Kinds, from the highest priority to the lowest.
const (
	Repair  Kind = iota // a lost, missing or misplaced replica
	Drain               // an offline node's primaries and replicas leaving
	Admin               // asked for by an operator (pcsctl operator add, MoveShard)
	Hot                 // a hot shard's primary or replica moving
	Balance             // replicas or primaries balancing
	Merge               // small neighbours merging
	numKinds
)

// Kinds lists every kind, highest priority first.
var Kinds = []Kind{Repair, Drain, Admin, Hot, Balance, Merge}

var kindNames = [numKinds]string{"repair", "drain", "admin", "hot", "balance", "merge"}

func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, error) {
	for i, n := range kindNames {
		if n == s {
			return Kind(i), nil
		}
	}
	return 0, fmt.Errorf("%w: unknown operator kind %q", ErrInvalid, s)
}

// Reserved reports whether the kind draws on the budget reserved for keeping data safe
// (repair and drain, and an operator's own request): the rest may use at most the share of
// the budget that rebalance-speed allows.
func (k Kind) Reserved() bool { return k <= Admin }

// Priority: a lower value runs first.
func (k Kind) Priority() int { return int(k) }

// State is where an operator is in its life.
type State uint8

const (
	Queued    State = iota // waiting for the controller's budget
	Running                // admitted; its steps are being carried out
	Done                   // every step observed done
	Cancelled              // the shard moved on under it, or someone cancelled it
	TimedOut               // a step took longer than its timeout
)

var stateNames = []string{"queued", "running", "done", "cancelled", "timeout"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Finished reports whether the operator is over.
func (s State) Finished() bool { return s >= Done }

// Operator is one decision on one shard.
type Operator struct {
	ID    uint64
	Kind  Kind
	Shard uint64
	Steps []Step
	// Current is the index of the first step not observed done.
	Current int
	State   State
	// Reason says what produced the operator and with which scores.
	Reason string
	// The shard's range version, configuration version and term the operator expects: set at
	// creation and advanced by each change the coordinator makes. Any other value means the
	// shard moved on under the operator, which is then cancelled.
	Version, ConfVer, Term uint64
	// Size is the shard's size at creation: the bytes an added replica's snapshot carries.
	Size uint64
	// From and To: the replica leaving and the one arriving (0 if none), for load accounting.
	From, To uint64
	// Created, StepStarted and Finished are readings of the coordinator's monotonic clock.
	Created, StepStarted, Finished time.Duration
	// Charged: the controller has counted the operator's snapshot against its budgets.
	Charged bool
	// SnapFrom is the node that sends the snapshot (the primary at admission).
	SnapFrom uint64
}

// TinySnapshot: a snapshot of fewer bytes (an empty shard's, a small one's) does
// not count against the concurrent snapshots per node, which are there to bound the disk and
// network a node spends on copies; it still draws on the byte budgets and the operator limits.
// Merging the empty ranges a drop leaves behind is then bounded by operators, not by copies
// of nothing.
const TinySnapshot = 1 << 20

// ErrInvalid means an operator (as persisted or asked for) is malformed.
var ErrInvalid = errors.New("invalid operator")

// New returns a queued operator for shard sh.
func New(kind Kind, sh *view.Shard, reason string, steps ...Step) *Operator {
	op := &Operator{Kind: kind, Shard: sh.ID, Steps: steps, Reason: reason,
		Version: sh.Version, ConfVer: sh.ConfVer, Term: sh.Term, Size: sh.Size}
	for _, s := range steps {
		switch s.Kind {
		case AddLearner:
			op.To = s.Node
		case RemoveReplica:
			op.From = s.Node
		}
	}
	return op
}

// Claims returns the shards the operator holds: its own, and the neighbour a merge absorbs
// (no other operator may change it meanwhile).
func (o *Operator) Claims() []uint64 {
	out := []uint64{o.Shard}
	for _, s := range o.Steps {
		if s.Kind == Absorb {
			out = append(out, s.Source)
		}
	}
	return out
}

// Move returns the steps that move a replica of sh from node from to node to: a learner on
// to, promoted once in line; the primary handed to it if from leads the shard; from removed.
func Move(sh *view.Shard, from, to uint64) []Step {
	steps := []Step{{Kind: AddLearner, Node: to}, {Kind: PromoteLearner, Node: to}}
	if sh.Primary == from {
		steps = append(steps, Step{Kind: TransferPrimary, Node: to})
	}
	return append(steps, Step{Kind: RemoveReplica, Node: from})
}

// AdminSteps builds the steps of an operator an operator (a person) asks for on sh by kind:
// move (from -> to: a learner on to, promoted, the primary handed over if from leads, from
// removed; resumed past the promotion if to is already a replica), transfer-primary (to),
// remove (from, not the primary) or add (to). A request that cannot apply to sh is ErrInvalid.
func AdminSteps(sh *view.Shard, kind string, from, to uint64) ([]Step, error) {
	holds := func(n uint64) bool { return slices.Contains(sh.Replicas, n) || slices.Contains(sh.Learners, n) }
	switch kind {
	case "move":
		if from == 0 || to == 0 || from == to {
			return nil, fmt.Errorf("%w: a move needs two different nodes", ErrInvalid)
		}
		steps := Move(sh, from, to)
		if slices.Contains(sh.Replicas, to) {
			steps = steps[2:] // an interrupted move: the target is already a replica
		}
		return steps, nil
	case "transfer-primary":
		if !slices.Contains(sh.Replicas, to) || sh.Primary == to {
			return nil, fmt.Errorf("%w: node %d is not a replica of shard %d other than its primary", ErrInvalid, to, sh.ID)
		}
		return []Step{{Kind: TransferPrimary, Node: to}}, nil
	case "remove":
		if from == 0 || from == sh.Primary || !holds(from) {
			return nil, fmt.Errorf("%w: node %d is not a replica of shard %d other than its primary", ErrInvalid, from, sh.ID)
		}
		return []Step{{Kind: RemoveReplica, Node: from}}, nil
	case "add":
		if to == 0 || holds(to) {
			return nil, fmt.Errorf("%w: node %d already holds shard %d", ErrInvalid, to, sh.ID)
		}
		return []Step{{Kind: AddLearner, Node: to}, {Kind: PromoteLearner, Node: to}}, nil
	}
	return nil, fmt.Errorf("%w: operator kind %q (move, transfer-primary, remove, add)", ErrInvalid, kind)
}

// AddsReplica reports whether the operator adds a replica (and so sends a snapshot).
func (o *Operator) AddsReplica() bool { return o.To != 0 }

// Snapshotting reports whether the operator's snapshot is under way: its learner is added or
// about to be, and not yet promoted.
func (o *Operator) Snapshotting() bool {
	if !o.AddsReplica() || o.State != Running {
		return false
	}
	for i := o.Current; i < len(o.Steps); i++ {
		if o.Steps[i].Kind == PromoteLearner {
			return true
		}
	}
	return false
}

// Advance moves Current past the steps sh shows done and reports whether the operator is done.
func (o *Operator) Advance(sh *view.Shard, now time.Duration) bool {
	for o.Current < len(o.Steps) && o.Steps[o.Current].Done(sh) {
		o.Current++
		o.StepStarted = now
	}
	return o.Current == len(o.Steps)
}

// Stale reports whether sh moved on under the operator: another change than its own.
func (o *Operator) Stale(sh *view.Shard) bool {
	return sh == nil || sh.Version != o.Version || sh.ConfVer != o.ConfVer || sh.Term != o.Term
}

// Timeout is how long the current step may take: proportional to the shard's size for the
// steps that copy it (at minRate bytes/s, at least base).
func (o *Operator) Timeout(base time.Duration, minRate uint64) time.Duration {
	if o.Current >= len(o.Steps) {
		return base
	}
	switch o.Steps[o.Current].Kind {
	case AddLearner, PromoteLearner:
		if minRate > 0 {
			return base + time.Duration(float64(o.Size)/float64(minRate)*float64(time.Second))
		}
	}
	return base
}

// String describes the operator in one line.
func (o *Operator) String() string {
	parts := make([]string, len(o.Steps))
	for i, s := range o.Steps {
		mark := ""
		if i == o.Current && !o.State.Finished() {
			mark = "*"
		}
		parts[i] = mark + s.String()
	}
	return fmt.Sprintf("op %d %s shard %d [%s] %s (%s)", o.ID, o.Kind, o.Shard, strings.Join(parts, ", "), o.State, o.Reason)
}

// ToProto converts the operator for persistence and the API.
func (o *Operator) ToProto() *pcspb.Operator {
	p := &pcspb.Operator{Id: o.ID, Kind: o.Kind.String(), ShardId: o.Shard, Current: uint32(o.Current),
		State: o.State.String(), Reason: o.Reason, Version: o.Version, ConfVer: o.ConfVer, Term: o.Term,
		SizeBytes: o.Size, CreatedNs: int64(o.Created), FinishedNs: int64(o.Finished)}
	for _, s := range o.Steps {
		p.Steps = append(p.Steps, &pcspb.OperatorStep{Kind: s.Kind.String(), Node: s.Node, SplitKey: []byte(s.Key), NewShardId: s.NewShard, Version: s.Version, ByLoad: s.ByLoad,
			SourceId: s.Source, SourceVersion: s.SourceVersion})
	}
	return p
}

// FromProto is the inverse of ToProto; it checks what it reads.
func FromProto(p *pcspb.Operator) (*Operator, error) {
	k, err := ParseKind(p.Kind)
	if err != nil {
		return nil, err
	}
	if p.ShardId == 0 || len(p.Steps) == 0 || int(p.Current) > len(p.Steps) {
		return nil, fmt.Errorf("%w: operator %d: shard %d, %d steps, current %d", ErrInvalid, p.Id, p.ShardId, len(p.Steps), p.Current)
	}
	steps := make([]Step, 0, len(p.Steps))
	for _, s := range p.Steps {
		sk, err := ParseStepKind(s.Kind)
		if err != nil {
			return nil, err
		}
		if s.Node == 0 && sk != Split || sk == Split && s.NewShardId == 0 || sk == Absorb && (s.SourceId == 0 || s.SourceId == p.ShardId) {
			return nil, fmt.Errorf("%w: operator %d: a step on node 0, a split without a new shard id, or a merge without another shard", ErrInvalid, p.Id)
		}
		steps = append(steps, Step{Kind: sk, Node: s.Node, Key: string(s.SplitKey), NewShard: s.NewShardId, Version: s.Version, ByLoad: s.ByLoad,
			Source: s.SourceId, SourceVersion: s.SourceVersion})
	}
	o := &Operator{ID: p.Id, Kind: k, Shard: p.ShardId, Steps: steps, Current: int(p.Current), Reason: p.Reason,
		Version: p.Version, ConfVer: p.ConfVer, Term: p.Term, Size: p.SizeBytes}
	for i, n := range stateNames {
		if n == p.State {
			o.State = State(i)
		}
	}
	for _, s := range steps {
		switch s.Kind {
		case AddLearner:
			o.To = s.Node
		case RemoveReplica:
			o.From = s.Node
		}
	}
	return o, nil
}
