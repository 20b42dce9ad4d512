package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/api/pcspb"
)

// healthCmd checks the whole cluster: a primary, every PCS member running and following it,
// every data node up (offline ones are draining, by an operator's choice), no under-replicated
// shard. It exits non-zero if anything is unhealthy.
func healthCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Check every PCS member and data node and the shards' replicas; exit 1 if anything is unhealthy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			type row struct {
				Kind   string `json:"kind"`
				Name   string `json:"name"`
				Health string `json:"health"`
				Detail string `json:"detail,omitempty"`
			}
			rows := []row{}
			bad := 0
			add := func(kind, name string, ok bool, detail string) {
				h := "ok"
				if !ok {
					h, bad = "UNHEALTHY", bad+1
				}
				rows = append(rows, row{kind, name, h, detail})
			}
			defer func() {
				t := table{header: []string{"KIND", "NAME", "HEALTH", "DETAIL"}, value: rows}
				for _, r := range rows {
					t.rows = append(t.rows, []string{r.Kind, r.Name, r.Health, r.Detail})
				}
				_ = g.print(cmd.OutOrStdout(), t)
			}()

			ml, err := c.MemberList(ctx)
			if err != nil {
				add("pcs", "primary", false, oneLine(err))
				return fmt.Errorf("unhealthy: no primary answers: %w", err)
			}
			primary := ""
			for _, m := range ml.Members {
				if m.Primary {
					primary = m.Name
				}
			}
			add("pcs", "primary", primary != "", primary)
			// Every member is asked for its own status: at the client address it registered, and
			// at every --endpoints address (a member whose address is not recorded yet is
			// reached there).
			byAddr := map[string]string{}
			var addrs []string
			for _, m := range ml.Members {
				if m.ClientAddr != "" {
					byAddr[m.ClientAddr] = m.Name
					addrs = append(addrs, m.ClientAddr)
				}
			}
			for _, ep := range g.endpoints {
				if _, ok := byAddr[ep]; !ok {
					addrs = append(addrs, ep)
				}
			}
			reached := map[string]bool{}
			for _, addr := range addrs {
				name := byAddr[addr]
				sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				st, err := c.Status(sctx, addr, false)
				cancel()
				if err == nil {
					name = st.Name
				}
				if name == "" {
					name = addr
				}
				reached[name] = true
				switch {
				case err != nil:
					add("pcs", name, false, "unreachable at "+addr+": "+oneLine(err))
				case st.State != pcspb.NodeState_NODE_STATE_RUNNING:
					add("pcs", name, false, "state "+pcspb.StateName(st.State))
				case st.PrimaryName == "":
					add("pcs", name, false, "knows no primary")
				default:
					add("pcs", name, true, fmt.Sprintf("%s, term %d, applied %d", st.RaftState, st.Term, st.AppliedIndex))
				}
			}
			for _, m := range ml.Members {
				if !reached[m.Name] {
					add("pcs", m.Name, false, "not reached: its client address is not recorded and no --endpoints address answered as it")
				}
			}

			nl, err := c.ListNodes(ctx)
			if err != nil {
				add("node", "list", false, oneLine(err))
				return fmt.Errorf("unhealthy: listing data nodes: %w", err)
			}
			nodes := map[uint64]*pcspb.NodeInfo{}
			for _, n := range nl.Nodes {
				nodes[n.Node.Id] = n
				switch n.State {
				case "tombstone":
				case "up", "offline":
					add("node", fmt.Sprintf("%d (%s)", n.Node.Id, n.Node.Address), true, n.State)
				default:
					add("node", fmt.Sprintf("%d (%s)", n.Node.Id, n.Node.Address), false, n.State)
				}
			}
			tl, err := c.ListTables(ctx)
			if err != nil {
				add("shards", "tables", false, oneLine(err))
				return fmt.Errorf("unhealthy: listing tables: %w", err)
			}
			under, total := 0, 0
			for _, tb := range tl.Tables {
				if tb.State != pcspb.TableState_TABLE_STATE_PUBLIC {
					continue
				}
				shards, err := allShards(ctx, c, tb.Name)
				if err != nil {
					add("shards", tb.Name, false, oneLine(err))
					continue
				}
				for _, sh := range shards {
					total++
					if len(shardProblems(tb, sh, nodes, "under-replicated")) > 0 {
						under++
					}
				}
			}
			add("shards", "replicas", under == 0, fmt.Sprintf("%d of %d shards under-replicated", under, total))
			if bad > 0 {
				return fmt.Errorf("unhealthy: %d check(s) failed: %w", bad, errUnhealthy)
			}
			return nil
		},
	}
}

// errUnhealthy: pcsctl health found a problem.
var errUnhealthy = errors.New("cluster unhealthy")
