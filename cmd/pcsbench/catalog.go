package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/catalog"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/keyenc"
	"github.com/postdb/pcs/nodeagent"
)

// tableKeys reads a table's definition and returns a generator of its random keys.
func tableKeys(ctx context.Context, p *params, table string) (func(r *rand.Rand) []byte, error) {
	c, err := p.newClient()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr, err := c.GetTable(ctx, table)
	if err != nil {
		return nil, err
	}
	return randomKey(tr.Table)
}

// randomKey returns a function producing random keys of a table's key columns.
func randomKey(t *pcspb.Table) (func(r *rand.Rand) []byte, error) {
	schema, err := catalog.CompileSchema(t.Columns)
	if err != nil {
		return nil, err
	}
	return func(r *rand.Rand) []byte {
		vals := make([]keyenc.Value, len(schema.Cols))
		for i, c := range schema.Cols {
			switch c.Type {
			case keyenc.Int64, keyenc.Timestamp:
				vals[i] = keyenc.I64(r.Int64())
			case keyenc.Uint64:
				vals[i] = keyenc.U64(r.Uint64())
			case keyenc.Float64:
				vals[i] = keyenc.F64(r.NormFloat64())
			case keyenc.Bool:
				vals[i] = keyenc.BoolV(r.IntN(2) == 0)
			default:
				vals[i] = keyenc.Str(fmt.Sprint(r.Uint64()))
			}
		}
		b, _ := keyenc.Encode(nil, schema.Cols, vals)
		return b
	}, nil
}

func routeCmd(p *params) *cobra.Command {
	var table, mode, at, consistency string
	var batch int
	cmd := &cobra.Command{
		Use: "route", Short: "Routing lookups of random keys: through PCS (rpc) or the client cache (cached)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if table == "" {
				return fmt.Errorf("--table is required")
			}
			if mode != "rpc" && mode != "cached" {
				return fmt.Errorf("--mode %q: want rpc or cached", mode)
			}
			var opts []client.OpOption
			switch consistency {
			case "stale":
				opts = append(opts, client.WithStale())
			case "linearizable":
			default:
				return fmt.Errorf("--consistency %q: want stale or linearizable", consistency)
			}
			if at != "" {
				opts = append(opts, client.WithEndpoint(at))
			}
			gen, err := tableKeys(cmd.Context(), p, table)
			if err != nil {
				return err
			}
			if batch < 1 || batch > 10000 {
				return fmt.Errorf("--batch must be in 1..10000")
			}
			p.perOp = batch
			return bench(cmd.Context(), "route", p, func(c *client.Client, worker, i int) func(context.Context) error {
				r := rand.New(rand.NewPCG(uint64(worker), uint64(i)))
				if batch > 1 {
					keys := make([][]byte, batch)
					for j := range keys {
						keys[j] = gen(r)
					}
					return func(ctx context.Context) error { _, err := c.BatchGetShards(ctx, table, keys, opts...); return err }
				}
				key := gen(r)
				if mode == "cached" {
					return func(ctx context.Context) error { _, err := c.Route(ctx, table, key); return err }
				}
				return func(ctx context.Context) error { _, err := c.GetShard(ctx, table, key, opts...); return err }
			})
		},
	}
	cmd.Flags().StringVar(&table, "table", "", "table to route in")
	cmd.Flags().StringVar(&mode, "mode", "rpc", "rpc (a GetShard per lookup) or cached (client.Route)")
	cmd.Flags().StringVar(&at, "at", "", "send lookups to this PCS (e.g. a follower) instead of the primary")
	cmd.Flags().StringVar(&consistency, "consistency", "stale", "stale or linearizable")
	cmd.Flags().IntVar(&batch, "batch", 1, "keys per lookup call (BatchGetShards when > 1); ops/s counts keys")
	return cmd
}

// simNode is a simulated data node: it holds whatever it is told to and reports stats for it.
type simNode struct {
	mu         sync.Mutex
	held       map[uint64]bool
	versions   map[uint64]uint64
	extraStats int
}

func (n *simNode) LoadSchema(_ context.Context, ref *pcspb.SchemaVersionRef) error {
	n.mu.Lock()
	n.versions[ref.TableId] = max(n.versions[ref.TableId], ref.Version)
	n.mu.Unlock()
	return nil
}

func (n *simNode) CreateReplica(_ context.Context, s *pcspb.Shard) error {
	n.mu.Lock()
	n.held[s.Id] = true
	n.mu.Unlock()
	return nil
}

func (n *simNode) DropReplica(_ context.Context, id uint64) error {
	n.mu.Lock()
	delete(n.held, id)
	n.mu.Unlock()
	return nil
}

func (n *simNode) HeldShards() []uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]uint64, 0, len(n.held))
	for id := range n.held {
		out = append(out, id)
	}
	slices.Sort(out) // as a data node sends it
	return out
}

func (n *simNode) Stats() (*pcspb.NodeStats, []*pcspb.ShardStats) {
	n.mu.Lock()
	defer n.mu.Unlock()
	stats := make([]*pcspb.ShardStats, 0, n.extraStats)
	for i := 0; i < n.extraStats; i++ {
		stats = append(stats, &pcspb.ShardStats{ShardId: uint64(1<<40 + i), SizeBytes: 1 << 20})
	}
	versions := make(map[uint64]uint64, len(n.versions))
	for k, v := range n.versions {
		versions[k] = v
	}
	return &pcspb.NodeStats{ShardCount: uint64(len(n.held)), DiskFree: 1 << 40, SchemaVersions: versions}, stats
}

