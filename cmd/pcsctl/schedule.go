package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

func operatorRows(ops []*pcspb.Operator) table {
	t := table{header: []string{"ID", "KIND", "SHARD", "STATE", "STEPS", "REASON"}, value: ops}
	if ops == nil {
		t.value = []*pcspb.Operator{}
	}
	for _, op := range ops {
		steps := make([]string, len(op.Steps))
		for i, s := range op.Steps {
			mark := ""
			if i == int(op.Current) && (op.State == "queued" || op.State == "running") {
				mark = "*"
			}
			switch {
			case s.Kind == "split" && s.ByLoad:
				steps[i] = fmt.Sprintf("%ssplit into %d by load", mark, s.NewShardId)
			case s.Kind == "split":
				steps[i] = fmt.Sprintf("%ssplit into %d at %x", mark, s.NewShardId, s.SplitKey)
			default:
				steps[i] = fmt.Sprintf("%s%s %d", mark, s.Kind, s.Node)
			}
		}
		t.rows = append(t.rows, []string{u(op.Id), op.Kind, u(op.ShardId), op.State, strings.Join(steps, ", "), op.Reason})
	}
	return t
}

func operatorCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "operator", Short: "Scheduling operators: list, show, add, cancel"}
	var finished bool
	var shard uint64
	list := &cobra.Command{
		Use: "list", Short: "List queued and running operators (--finished: also recently finished ones)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			ops, err := c.ListOperators(ctx, shard, finished)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), operatorRows(ops))
		},
	}
	list.Flags().BoolVar(&finished, "finished", false, "include recently finished operators")
	list.Flags().Uint64Var(&shard, "shard", 0, "only this shard's operators")
	show := &cobra.Command{
		Use: "show ID", Short: "Show one operator (queued, running or recently finished)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("operator", args[0])
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			ops, err := c.ListOperators(ctx, 0, true)
			if err != nil {
				return err
			}
			for _, op := range ops {
				if op.Id == id {
					return g.print(cmd.OutOrStdout(), operatorRows([]*pcspb.Operator{op}))
				}
			}
			return fmt.Errorf("operator %d: %w", id, client.ErrNotFound)
		},
	}
	var from, to uint64
	add := &cobra.Command{
		Use:   "add move|transfer-primary|remove|add SHARD",
		Short: "Submit an operator: move (--from, --to), transfer-primary (--to), remove (--from), add (--to)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("shard", args[1])
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			op, err := c.AddOperator(ctx, id, args[0], from, to)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), operatorRows([]*pcspb.Operator{op}))
		},
	}
	add.Flags().Uint64Var(&from, "from", 0, "source node")
	add.Flags().Uint64Var(&to, "to", 0, "target node")
	cancel := &cobra.Command{
		Use: "cancel ID", Short: "Cancel a queued or running operator", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("operator", args[0])
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			if err := c.CancelOperator(ctx, id); err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), table{rows: [][]string{{fmt.Sprintf("operator %d cancelled", id)}}, value: map[string]any{"cancelled": id}})
		},
	}
	cmd.AddCommand(list, show, add, cancel)
	return cmd
}

func configRows(resp *pcspb.ScheduleConfigResponse) table {
	t := table{header: []string{"SETTING", "VALUE"}, value: resp.Config}
	keys := make([]string, 0, len(resp.Config))
	for k := range resp.Config {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.rows = append(t.rows, []string{k, resp.Config[k]})
	}
	return t
}

func configCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Scheduling settings (replicated; take effect on the next tick)"}
	get := &cobra.Command{
		Use: "get", Short: "Show every scheduling setting", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.ScheduleConfig(ctx)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), configRows(resp))
		},
	}
	set := &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Change a setting: rebalance-speed off|low|normal|max, snapshot-bytes-per-sec, snapshots-per-node, max-operators, halt-scheduling, paused-schedulers",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.SetScheduleConfig(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), configRows(resp))
		},
	}
	cmd.AddCommand(get, set)
	return cmd
}

func schedulerCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "scheduler", Short: "Schedulers: list, pause, resume, explain"}
	list := &cobra.Command{
		Use: "list", Short: "List the schedulers and whether each is paused", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.ScheduleConfig(ctx)
			if err != nil {
				return err
			}
			t := table{header: []string{"SCHEDULER", "PAUSED"}, value: resp.Schedulers}
			for _, s := range resp.Schedulers {
				t.rows = append(t.rows, []string{s.Name, fmt.Sprint(s.Paused)})
			}
			return g.print(cmd.OutOrStdout(), t)
		},
	}
	pauseResume := func(pause bool) *cobra.Command {
		use, short := "pause NAME", "Pause a scheduler (it proposes nothing; running operators go on)"
		if !pause {
			use, short = "resume NAME", "Resume a paused scheduler"
		}
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, ctx, done, err := g.open(cmd)
				if err != nil {
					return err
				}
				defer done()
				resp, err := c.ScheduleConfig(ctx)
				if err != nil {
					return err
				}
				paused, found := pcspb.PausedSchedulersSetting(resp.Schedulers, args[0], pause)
				if !found {
					return fmt.Errorf("no scheduler %q: %w", args[0], client.ErrInvalidArgument)
				}
				if _, err := c.SetScheduleConfig(ctx, "paused-schedulers", paused); err != nil {
					return err
				}
				return g.print(cmd.OutOrStdout(), table{rows: [][]string{{fmt.Sprintf("scheduler %s paused=%v", args[0], pause)}}, value: map[string]any{"scheduler": args[0], "paused": pause}})
			},
		}
	}
	explain := &cobra.Command{
		Use:   "explain shard|node ID",
		Short: "Why the coordinator does or does not move a shard or a node: checkers, filters, scores, bands",
		Long: `A dry run on the PCS primary, changing nothing. For a shard: its operator, or what each checker
would do; for every up node whether it could take a replica and which filter refuses it (holds
one, not among the table's nodes, low on space, isolation, budget), with its balance score. For a
node: space against the low/high-space ratios, replicas and bytes against its share and the
balancers' bands, primaries and load against the mean and the hot threshold, its operators.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "shard" && args[0] != "node" {
				return fmt.Errorf("explain %q: want shard ID or node ID", args[0])
			}
			id, err := parseID(args[0], args[1])
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			var lines []string
			if args[0] == "shard" {
				lines, err = c.Explain(ctx, id, 0)
			} else {
				lines, err = c.Explain(ctx, 0, id)
			}
			if err != nil {
				return err
			}
			if g.output == "json" {
				return g.print(cmd.OutOrStdout(), table{value: map[string]any{args[0]: id, "lines": lines}})
			}
			for _, l := range lines {
				fmt.Fprintln(cmd.OutOrStdout(), l)
			}
			return nil
		},
	}
	cmd.AddCommand(list, pauseResume(true), pauseResume(false), explain)
	return cmd
}

// drainCmd marks a node offline and, with --wait, follows it until it holds nothing, printing
// progress and an ETA from the rate so far.
func drainCmd(g *globals) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use: "drain ID", Short: "Drain a node: mark it offline; its primaries, then its replicas move away (--wait: follow until empty)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("node", args[0])
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			if err := c.SetNodeState(ctx, id, "offline"); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "node %d: offline, draining\n", id)
			if wait == 0 {
				return nil
			}
			wctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			start := time.Now()
			first := int64(-1)
			for {
				ni, err := nodeInfo(wctx, c, id)
				if err != nil {
					return err
				}
				held := int64(ni.Shards)
				if first < 0 {
					first = held
				}
				if held == 0 {
					fmt.Fprintf(out, "node %d: empty after %s; it may now be made a tombstone (pcsctl node set-state %d tombstone)\n", id, time.Since(start).Round(time.Second), id)
					return nil
				}
				eta := "unknown"
				if moved := first - held; moved > 0 {
					eta = (time.Duration(float64(time.Since(start)) / float64(moved) * float64(held))).Round(time.Second).String()
				}
				fmt.Fprintf(out, "node %d: %d replicas left (%d moved), eta %s\n", id, held, first-held, eta)
				select {
				case <-wctx.Done():
					return fmt.Errorf("node %d still holds %d replicas: %w", id, held, wctx.Err())
				case <-time.After(2 * time.Second):
				}
			}
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 0, "follow the drain this long (0: return at once)")
	return cmd
}

func evictPrimariesCmd(g *globals) *cobra.Command {
	var wait time.Duration
	var undo bool
	cmd := &cobra.Command{
		Use:   "evict-primaries ID",
		Short: "Make a node lead no shard before a restart (--wait: until it leads none; --undo: lead again)",
		Long: `Moves every primary the node holds to another replica in line with it and gives it no new one;
its replicas stay. For a rolling restart: evict, wait until the node leads nothing, restart it,
then --undo (balancing gives it primaries back).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("node", args[0])
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.EvictPrimaries(ctx, id, undo); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if undo {
				fmt.Fprintf(out, "node %d: may lead shards again\n", id)
				return nil
			}
			fmt.Fprintf(out, "node %d: evicting primaries\n", id)
			if wait == 0 {
				return nil
			}
			wctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			start := time.Now()
			for {
				ni, err := nodeInfo(wctx, c, id)
				if err != nil {
					return err
				}
				leads := ni.Primaries
				if leads == 0 {
					fmt.Fprintf(out, "node %d: leads no shard after %s; restart it, then: pcsctl node evict-primaries %d --undo\n", id, time.Since(start).Round(100*time.Millisecond), id)
					return nil
				}
				select {
				case <-wctx.Done():
					return fmt.Errorf("node %d still leads %d shards: %w", id, leads, wctx.Err())
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait this long for the node to lead nothing (0: return at once)")
	cmd.Flags().BoolVar(&undo, "undo", false, "let the node lead shards again")
	return cmd
}

// nodeInfo is one data node's entry of ListNodes.
func nodeInfo(ctx context.Context, c *client.Client, id uint64) (*pcspb.NodeInfo, error) {
	resp, err := c.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range resp.Nodes {
		if n.Node.GetId() == id {
			return n, nil
		}
	}
	return nil, fmt.Errorf("node %d: %w", id, client.ErrNotFound)
}
