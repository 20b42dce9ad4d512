package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"gopkg.in/yaml.v3"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/catalog"
	"github.com/postdb/pcs/client"
)

// loadTableSpec reads a table spec from a JSON or YAML file (the Table message's fields).
func loadTableSpec(path string) (*pcspb.Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(path, ".json") {
		var v any
		if err := yaml.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if data, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	t := &pcspb.Table{}
	if err := protojson.Unmarshal(data, t); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func tableCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "table", Short: "Create, drop and inspect tables"}
	var file, columns, isolation, hashCols, rangeCol, intervalW, retention string
	var replicas, minInSync, hashN uint32
	var group string
	create := &cobra.Command{
		Use: "create [NAME]", Short: "Create a table from a spec file (-f, JSON or YAML) or flags", Args: cobra.MaximumNArgs(1),
		Example: `  pcsctl table create orders --columns id:int64,region:string --hash-columns id --hash-partitions 16 --replicas 3 --isolation-label zone
  pcsctl table create events --columns ts:timestamp,id:int64 --range-column ts --interval 1d --retention 30d
  pcsctl table create -f orders.yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var t *pcspb.Table
			if file != "" {
				var err error
				if t, err = loadTableSpec(file); err != nil {
					return err
				}
			} else {
				if len(args) != 1 || columns == "" {
					return fmt.Errorf("give a table NAME and --columns, or a spec file with -f")
				}
				t = &pcspb.Table{Replicas: replicas, MinInSync: minInSync, IsolationLabel: isolation, ShardGroup: group}
				for _, c := range strings.Split(columns, ",") {
					name, typ, ok := strings.Cut(c, ":")
					if !ok {
						return fmt.Errorf("--columns %q: want name:type[:desc],...", c)
					}
					typ, desc := strings.CutSuffix(typ, ":desc")
					t.Columns = append(t.Columns, &pcspb.ColumnDef{Name: name, Type: typ, Descending: desc})
				}
				switch {
				case hashCols != "" && intervalW != "":
					return fmt.Errorf("--hash-columns and --interval are two partitionings: give one (or a spec file with a sub-partition)")
				case hashCols != "":
					t.Partition = &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH,
						Columns: strings.Split(hashCols, ","), HashPartitions: hashN}
				case intervalW != "":
					if rangeCol == "" {
						return fmt.Errorf("--interval needs --range-column")
					}
					t.Partition = &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_RANGE,
						Columns: []string{rangeCol}, Interval: intervalW, Retention: retention}
				case rangeCol != "" || retention != "":
					return fmt.Errorf("--range-column and --retention go with --interval")
				}
			}
			if len(args) == 1 {
				t.Name = args[0]
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.CreateTable(ctx, t)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), tableRows([]*pcspb.Table{resp.Table}, map[string]uint32{resp.Table.Name: resp.Shards}))
		},
	}
	create.Flags().StringVarP(&file, "file", "f", "", "table spec file (JSON if it ends in .json, else YAML)")
	create.Flags().StringVar(&columns, "columns", "", "key columns name:type[:desc],... (types: int64 uint64 float64 bool string bytes timestamp)")
	create.Flags().Uint32Var(&replicas, "replicas", 0, "replicas per shard (0: the cluster's default-replicas, 3 unless set)")
	create.Flags().Uint32Var(&minInSync, "min-in-sync", 0, "replicas (the primary included) that must persist a write before it is acknowledged; 0: 2, or 1 with one replica")
	create.Flags().StringVar(&isolation, "isolation-label", "", "place a shard's replicas on distinct values of this node label")
	create.Flags().StringVar(&hashCols, "hash-columns", "", "HASH partition over these columns")
	create.Flags().Uint32Var(&hashN, "hash-partitions", 16, "number of HASH partitions")
	create.Flags().StringVar(&rangeCol, "range-column", "", "with --interval: the timestamp or int64 column of the RANGE partition")
	create.Flags().StringVar(&intervalW, "interval", "", "RANGE partitions made on demand, one per interval of --range-column (1d, 6h for a timestamp; a width for an int64)")
	create.Flags().StringVar(&retention, "retention", "", "with --interval on a timestamp: partitions older than this (30d) are dropped")
	create.Flags().StringVar(&group, "shard-group", "", "co-locate the shards with the tables of this shard group, leaf by leaf")
	drop := &cobra.Command{
		Use: "drop NAME", Short: "Drop a table", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			if err := c.DropTable(ctx, args[0]); err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), table{rows: [][]string{{"dropping " + args[0]}}, value: map[string]string{"dropping": args[0]}})
		},
	}
	var steps, values []string
	var lessThan string
	alter := &cobra.Command{
		Use:   "alter NAME (--step DEF... | add-partition PART (--less-than V,... | --value V,...) | drop-partition PART | truncate-partition PART | set-replicas N)",
		Short: "Change a table: online schema steps, or its partitions and replica count (a job: pcsctl job list)",
		Example: `  pcsctl table alter orders --step v2.sql
  pcsctl table alter events add-partition d20261208 --less-than 2026-12-09T00:00:00Z
  pcsctl table alter users add-partition apac --value jp --value kr
  pcsctl table alter events drop-partition d20261101
  pcsctl table alter events truncate-partition d20261207
  pcsctl table alter events set-replicas 5`,
		Args: cobra.RangeArgs(1, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			var pa *pcspb.PartitionAlter
			if len(args) > 1 {
				var err error
				if pa, err = partitionAlter(args[1:], lessThan, values); err != nil {
					return err
				}
				if len(steps) > 0 {
					return fmt.Errorf("--step is for schema changes, not with %s", args[1])
				}
			} else if len(steps) == 0 {
				return fmt.Errorf("give --step DEF, or a change: add-partition, drop-partition, truncate-partition, set-replicas")
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			if pa != nil {
				t, err := c.AlterPartitions(ctx, args[0], pa)
				if err != nil {
					return err
				}
				msg := fmt.Sprintf("%s: %d replicas", t.Name, t.Replicas)
				if j := t.PartitionJob; j != nil {
					msg = fmt.Sprintf("%s: %s %q under way (pcsctl job show %s)", t.Name, j.Kind, j.Partition, t.Name)
				}
				return g.print(cmd.OutOrStdout(), table{rows: [][]string{{msg}}, value: t})
			}
			var bs [][]byte
			for _, st := range steps {
				bs = append(bs, []byte(st))
			}
			t, err := c.AlterTable(ctx, args[0], bs)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), table{
				rows:  [][]string{{fmt.Sprintf("%s: live schema versions %d..%d, %d steps pending", t.Name, t.MinLiveVersion, t.SchemaVersion, len(t.PendingSteps))}},
				value: map[string]any{"table": t.Name, "min_live_version": t.MinLiveVersion, "schema_version": t.SchemaVersion, "pending_steps": len(t.PendingSteps)},
			})
		},
	}
	alter.Flags().StringArrayVar(&steps, "step", nil, "schema definition of one step (opaque to PCS), in order")
	alter.Flags().StringVar(&lessThan, "less-than", "", "add-partition of a RANGE table: the new partition's exclusive upper bound, one value per partition column (v1,v2,...)")
	alter.Flags().StringArrayVar(&values, "value", nil, "add-partition of a LIST table: one listed tuple (v1,v2,... for several columns); repeat for more")
	list := &cobra.Command{
		Use: "list", Short: "List tables", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.ListTables(ctx)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), tableRows(resp.Tables, nil))
		},
	}
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a table's definition", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.GetTable(ctx, args[0])
			if err != nil {
				return err
			}
			b, _ := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(resp.Table)
			var v any
			json.Unmarshal(b, &v)
			return g.print(cmd.OutOrStdout(), table{rows: [][]string{{string(b)}, {fmt.Sprintf("shards: %d", resp.Shards)}}, value: v})
		},
	}
	cmd.AddCommand(create, drop, alter, list, show, primaryPolicyCmd(g))
	return cmd
}

func tableRows(ts []*pcspb.Table, shards map[string]uint32) table {
	t := table{header: []string{"ID", "NAME", "STATE", "REPLICAS", "SCHEMA_VERSION", "PARTITIONING"}}
	type row struct {
		ID       uint64 `json:"id"`
		Name     string `json:"name"`
		State    string `json:"state"`
		Replicas uint32 `json:"replicas"`
		Version  uint64 `json:"schema_version"`
		Shards   uint32 `json:"shards,omitempty"`
	}
	rows := []row{}
	for _, tb := range ts {
		state := strings.ToLower(strings.TrimPrefix(tb.State.String(), "TABLE_STATE_"))
		part := "none"
		if p := tb.Partition; p != nil && p.Strategy != pcspb.PartitionStrategy_PARTITION_STRATEGY_NONE {
			part = strings.TrimPrefix(p.Strategy.String(), "PARTITION_STRATEGY_") + "(" + strings.Join(p.Columns, ",") + ")"
			if p.Sub != nil {
				part += " / " + strings.TrimPrefix(p.Sub.Strategy.String(), "PARTITION_STRATEGY_") + "(" + strings.Join(p.Sub.Columns, ",") + ")"
			}
		}
		rows = append(rows, row{tb.Id, tb.Name, state, tb.Replicas, tb.SchemaVersion, shards[tb.Name]})
		t.rows = append(t.rows, []string{u(tb.Id), tb.Name, state, u(uint64(tb.Replicas)), u(tb.SchemaVersion), part})
	}
	t.value = rows
	return t
}

func shardRows(ss []*pcspb.Shard) table { return shardLoadRows(ss, nil) }

// shardLoadRows is shardRows with, if stats is given (one per shard), each shard's size, read
// and write rates (keys per second) and how far each replica's log is behind the primary's.
func shardLoadRows(ss []*pcspb.Shard, stats []*pcspb.ShardStats) table {
	t := table{header: []string{"ID", "PARTITION", "START", "END", "EPOCH", "TERM", "PRIMARY", "REPLICAS", "LEARNERS"}}
	if stats != nil {
		t.header = append(t.header, "SIZE", "READ/S", "WRITE/S", "LAG")
	}
	type load struct {
		SizeBytes   uint64            `json:"size_bytes"`
		ReadPerSec  float64           `json:"read_per_sec"`
		WritePerSec float64           `json:"write_per_sec"`
		Positions   map[uint64]uint64 `json:"replica_positions"`
		Lag         map[uint64]uint64 `json:"replica_lag"`
	}
	type row struct {
		ID        uint64   `json:"id"`
		TableID   uint64   `json:"table_id"`
		Partition string   `json:"partition"`
		Start     string   `json:"start"`
		End       string   `json:"end"`
		ConfVer   uint64   `json:"conf_ver"`
		Version   uint64   `json:"version"`
		Term      uint64   `json:"term"`
		Primary   uint64   `json:"primary"`
		Replicas  []uint64 `json:"replicas"`
		Learners  []uint64 `json:"learners"`
		Load      *load    `json:"load,omitempty"`
	}
	rows := []row{}
	for i, s := range ss {
		r := row{s.Id, s.TableId, s.Partition, fmt.Sprintf("%x", s.Start), fmt.Sprintf("%x", s.End),
			s.Epoch.GetConfVer(), s.Epoch.GetVersion(), s.Term, s.Primary, s.Replicas, s.Learners, nil}
		cells := []string{u(s.Id), s.Partition, fmt.Sprintf("%x", s.Start), fmt.Sprintf("%x", s.End),
			fmt.Sprintf("%d/%d", s.Epoch.GetConfVer(), s.Epoch.GetVersion()), u(s.Term), u(s.Primary), ids(s.Replicas), ids(s.Learners)}
		if stats != nil && i < len(stats) {
			st := stats[i]
			lag, lagCell := replicaLag(s, st.ReplicaPositions)
			r.Load = &load{st.SizeBytes, st.ReadPerSec, st.WritePerSec, st.ReplicaPositions, lag}
			cells = append(cells, bytesOrDash(st.SizeBytes), fmt.Sprintf("%.1f", st.ReadPerSec), fmt.Sprintf("%.1f", st.WritePerSec), lagCell)
		}
		rows = append(rows, r)
		t.rows = append(t.rows, cells)
	}
	t.value = rows
	return t
}

// replicaLag returns how many log entries each replica and learner is behind the primary's
// replica, and a cell: "0" when all are level, else node:entries for those behind ("?" for one
// that reported no position).
func replicaLag(s *pcspb.Shard, pos map[uint64]uint64) (map[uint64]uint64, string) {
	head, ok := pos[s.Primary]
	if !ok {
		return nil, "-"
	}
	lag := map[uint64]uint64{}
	var behind []string
	for _, r := range append(append([]uint64(nil), s.Replicas...), s.Learners...) {
		if r == s.Primary {
			continue
		}
		p, ok := pos[r]
		if !ok {
			behind = append(behind, u(r)+":?")
			continue
		}
		lag[r] = head - min(p, head)
		if lag[r] > 0 {
			behind = append(behind, fmt.Sprintf("%d:%d", r, lag[r]))
		}
	}
	if len(behind) == 0 {
		return lag, "0"
	}
	return lag, strings.Join(behind, ",")
}

// ids joins node ids with commas ("-" for none).
func ids(xs []uint64) string {
	if len(xs) == 0 {
		return "-"
	}
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = u(x)
	}
	return strings.Join(out, ",")
}

func shardCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "shard", Short: "Inspect shards and routes; split, move, transfer the primary"}
	var limit uint32
	list := &cobra.Command{
		Use: "list TABLE", Short: "List a table's shards in key order", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.ScanShards(ctx, args[0], nil, nil, client.WithLimit(limit), client.WithStats())
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), shardLoadRows(resp.Shards, resp.Stats))
		},
	}
	list.Flags().Uint32Var(&limit, "limit", 1000, "at most this many shards")
	show := &cobra.Command{
		Use: "show ID", Short: "Show one shard", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("shard", args[0])
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.GetShardByID(ctx, id)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), shardRows([]*pcspb.Shard{resp.Shard}))
		},
	}
	route := &cobra.Command{
		Use: "route TABLE VALUE[,VALUE...]", Short: "Show the shard holding a key (values of the key columns, in order)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			tr, err := c.GetTable(ctx, args[0])
			if err != nil {
				return err
			}
			key, err := encodeKey(tr.Table, args[1])
			if err != nil {
				return err
			}
			resp, err := c.GetShard(ctx, args[0], key)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), shardRows([]*pcspb.Shard{resp.Shard}))
		},
	}
	var keyHex, at string
	split := &cobra.Command{
		Use:   "split ID [--key HEX | --at VALUE[,VALUE...]]",
		Short: "Split a shard: at a routing key (hex, as in START/END), at key column values, or (neither) at its middle key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("shard", args[0])
			if err != nil {
				return err
			}
			if keyHex != "" && at != "" {
				return fmt.Errorf("--key and --at exclude each other")
			}
			var key []byte
			if keyHex != "" {
				if key, err = hex.DecodeString(keyHex); err != nil || len(key) == 0 {
					return fmt.Errorf("--key %q: want a non-empty hex routing key", keyHex)
				}
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			if at != "" {
				sh, err := c.GetShardByID(ctx, id)
				if err != nil {
					return err
				}
				tables, err := c.ListTables(ctx)
				if err != nil {
					return err
				}
				var tbl *pcspb.Table
				for _, t := range tables.Tables {
					if t.Id == sh.Shard.TableId {
						tbl = t
					}
				}
				if tbl == nil || len(sh.Shard.Start) < 4 {
					return fmt.Errorf("shard %d: table %d not found", id, sh.Shard.TableId)
				}
				row, err := encodeKey(tbl, at)
				if err != nil {
					return fmt.Errorf("--at: %w", err)
				}
				key = append(bytes.Clone(sh.Shard.Start[:4]), row...) // the shard's leaf prefix, then the row key
			}
			left, right, err := c.SplitShard(ctx, id, key)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), shardRows([]*pcspb.Shard{left, right}))
		},
	}
	split.Flags().StringVar(&keyHex, "key", "", "split at this routing key (hex)")
	split.Flags().StringVar(&at, "at", "", "split at this row key: values of the key columns, in order")
	var from, to string
	move := &cobra.Command{
		Use: "move ID --from NODE --to NODE", Short: "Move a shard's replica to another node (learner, catch-up, promotion, removal)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("shard", args[0])
			if err != nil {
				return err
			}
			f, err := parseID("--from node", from)
			if err != nil {
				return err
			}
			t, err := parseID("--to node", to)
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			sh, err := c.MoveShard(ctx, id, f, t)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), shardRows([]*pcspb.Shard{sh}))
		},
	}
	move.Flags().StringVar(&from, "from", "", "node id the replica leaves")
	move.Flags().StringVar(&to, "to", "", "node id the replica goes to")
	var primaryTo string
	transfer := &cobra.Command{
		Use: "transfer-primary ID --to NODE", Short: "Make another replica the shard's primary", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID("shard", args[0])
			if err != nil {
				return err
			}
			t, err := parseID("--to node", primaryTo)
			if err != nil {
				return err
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			sh, err := c.TransferPrimary(ctx, id, t)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), shardRows([]*pcspb.Shard{sh}))
		},
	}
	transfer.Flags().StringVar(&primaryTo, "to", "", "node id of the new primary (a replica)")
	cmd.AddCommand(list, show, route, split, move, transfer, shardCheckCmd(g), shardHotCmd(g))
	return cmd
}

// encodeKey parses comma-separated values of a table's leading key columns and encodes them.
func encodeKey(t *pcspb.Table, text string) ([]byte, error) { return catalog.EncodeKeyText(t, text) }

func nodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Inspect data nodes"}
	list := &cobra.Command{
		Use: "list", Short: "List data nodes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.ListNodes(ctx)
			if err != nil {
				return err
			}
			t := table{header: []string{"ID", "ADDRESS", "STATE", "SHARDS", "PRIMARIES", "CAPACITY", "USED", "DISK-FREE", "READ/S", "WRITE/S", "CPU", "MEM", "IO/S", "LABELS"}}
			type row struct {
				ID        uint64            `json:"id"`
				Address   string            `json:"address"`
				State     string            `json:"state"`
				Shards    uint64            `json:"shards"`
				Primaries uint64            `json:"primaries"`
				Capacity  uint64            `json:"capacity_bytes"`
				Used      uint64            `json:"used_bytes"`
				DiskFree  uint64            `json:"disk_free_bytes"`
				Reads     float64           `json:"read_per_sec"`
				Writes    float64           `json:"write_per_sec"`
				CPU       float64           `json:"cpu_cores"`
				Memory    uint64            `json:"memory_bytes"`
				IO        uint64            `json:"io_bytes_per_sec"`
				Labels    map[string]string `json:"labels"`
				Evict     bool              `json:"evict_primaries"`
			}
			rows := []row{}
			for _, n := range resp.Nodes {
				var labels []string
				for k, v := range n.Node.Labels {
					labels = append(labels, k+"="+v)
				}
				sort.Strings(labels)
				rows = append(rows, row{n.Node.Id, n.Node.Address, n.State, n.Shards, n.Primaries, n.Node.CapacityBytes, n.UsedBytes, n.DiskFreeBytes,
					n.ReadPerSec, n.WritePerSec, n.Cpu, n.MemoryBytes, n.IoBytesPerSec, n.Node.Labels, n.EvictPrimaries})
				state := n.State
				if n.EvictPrimaries {
					state += " (evicting primaries)"
				}
				t.rows = append(t.rows, []string{u(n.Node.Id), n.Node.Address, state, u(n.Shards), u(n.Primaries),
					bytesOrDash(n.Node.CapacityBytes), bytesOrDash(n.UsedBytes), bytesOrDash(n.DiskFreeBytes),
					fmt.Sprintf("%.1f", n.ReadPerSec), fmt.Sprintf("%.1f", n.WritePerSec), fmt.Sprintf("%.2f", n.Cpu),
					bytesOrDash(n.MemoryBytes), bytesOrDash(n.IoBytesPerSec), strings.Join(labels, ",")})
			}
			t.value = rows
			return g.print(cmd.OutOrStdout(), t)
		},
	}
	show := &cobra.Command{
		Use: "show ID", Short: "Show one data node", Args: cobra.ExactArgs(1),
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
			resp, err := c.ListNodes(ctx)
			if err != nil {
				return err
			}
			for _, n := range resp.Nodes {
				if n.Node.Id == id {
					b, _ := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(n)
					var v any
					json.Unmarshal(b, &v)
					return g.print(cmd.OutOrStdout(), table{rows: [][]string{{string(b)}}, value: v})
				}
			}
			return fmt.Errorf("node %d not found", id)
		},
	}
	setState := &cobra.Command{
		Use: "set-state ID up|offline|tombstone", Short: "Mark a node offline (drain: no new replicas), tombstone (removed) or up again", Args: cobra.ExactArgs(2),
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
			if err := c.SetNodeState(ctx, id, args[1]); err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), table{rows: [][]string{{fmt.Sprintf("node %d: %s", id, args[1])}}, value: map[string]any{"node": id, "state": args[1]}})
		},
	}
	cmd.AddCommand(list, show, setState, drainCmd(g), evictPrimariesCmd(g), nodeConfigCmd(g))
	return cmd
}

// partitionAlter parses "add-partition PART", "drop-partition PART", "truncate-partition PART"
// or "set-replicas N".
func partitionAlter(args []string, lessThan string, values []string) (*pcspb.PartitionAlter, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("%s takes one argument", args[0])
	}
	what, arg := args[0], args[1]
	if what != "add-partition" && (lessThan != "" || len(values) > 0) {
		return nil, fmt.Errorf("--less-than and --value are for add-partition")
	}
	switch what {
	case "add-partition":
		switch {
		case lessThan != "" && len(values) == 0:
			return &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_AddRange{AddRange: &pcspb.RangePartition{Name: arg, LessThan: strings.Split(lessThan, ",")}}}, nil
		case lessThan == "" && len(values) > 0:
			lp := &pcspb.ListPartition{Name: arg}
			for _, v := range values {
				lp.Values = append(lp.Values, &pcspb.ValueTuple{Values: strings.Split(v, ",")})
			}
			return &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_AddList{AddList: lp}}, nil
		}
		return nil, fmt.Errorf("add-partition takes --less-than (RANGE) or --value (LIST)")
	case "drop-partition":
		return &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Drop{Drop: arg}}, nil
	case "truncate-partition":
		return &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_Truncate{Truncate: arg}}, nil
	case "set-replicas":
		n, err := strconv.ParseUint(arg, 10, 32)
		if err != nil || n < 1 || n > 9 {
			return nil, fmt.Errorf("set-replicas %q: want a count in 1..9", arg)
		}
		return &pcspb.PartitionAlter{Op: &pcspb.PartitionAlter_SetReplicas{SetReplicas: uint32(n)}}, nil
	}
	return nil, fmt.Errorf("unknown change %q: add-partition, drop-partition, truncate-partition or set-replicas", what)
}

func jobCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "job", Short: "DDL jobs: list, show, cancel"}
	jobRows := func(js []*pcspb.Job) table {
		t := table{header: []string{"TABLE_ID", "TABLE", "KIND", "PARTITION", "STEP", "PROGRESS"}}
		for _, j := range js {
			t.rows = append(t.rows, []string{u(j.TableId), j.Table, j.Kind, j.Partition, j.Step, fmt.Sprintf("%d/%d", j.Done, j.Total)})
		}
		if js == nil {
			js = []*pcspb.Job{}
		}
		t.value = js
		return t
	}
	list := func(cmd *cobra.Command, filter string) error {
		c, ctx, done, err := g.open(cmd)
		if err != nil {
			return err
		}
		defer done()
		js, err := c.ListJobs(ctx)
		if err != nil {
			return err
		}
		if filter != "" {
			var only []*pcspb.Job
			for _, j := range js {
				if j.Table == filter {
					only = append(only, j)
				}
			}
			if only == nil {
				return fmt.Errorf("table %q has no job", filter)
			}
			js = only
		}
		return g.print(cmd.OutOrStdout(), jobRows(js))
	}
	cmd.AddCommand(&cobra.Command{
		Use: "list", Short: "List DDL jobs under way", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return list(cmd, "") },
	}, &cobra.Command{
		Use: "show TABLE", Short: "Show a table's job", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return list(cmd, args[0]) },
	}, &cobra.Command{
		Use: "cancel TABLE", Short: "Cancel a table's create (rolled back) or an alter's pending steps", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			if err := c.CancelJob(ctx, args[0]); err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), table{rows: [][]string{{"cancelled " + args[0]}}, value: map[string]string{"cancelled": args[0]}})
		},
	})
	return cmd
}

func groupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "group", Short: "Shard groups (tables whose shards are co-located leaf by leaf)"}
	cmd.AddCommand(&cobra.Command{
		Use: "list", Short: "List shard groups and their tables", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.ListTables(ctx)
			if err != nil {
				return err
			}
			groups := map[string][]string{}
			for _, t := range resp.Tables {
				if t.ShardGroup != "" {
					groups[t.ShardGroup] = append(groups[t.ShardGroup], t.Name)
				}
			}
			names := make([]string, 0, len(groups))
			for n := range groups {
				names = append(names, n)
			}
			sort.Strings(names)
			t := table{header: []string{"GROUP", "TABLES"}, value: groups}
			for _, n := range names {
				t.rows = append(t.rows, []string{n, strings.Join(groups[n], ",")})
			}
			return g.print(cmd.OutOrStdout(), t)
		},
	})
	return cmd
}

// parseID parses a numeric id given on the command line.
func parseID(what, arg string) (uint64, error) {
	id, err := strconv.ParseUint(arg, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s id %q: want a number", what, arg)
	}
	return id, nil
}

// bytesOrDash prints a byte count in binary units, "-" for 0 (unknown or not reported).
func bytesOrDash(b uint64) string {
	if b == 0 {
		return "-"
	}
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

func shardHotCmd(g *globals) *cobra.Command {
	var by, tableName string
	var top uint32
	cmd := &cobra.Command{
		Use:   "hot",
		Short: "The shards with the most traffic (moving averages) and each node's load as hot scheduling sees it",
		Long: `The shards with the most traffic: keys and bytes read and written per second, moving averages
(half-life 10 s) of what each shard's primary reports. Then every data node's load as hot
scheduling measures it: the keys/s of the shards it leads, against the mean and the threshold
(mean x (1 + hot-ratio)) above which it sheds after hot-hold.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.HotShards(ctx, tableName, by, top)
			if err != nil {
				return err
			}
			t := table{header: []string{"SHARD", "TABLE", "PRIMARY", "READ/S", "WRITE/S", "READ B/S", "WRITE B/S"}}
			type shardRow struct {
				ID          uint64  `json:"id"`
				Table       string  `json:"table"`
				Primary     uint64  `json:"primary"`
				ReadPerSec  float64 `json:"read_per_sec"`
				WritePerSec float64 `json:"write_per_sec"`
				ReadBytes   float64 `json:"read_bytes_per_sec"`
				WriteBytes  float64 `json:"write_bytes_per_sec"`
			}
			type nodeRow struct {
				ID       uint64  `json:"id"`
				Keys     float64 `json:"keys_per_sec"`
				HotForMs int64   `json:"hot_for_ms"`
			}
			out := struct {
				Shards    []shardRow `json:"shards"`
				Nodes     []nodeRow  `json:"nodes"`
				Mean      float64    `json:"mean_keys_per_sec"`
				Threshold float64    `json:"hot_threshold"`
			}{Shards: []shardRow{}, Nodes: []nodeRow{}, Mean: resp.MeanKeysPerSec, Threshold: resp.HotThreshold}
			for _, h := range resp.Shards {
				out.Shards = append(out.Shards, shardRow{h.Shard.GetId(), h.Table, h.Shard.GetPrimary(), h.ReadPerSec, h.WritePerSec, h.ReadBytesPerSec, h.WriteBytesPerSec})
				t.rows = append(t.rows, []string{u(h.Shard.GetId()), h.Table, u(h.Shard.GetPrimary()), fmt.Sprintf("%.1f", h.ReadPerSec),
					fmt.Sprintf("%.1f", h.WritePerSec), bytesOrDash(uint64(h.ReadBytesPerSec)), bytesOrDash(uint64(h.WriteBytesPerSec))})
			}
			for _, n := range resp.Nodes {
				out.Nodes = append(out.Nodes, nodeRow{n.NodeId, n.KeysPerSec, n.HotForMs})
			}
			if g.output == "json" {
				return g.print(cmd.OutOrStdout(), table{value: out})
			}
			w := cmd.OutOrStdout()
			if err := g.print(w, table{header: t.header, rows: t.rows}); err != nil {
				return err
			}
			nodes := table{header: []string{"NODE", "LEADS KEYS/S", "VS MEAN", "HOT FOR"}}
			for _, n := range resp.Nodes {
				vs, hotFor := "-", "-"
				if resp.MeanKeysPerSec > 0 {
					vs = fmt.Sprintf("%+.0f%%", 100*(n.KeysPerSec/resp.MeanKeysPerSec-1))
				}
				if n.HotForMs > 0 {
					hotFor = (time.Duration(n.HotForMs) * time.Millisecond).Round(time.Second).String()
				}
				nodes.rows = append(nodes.rows, []string{u(n.NodeId), fmt.Sprintf("%.1f", n.KeysPerSec), vs, hotFor})
			}
			fmt.Fprintf(w, "\nnode load (mean %.1f keys/s, hot above %.1f):\n", resp.MeanKeysPerSec, resp.HotThreshold)
			return g.print(w, nodes)
		},
	}
	cmd.Flags().StringVar(&by, "by", "keys", "order by keys (reads + writes), reads, writes or bytes")
	cmd.Flags().Uint32Var(&top, "top", 20, "at most this many shards (up to 1000)")
	cmd.Flags().StringVar(&tableName, "table", "", "only this table's shards")
	return cmd
}

func primaryPolicyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "primary-policy TABLE balanced|none|preferred LABEL=VALUE[,LABEL=VALUE...]",
		Short: "Where a table's primaries go: balanced (default), none (left where they are), or preferred labels/nodes in order",
		Long: `balanced: primaries spread evenly by count, and by load when a node is hot (the default).
preferred zone=z1,zone=z2: on a replica in the first preference that has one in line (node=ID
names a node), balanced among those; after a failover they come back once a replica there is in
line again (YugabyteDB's leader affinity, CockroachDB's lease preferences).
none: PCS moves a primary only to keep the shard available (failover, drain, eviction).
Stored as the runtime setting primary-policy:TABLE (pcsctl config get shows it).`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.SetScheduleConfig(ctx, "primary-policy:"+args[0], strings.Join(args[1:], " "))
			if err != nil {
				return err
			}
			key := "primary-policy:" + args[0] // schedule.PrimaryPolicyPrefix (pcsctl links no server code)
			v := resp.Config[key]
			if v == "" {
				v = "balanced"
			}
			return g.print(cmd.OutOrStdout(), table{header: []string{"TABLE", "PRIMARY POLICY"}, rows: [][]string{{args[0], v}},
				value: map[string]string{"table": args[0], "primary_policy": v}})
		},
	}
}

