package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// allShards pages through a table's shards.
func allShards(ctx context.Context, c *client.Client, table string) ([]*pcspb.Shard, error) {
	var out []*pcspb.Shard
	var start []byte
	for {
		resp, err := c.ScanShards(ctx, table, start, nil, client.WithLimit(1000))
		if err != nil {
			return nil, err
		}
		out = append(out, resp.Shards...)
		if !resp.More || len(resp.Shards) == 0 {
			return out, nil
		}
		start = resp.Shards[len(resp.Shards)-1].End
	}
}

// shardProblems says what is wrong with a shard's replicas: kind "under-replicated" (fewer
// replicas than the table asks, or replicas on nodes not up) or "misplaced" (outside the
// table's nodes, on an offline or tombstone node, or sharing an isolation value), as pd-ctl's
// region check: "down-replica" (a replica or learner on a node that is down or unknown) and
// "pending" (learners still catching up, not yet promoted).
func shardProblems(t *pcspb.Table, sh *pcspb.Shard, nodes map[uint64]*pcspb.NodeInfo, kind string) []string {
	var out []string
	switch kind {
	case "under-replicated":
		live := 0
		for _, r := range sh.Replicas {
			if n := nodes[r]; n != nil && n.State == "up" {
				live++
			} else {
				out = append(out, fmt.Sprintf("replica on node %d is not up", r))
			}
		}
		if live < int(t.Replicas) {
			out = append(out, fmt.Sprintf("%d of %d replicas up", live, t.Replicas))
		}
		if live < int(sh.MinInSyncOrOne()) {
			out = append(out, fmt.Sprintf("below min-in-sync %d: writes are refused until replicas are added", sh.MinInSyncOrOne()))
		}
	case "down-replica":
		for _, r := range slices.Concat(sh.Replicas, sh.Learners) {
			if n := nodes[r]; n == nil || (n.State != "up" && n.State != "offline") {
				state := "not registered"
				if n != nil {
					state = n.State
				}
				out = append(out, fmt.Sprintf("node %d is %s", r, state))
			}
		}
	case "pending":
		for _, l := range sh.Learners {
			out = append(out, fmt.Sprintf("learner on node %d is catching up", l))
		}
	case "misplaced":
		zones := map[string]uint64{}
		for _, r := range sh.Replicas {
			n := nodes[r]
			switch {
			case n == nil:
				out = append(out, fmt.Sprintf("node %d is not registered", r))
				continue
			case len(t.Nodes) > 0 && !slices.Contains(t.Nodes, r):
				out = append(out, fmt.Sprintf("node %d is not among the table's nodes", r))
			case n.Node.Offline || n.Node.Tombstone:
				out = append(out, fmt.Sprintf("node %d is %s", r, n.State))
			}
			if t.IsolationLabel != "" {
				z := n.Node.Labels[t.IsolationLabel]
				if o, ok := zones[z]; ok {
					out = append(out, fmt.Sprintf("nodes %d and %d share %s=%q", o, r, t.IsolationLabel, z))
				}
				zones[z] = r
			}
		}
	}
	return out
}

func shardCheckCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "check under-replicated|misplaced|down-replica|pending [TABLE]",
		Short: "List shards with fewer live replicas than their table asks, replicas breaking its placement rules, replicas on down nodes, or learners catching up",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := args[0]
			if !slices.Contains([]string{"under-replicated", "misplaced", "down-replica", "pending"}, kind) {
				return fmt.Errorf("check %q: want under-replicated, misplaced, down-replica or pending: %w", kind, client.ErrInvalidArgument)
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			nl, err := c.ListNodes(ctx)
			if err != nil {
				return err
			}
			nodes := map[uint64]*pcspb.NodeInfo{}
			for _, n := range nl.Nodes {
				nodes[n.Node.Id] = n
			}
			tl, err := c.ListTables(ctx)
			if err != nil {
				return err
			}
			type row struct {
				Table    string   `json:"table"`
				Shard    uint64   `json:"shard"`
				Replicas []uint64 `json:"replicas"`
				Problems []string `json:"problems"`
			}
			rows := []row{}
			t := table{header: []string{"TABLE", "SHARD", "REPLICAS", "PROBLEM"}}
			found := false
			for _, tb := range tl.Tables {
				if len(args) == 2 && tb.Name != args[1] {
					continue
				}
				found = true
				shards, err := allShards(ctx, c, tb.Name)
				if err != nil {
					return err
				}
				for _, sh := range shards {
					if p := shardProblems(tb, sh, nodes, kind); len(p) > 0 {
						rows = append(rows, row{tb.Name, sh.Id, sh.Replicas, p})
						t.rows = append(t.rows, []string{tb.Name, u(sh.Id), ids(sh.Replicas), strings.Join(p, "; ")})
					}
				}
			}
			if len(args) == 2 && !found {
				return fmt.Errorf("table %q: %w", args[1], client.ErrNotFound)
			}
			t.value = rows
			return g.print(cmd.OutOrStdout(), t)
		},
	}
}