func heartbeatCmd(p *params) *cobra.Command {
	var nodes, zones, shardStats int
	var interval time.Duration
	cmd := &cobra.Command{
		Use: "heartbeat", Short: "Simulated data nodes heartbeating to the primary; also keeps tables' replicas 'created'", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nodes < 1 || zones < 1 {
				return fmt.Errorf("--nodes and --zones must be at least 1")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), p.duration)
			defer cancel()
			var wg sync.WaitGroup
			var beats atomic.Int64
			sims := make([]*simNode, nodes)
			for i := range sims {
				sims[i] = &simNode{held: map[uint64]bool{}, versions: map[uint64]uint64{}, extraStats: shardStats}
				a, err := nodeagent.New(nodeagent.Config{Endpoints: p.endpoints, Address: fmt.Sprintf("sim-%d:7000", i),
					Labels: map[string]string{"zone": fmt.Sprint("z", i%zones), "host": fmt.Sprint("h", i)}, CapacityBytes: 1 << 40,
					Interval: interval, OnBeat: func() { beats.Add(1) }}, sims[i])
				if err != nil {
					return err
				}
				wg.Add(1)
				go func() { defer wg.Done(); a.Run(ctx) }()
			}
			start := time.Now()
			wg.Wait()
			el := time.Since(start).Seconds()
			n := beats.Load()
			fmt.Printf("heartbeat nodes=%d shard-stats-per-beat=%d beats=%d beats/s=%.0f shard-stats/s=%.0f\n",
				nodes, shardStats, n, float64(n)/el, float64(n)*float64(shardStats)/el)
			return nil
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 6, "simulated nodes")
	cmd.Flags().IntVar(&zones, "zones", 3, "zone labels z0..")
	cmd.Flags().IntVar(&shardStats, "shard-stats", 0, "extra per-shard stats each heartbeat carries")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "heartbeat interval per node")
	return cmd
}

func ddlCmd(p *params) *cobra.Command {
	var partitions uint32
	var replicas uint32
	var drop bool
	cmd := &cobra.Command{
		Use: "ddl", Short: "Create (and then drop) tables as fast as the primary accepts them; needs live data nodes (e.g. pcsbench heartbeat)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			run := fmt.Sprint(time.Now().UnixNano() % 1e9)
			var mu sync.Mutex
			var created []string
			err := bench(cmd.Context(), "ddl-create", p, func(c *client.Client, worker, i int) func(context.Context) error {
				name := fmt.Sprintf("bench_%s_%d_%d", run, worker, i)
				return func(ctx context.Context) error {
					_, err := c.CreateTable(ctx, &pcspb.Table{Name: name, Replicas: replicas,
						Columns:   []*pcspb.ColumnDef{{Name: "id", Type: "int64"}},
						Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"id"}, HashPartitions: partitions}})
					if err == nil {
						mu.Lock()
						created = append(created, name)
						mu.Unlock()
					}
					return err
				}
			})
			if err != nil || !drop {
				return err
			}
			c, err := p.newClient()
			if err != nil {
				return err
			}
			defer c.Close()
			start := time.Now()
			for _, name := range created {
				if err := c.DropTable(cmd.Context(), name); err != nil {
					return err
				}
			}
			el := time.Since(start)
			fmt.Printf("ddl-drop ops/s=%.0f (%d drops accepted in %v)\n", float64(len(created))/el.Seconds(), len(created), el.Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().Uint32Var(&partitions, "partitions", 16, "HASH partitions per table")
	cmd.Flags().Uint32Var(&replicas, "replicas", 3, "replicas per shard")
	cmd.Flags().BoolVar(&drop, "drop", true, "drop the created tables afterwards")
	return cmd
}

func kvCmd(p *params) *cobra.Command {
	var table, op string
	cmd := &cobra.Command{
		Use: "kv", Short: "Row reads or writes through the data nodes (client KV), random int64 keys of one table", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if table == "" {
				return fmt.Errorf("--table is required")
			}
			if op != "put" && op != "get" {
				return fmt.Errorf("--op %q: want put or get", op)
			}
			value := make([]byte, p.valueSize)
			gen, err := tableKeys(cmd.Context(), p, table)
			if err != nil {
				return err
			}
			return bench(cmd.Context(), "kv-"+op, p, func(c *client.Client, worker, i int) func(context.Context) error {
				r := rand.New(rand.NewPCG(uint64(worker+1000), uint64(i%p.keys)))
				key := gen(r)
				kv := c.KV(table)
				if op == "get" {
					return func(ctx context.Context) error { _, _, err := kv.Get(ctx, key); return err }
				}
				return func(ctx context.Context) error { return kv.Put(ctx, key, value) }
			})
		},
	}
	cmd.Flags().StringVar(&table, "table", "", "table (its key columns get random values)")
	cmd.Flags().StringVar(&op, "op", "put", "put or get")
	cmd.Flags().IntVar(&p.valueSize, "value-size", 256, "value size in bytes (put)")
	cmd.Flags().IntVar(&p.keys, "keys", 10000, "distinct keys per worker")
	return cmd
}