// nodeConfigCmd sets and shows the settings PCS carries to the data nodes.
func nodeConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Data node settings PCS carries to the nodes (log-level): set once, in force on every node"}
	rows := func(infos []*pcspb.NodeConfigInfo) table {
		t := table{header: []string{"NODE", "STATE", "KEY", "DESIRED", "APPLIED"}, value: infos}
		for _, in := range infos {
			keys := map[string]bool{}
			for k := range in.Desired {
				keys[k] = true
			}
			for k := range in.Applied {
				keys[k] = true
			}
			sorted := make([]string, 0, len(keys))
			for k := range keys {
				sorted = append(sorted, k)
			}
			sort.Strings(sorted)
			for _, k := range sorted {
				t.rows = append(t.rows, []string{u(in.NodeId), in.State, k, in.Desired[k], in.Applied[k]})
			}
		}
		if infos == nil {
			t.value = []*pcspb.NodeConfigInfo{}
		}
		return t
	}
	var nodesFlag string
	parseNodes := func() ([]uint64, error) {
		if nodesFlag == "" || nodesFlag == "all" {
			return nil, nil
		}
		var ids []uint64
		for _, f := range strings.Split(nodesFlag, ",") {
			id, err := strconv.ParseUint(f, 10, 64)
			if err != nil || id == 0 {
				return nil, fmt.Errorf("--nodes %q: all, or node ids (1,2,...)", nodesFlag)
			}
			ids = append(ids, id)
		}
		return ids, nil
	}
	setOrUnset := func(unset bool) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			ids, err := parseNodes()
			if err != nil {
				return err
			}
			value := ""
			if !unset {
				value = args[1]
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			infos, err := c.SetNodeConfig(ctx, ids, args[0], value)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), rows(infos))
		}
	}
	set := &cobra.Command{
		Use: "set KEY VALUE", Short: "Set a node setting (persisted; carried to every node, also later ones, until each has it in force)", Args: cobra.ExactArgs(2),
		Long: `Set a node setting: persisted through Raft and carried in heartbeat answers to every data node
(also those down now or added later) until each reports it in force. Keys:
  log-level       debug, info, warn or error
  trace-ratio     share of untraced requests to trace, 0..1 (0: off)
  trace-exporter  host:port (OTLP over gRPC) or file:DIR (JSON lines)
  shard-metrics   on or off: per-shard series on the node's /metrics
  pprof           on or off: /debug/pprof/ on the node's HTTP address`,
		Example: `  pcsctl node config set log-level debug
  pcsctl node config set log-level warn --nodes 2,3
  pcsctl node config set shard-metrics on`,
		RunE: setOrUnset(false),
	}
	set.Flags().StringVar(&nodesFlag, "nodes", "all", "all, or the node ids it is for (a node's own setting wins over the one for all)")
	unset := &cobra.Command{
		Use: "unset KEY", Short: "Unset a node setting (nodes keep what they have until restarted with their own flags)", Args: cobra.ExactArgs(1),
		RunE: setOrUnset(true),
	}
	unset.Flags().StringVar(&nodesFlag, "nodes", "all", "all, or the node ids")
	get := &cobra.Command{
		Use: "get [NODE...]", Short: "Show each node's desired and applied settings", Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ids []uint64
			for _, a := range args {
				id, err := strconv.ParseUint(a, 10, 64)
				if err != nil {
					return fmt.Errorf("node %q: want a node id", a)
				}
				ids = append(ids, id)
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			infos, err := c.GetNodeConfig(ctx, ids...)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), rows(infos))
		},
	}
	cmd.AddCommand(set, unset, get)
	return cmd
}
