package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

func statusCmd(g *globals) *cobra.Command {
	var digest, allowDown bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the state of every endpoint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Each endpoint is asked once: an unreachable one is a row, not a retry loop.
			c, err := g.newClient(client.WithMaxAttempts(1))
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := g.ctx(cmd)
			defer cancel()
			type row struct {
				Endpoint     string `json:"endpoint"`
				Name         string `json:"name,omitempty"`
				State        string `json:"state"`
				Raft         string `json:"raft_state,omitempty"`
				Term         uint64 `json:"term,omitempty"`
				Primary      string `json:"primary,omitempty"`
				AppliedIndex uint64 `json:"applied_index,omitempty"`
				CommitIndex  uint64 `json:"commit_index,omitempty"`
				Revision     uint64 `json:"revision,omitempty"`
				Digest       string `json:"digest,omitempty"`
				Error        string `json:"error,omitempty"`
				ClusterID    string `json:"cluster_id,omitempty"`
				// The command format the primary writes, and the newest this member reads.
				ClusterVersion uint32 `json:"cluster_version,omitempty"`
				CommandVersion uint32 `json:"command_version,omitempty"`
				Version        string `json:"version,omitempty"` // the member's build
			}
			var rows []row
			t := table{header: []string{"ENDPOINT", "NAME", "CLUSTER", "STATE", "RAFT", "TERM", "PRIMARY", "APPLIED", "COMMIT", "REVISION"}}
			if digest {
				t.header = append(t.header, "DIGEST")
			}
			failed := 0
			for _, ep := range g.endpoints {
				st, err := c.Status(ctx, ep, digest)
				if err != nil {
					failed++
					rows = append(rows, row{Endpoint: ep, State: "unreachable", Error: oneLine(err)})
					t.rows = append(t.rows, []string{ep, "-", "-", "unreachable", "-", "-", "-", "-", "-", "-"})
					continue
				}
				r := row{Endpoint: ep, Name: st.Name, State: pcspb.StateName(st.State), Raft: st.RaftState, Term: st.Term, Primary: st.PrimaryName,
					AppliedIndex: st.AppliedIndex, CommitIndex: st.CommitIndex, Revision: st.Revision, Digest: st.Digest, ClusterID: st.ClusterId,
					ClusterVersion: st.ClusterVersion, CommandVersion: st.CommandVersion, Version: st.Version}
				rows = append(rows, r)
				cells := []string{ep, r.Name, r.ClusterID, r.State, r.Raft, u(r.Term), r.Primary, u(r.AppliedIndex), u(r.CommitIndex), u(r.Revision)}
				if digest {
					cells = append(cells, r.Digest)
				}
				t.rows = append(t.rows, cells)
			}
			t.value = rows
			if err := g.print(cmd.OutOrStdout(), t); err != nil {
				return err
			}
			if failed == len(g.endpoints) {
				return fmt.Errorf("no endpoint answered")
			}
			if allowDown {
				return nil
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d endpoints did not answer (--allow-down to exit 0 anyway)", failed, len(g.endpoints))
			}
			for _, r := range rows {
				if r.Primary == "" {
					return fmt.Errorf("%s knows no primary (--allow-down to exit 0 anyway)", r.Endpoint)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&digest, "digest", false, "also compute each node's state digest")
	cmd.Flags().BoolVar(&allowDown, "allow-down", false, "exit 0 even if an endpoint is down or no primary is known")
	return cmd
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

func memberRows(ms []*pcspb.Member) table {
	type row struct {
		Name       string `json:"name"`
		PeerAddr   string `json:"peer_addr"`
		ClientAddr string `json:"client_addr"`
		HTTPAddr   string `json:"http_addr"`
		Voter      bool   `json:"voter"`
		Primary    bool   `json:"primary"`
	}
	t := table{header: []string{"NAME", "PEER", "CLIENT", "HTTP", "ROLE", "PRIMARY"}}
	rows := []row{}
	for _, m := range ms {
		role := "voter"
		if !m.Voter {
			role = "non-voter"
		}
		p := ""
		if m.Primary {
			p = "*"
		}
		rows = append(rows, row{m.Name, m.PeerAddr, m.ClientAddr, m.HttpAddr, m.Voter, m.Primary})
		t.rows = append(t.rows, []string{m.Name, m.PeerAddr, m.ClientAddr, m.HttpAddr, role, p})
	}
	t.value = rows
	return t
}

func memberCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "member", Short: "List and change the PCS group's members"}
	list := &cobra.Command{
		Use: "list", Short: "List members", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.MemberList(ctx)
			if err != nil && (errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrNotPrimary) || errors.Is(err, context.DeadlineExceeded)) {
				// No primary: show what a reachable member knows, saying so.
				for _, ep := range g.endpoints {
					sctx, cancel := context.WithTimeout(ctx, time.Second)
					r, serr := c.MemberList(sctx, client.WithEndpoint(ep), client.WithStale())
					cancel()
					if serr == nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "pcsctl: no primary (%s); showing %s's own view, which may be stale\n", oneLine(err), ep)
						resp, err = r, nil
						break
					}
				}
			}
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), memberRows(resp.Members))
		},
	}
	var nonVoter, force bool
	add := &cobra.Command{
		Use:   "add NAME PEER_ADDR",
		Short: "Add a member: a non-voter first, promoted to voter once it has caught up",
		Long: `Add a member to the PCS group. Usually a new node adds itself: start it with
--join ENDPOINT (and no --initial-cluster). To add one by hand, run this, then start the node
with --join. The member joins as a non-voter and is promoted to voter once it has applied the
log; if it has not caught up before --timeout it stays a non-voter: run 'member promote NAME'.
A node that cannot be reached never becomes a voter, so it cannot cost the group its quorum.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.MemberAdd(ctx, args[0], args[1], nonVoter, force)
			if err != nil {
				return err
			}
			if resp.PromotionPending {
				fmt.Fprintf(cmd.ErrOrStderr(), "pcsctl: %s was added as a non-voter and has not caught up yet; promote it with 'pcsctl member promote %s'\n", args[0], args[0])
			}
			return g.print(cmd.OutOrStdout(), memberRows(resp.Members))
		},
	}
	add.Flags().BoolVar(&nonVoter, "non-voter", false, "stay a non-voter (replicates, does not vote)")
	add.Flags().BoolVar(&force, "force", false, "promote even if the live voters would then not form a quorum")
	promote := &cobra.Command{
		Use: "promote NAME", Short: "Make a caught-up non-voter a voter", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.MemberPromote(ctx, args[0], force)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), memberRows(resp.Members))
		},
	}
	promote.Flags().BoolVar(&force, "force", false, "promote even if the live voters would then not form a quorum")
	remove := &cobra.Command{
		Use: "remove NAME", Short: "Remove a member (refused if the live voters left would not form a quorum)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.MemberRemove(ctx, args[0], force)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), memberRows(resp.Members))
		},
	}
	transfer := &cobra.Command{
		Use: "transfer [NAME]", Short: "Move the primary role to NAME (or to the most up-to-date voter)", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			p, err := c.MemberTransfer(ctx, name)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), table{rows: [][]string{{"primary: " + p}}, value: map[string]string{"primary": p}})
		},
	}
	remove.Flags().BoolVar(&force, "force", false, "remove even if the live voters left would not form a quorum")
	cmd.AddCommand(list, add, promote, remove, transfer)
	return cmd
}

type kvRow struct {
	Key            string `json:"key"`
	Value          string `json:"value"`
	CreateRevision uint64 `json:"create_revision"`
	ModRevision    uint64 `json:"mod_revision"`
	Version        uint64 `json:"version"`
}

func kvTable(kvs []*pcspb.KeyValue) table {
	t := table{header: []string{"KEY", "VALUE", "VERSION", "MOD_REV"}}
	rows := []kvRow{}
	for _, kv := range kvs {
		rows = append(rows, kvRow{string(kv.Key), string(kv.Value), kv.CreateRevision, kv.ModRevision, kv.Version})
		t.rows = append(t.rows, []string{text(kv.Key), text(kv.Value), u(kv.Version), u(kv.ModRevision)})
	}
	t.value = rows
	return t
}

func parseConsistency(s string) ([]client.OpOption, error) {
	switch s {
	case "linearizable", "":
		return nil, nil
	case "stale":
		return []client.OpOption{client.WithStale()}, nil
	}
	return nil, fmt.Errorf("--consistency %q: want linearizable or stale", s)
}

func kvCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "kv", Short: "Read and write the system key-value namespace"}
	var consistency, endpoint string
	readFlags := func(c *cobra.Command) {
		c.Flags().StringVar(&consistency, "consistency", "linearizable", "linearizable or stale")
		c.Flags().StringVar(&endpoint, "endpoint", "", "serve the read at this node instead of the primary")
	}
	readOpts := func() ([]client.OpOption, error) {
		opts, err := parseConsistency(consistency)
		if endpoint != "" {
			opts = append(opts, client.WithEndpoint(endpoint))
		}
		return opts, err
	}
	get := &cobra.Command{
		Use: "get KEY", Short: "Read a key", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := readOpts()
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.Get(ctx, []byte(args[0]), opts...)
			if err != nil {
				return err
			}
			if resp.Kv == nil {
				return fmt.Errorf("key %q not found (revision %d)", args[0], resp.Header.Revision)
			}
			return g.print(cmd.OutOrStdout(), kvTable([]*pcspb.KeyValue{resp.Kv}))
		},
	}
	readFlags(get)
	var expected int64
	put := &cobra.Command{
		Use: "put KEY VALUE", Short: "Write a key", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			var opts []client.OpOption
			if expected >= 0 {
				opts = append(opts, client.WithExpectedVersion(uint64(expected)))
			}
			resp, err := c.Put(ctx, []byte(args[0]), []byte(args[1]), opts...)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), kvTable([]*pcspb.KeyValue{resp.Kv}))
		},
	}
	put.Flags().Int64Var(&expected, "expected-version", -1, "compare-and-swap: write only if the key has this version (0: absent)")
	var delExpected int64
	del := &cobra.Command{
		Use: "del KEY", Short: "Delete a key", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			var opts []client.OpOption
			if delExpected >= 0 {
				opts = append(opts, client.WithExpectedVersion(uint64(delExpected)))
			}
			resp, err := c.Delete(ctx, []byte(args[0]), opts...)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), table{
				rows:  [][]string{{fmt.Sprintf("deleted: %v revision: %d", resp.Deleted, resp.Header.Revision)}},
				value: map[string]any{"deleted": resp.Deleted, "revision": resp.Header.Revision},
			})
		},
	}
	del.Flags().Int64Var(&delExpected, "expected-version", -1, "delete only if the key has this version")
	var limit uint32
	var keysOnly bool
	rng := &cobra.Command{
		Use: "range [PREFIX]", Short: "List keys with a prefix", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := readOpts()
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			opts = append(opts, client.WithLimit(limit))
			if keysOnly {
				opts = append(opts, client.WithKeysOnly())
			}
			resp, err := c.Range(ctx, []byte(prefix), opts...)
			if err != nil {
				return err
			}
			t := kvTable(resp.Kvs)
			if resp.More && g.output == "table" {
				t.rows = append(t.rows, []string{"... more"})
			}
			return g.print(cmd.OutOrStdout(), t)
		},
	}
	readFlags(rng)
	rng.Flags().Uint32Var(&limit, "limit", 100, "at most this many keys (server maximum 10000)")
	rng.Flags().BoolVar(&keysOnly, "keys-only", false, "omit values")
	var rev uint64
	var count int
	watch := &cobra.Command{
		Use: "watch [PREFIX]", Short: "Print changes to keys with a prefix until interrupted", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			prefix := ""
			if len(args) == 1 {
				prefix = args[0]
			}
			n := 0
			for resp := range c.Watch(cmd.Context(), []byte(prefix), rev) {
				if resp.Err != nil {
					return resp.Err
				}
				for _, ev := range resp.Events {
					typ := "PUT"
					if ev.Type == pcspb.EventType_EVENT_TYPE_DELETE {
						typ = "DELETE"
					}
					if g.output == "json" {
						g.print(cmd.OutOrStdout(), table{value: map[string]any{"type": typ, "key": string(ev.Kv.Key), "value": string(ev.Kv.Value), "revision": ev.Kv.ModRevision, "version": ev.Kv.Version}})
					} else {
						fmt.Fprintf(cmd.OutOrStdout(), "%d\t%s\t%s\t%s\n", ev.Kv.ModRevision, typ, text(ev.Kv.Key), text(ev.Kv.Value))
					}
					n++
					if count > 0 && n >= count {
						return nil
					}
				}
			}
			return cmd.Context().Err()
		},
	}
	watch.Flags().Uint64Var(&rev, "rev", 0, "start at this revision (0: from now)")
	watch.Flags().IntVar(&count, "count", 0, "exit after this many events (0: never)")
	cmd.AddCommand(get, put, del, rng, watch)
	return cmd
}

func tsoCmd(g *globals) *cobra.Command {
	var count uint32
	cmd := &cobra.Command{
		Use: "tso", Short: "Get timestamps from the primary", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			first, err := c.GetTSBatch(ctx, count)
			if err != nil {
				return err
			}
			phys, logical := first>>18, first&(1<<18-1)
			return g.print(cmd.OutOrStdout(), table{
				header: []string{"FIRST", "COUNT", "PHYSICAL_MS", "LOGICAL"},
				rows:   [][]string{{u(first), u(uint64(count)), u(phys), u(logical)}},
				value:  map[string]uint64{"first": first, "count": uint64(count), "physical_ms": phys, "logical": logical},
			})
		},
	}
	cmd.Flags().Uint32Var(&count, "count", 1, "number of consecutive timestamps (1..262144)")
	return cmd
}

func idCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "id", Short: "Allocate ids"}
	var count uint32
	alloc := &cobra.Command{
		Use: "alloc KIND", Short: "Allocate ids of a kind (e.g. table, shard, node, txn)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			first, err := c.AllocIDs(ctx, args[0], count)
			if err != nil {
				return err
			}
			last := first + uint64(count) - 1
			return g.print(cmd.OutOrStdout(), table{
				header: []string{"KIND", "FIRST", "LAST", "COUNT"},
				rows:   [][]string{{args[0], u(first), u(last), u(uint64(count))}},
				value:  map[string]any{"kind": args[0], "first": first, "last": last, "count": count},
			})
		},
	}
	alloc.Flags().Uint32Var(&count, "count", 1, "number of ids")
	cmd.AddCommand(alloc)
	return cmd
}

func logLevelCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "log-level", Short: "Show or change the log level of every endpoint, at runtime"}
	get := &cobra.Command{
		Use: "get", Short: "Show each endpoint's log level", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return eachEndpoint(g, cmd, func(c *client.Client, ctx contextT, ep string) (string, error) {
				return c.GetLogLevel(ctx, ep)
			})
		},
	}
	set := &cobra.Command{
		Use: "set LEVEL", Short: "Set every endpoint's log level (debug, info, warn, error)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			level := strings.ToLower(args[0])
			return eachEndpoint(g, cmd, func(c *client.Client, ctx contextT, ep string) (string, error) {
				return level, c.SetLogLevel(ctx, ep, level)
			})
		},
	}
	cmd.AddCommand(get, set)
	return cmd
}
