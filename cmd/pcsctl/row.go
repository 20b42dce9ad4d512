package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/catalog"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/keyenc"
)

// rowCmd reads and writes a table's rows on the data nodes, keys given as typed values of the
// key columns (comma-separated, in order).
func rowCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "row", Short: "Read and write a table's rows on the data nodes (keys as values of the key columns)"}
	// fullKey encodes a value for every key column of the table.
	fullKey := func(ctx context.Context, c *client.Client, table, values string) ([]byte, error) {
		tr, err := c.GetTable(ctx, table)
		if err != nil {
			return nil, err
		}
		if n, want := len(strings.Split(values, ",")), len(tr.Table.Columns); n != want {
			return nil, fmt.Errorf("%d values for the %d key columns of %s", n, want, table)
		}
		return encodeKey(tr.Table, values)
	}
	// each opens a client, encodes the row's key and runs f.
	each := func(f func(ctx context.Context, out io.Writer, kv *client.TableKV, key []byte, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			key, err := fullKey(ctx, c, args[0], args[1])
			if err != nil {
				return err
			}
			return f(ctx, cmd.OutOrStdout(), c.KV(args[0]), key, args)
		}
	}
	put := &cobra.Command{
		Use: "put TABLE KEY VALUE", Short: "Write a row (KEY: a value per key column, comma-separated)", Args: cobra.ExactArgs(3),
		RunE: each(func(ctx context.Context, out io.Writer, kv *client.TableKV, key []byte, args []string) error {
			if err := kv.Put(ctx, key, []byte(args[2])); err != nil {
				return err
			}
			fmt.Fprintln(out, "OK")
			return nil
		}),
	}
	var consistency, readFrom string
	var maxStale time.Duration
	get := &cobra.Command{
		Use: "get TABLE KEY", Short: "Read a row (exit 1 if there is none)", Args: cobra.ExactArgs(2),
		Example: `  pcsctl row get orders 42
  pcsctl row get orders 42 --consistency follower --read-from z1
  pcsctl row get orders 42 --consistency stale --max-staleness 5s`,
		RunE: each(func(ctx context.Context, out io.Writer, kv *client.TableKV, key []byte, args []string) error {
			var stale time.Duration
			opts := []client.OpOption{client.WithStaleness(&stale), client.WithReadFrom(readFrom)}
			switch consistency {
			case "primary":
			case "follower":
				opts = append(opts, client.WithFollowerRead())
			case "stale":
				opts = append(opts, client.WithStaleRead(maxStale))
			default:
				return fmt.Errorf("--consistency %q: primary, follower or stale", consistency)
			}
			v, found, err := kv.Get(ctx, key, opts...)
			if err != nil {
				return err
			}
			if !found {
				return fmt.Errorf("row (%s) of %s: %w", args[1], args[0], client.ErrNotFound)
			}
			return g.print(out, table{header: []string{"KEY", "VALUE", "STALENESS"}, rows: [][]string{{args[1], text(v), stale.String()}},
				value: map[string]string{"key": args[1], "value": string(v), "staleness": stale.String()}})
		}),
	}
	get.Flags().StringVar(&consistency, "consistency", "primary", "who serves the read: primary; follower (any replica, linearizable); stale (any replica, at most --max-staleness old)")
	get.Flags().DurationVar(&maxStale, "max-staleness", 5*time.Second, "with --consistency stale: the oldest state the read may see")
	get.Flags().StringVar(&readFrom, "read-from", "", "with follower or stale: prefer a replica on a node of this zone label")
	del := &cobra.Command{
		Use: "del TABLE KEY", Short: "Delete a row", Args: cobra.ExactArgs(2),
		RunE: each(func(ctx context.Context, out io.Writer, kv *client.TableKV, key []byte, _ []string) error {
			if err := kv.Delete(ctx, key); err != nil {
				return err
			}
			fmt.Fprintln(out, "OK")
			return nil
		}),
	}
	var from, to string
	var limit int
	scan := &cobra.Command{
		Use: "scan TABLE [--from KEY] [--to KEY] [--limit N]", Short: "List rows in key order (--from inclusive, --to exclusive; leading key columns suffice)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit <= 0 {
				return fmt.Errorf("--limit %d: want a positive count", limit)
			}
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			tr, err := c.GetTable(ctx, args[0])
			if err != nil {
				return err
			}
			schema, err := catalog.CompileSchema(tr.Table.Columns)
			if err != nil {
				return err
			}
			var start, end []byte
			if from != "" {
				if start, err = encodeKey(tr.Table, from); err != nil {
					return fmt.Errorf("--from: %w", err)
				}
			}
			if to != "" {
				if end, err = encodeKey(tr.Table, to); err != nil {
					return fmt.Errorf("--to: %w", err)
				}
			}
			pairs, err := c.KV(args[0]).Scan(ctx, start, end, limit)
			if err != nil {
				return err
			}
			type row struct {
				Key   string `json:"key"`
				Value string `json:"value"`
			}
			t := table{header: []string{"KEY", "VALUE"}}
			rows := []row{}
			for _, p := range pairs {
				k := fmt.Sprintf("%x", p.Key)
				if vals, err := keyenc.Decode(p.Key, schema.Cols); err == nil {
					k = formatValues(schema.Cols, vals)
				}
				rows = append(rows, row{k, string(p.Value)})
				t.rows = append(t.rows, []string{k, text(p.Value)})
			}
			t.value = rows
			return g.print(cmd.OutOrStdout(), t)
		},
	}
	scan.Flags().StringVar(&from, "from", "", "first key (values of the leading key columns)")
	scan.Flags().StringVar(&to, "to", "", "end key, excluded")
	scan.Flags().IntVar(&limit, "limit", 100, "at most this many rows")
	cmd.AddCommand(put, get, del, scan)
	return cmd
}

// formatValues prints key column values comma-separated, as they are typed on the command line.
func formatValues(cols []keyenc.Column, vals []keyenc.Value) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		switch {
		case v.IsNull():
			parts[i] = "NULL"
			continue
		case v.IsMax():
			parts[i] = "MAXVALUE"
			continue
		}
		switch cols[i].Type {
		case keyenc.Int64:
			parts[i] = strconv.FormatInt(v.I, 10)
		case keyenc.Uint64:
			parts[i] = strconv.FormatUint(v.U, 10)
		case keyenc.Float64:
			parts[i] = strconv.FormatFloat(v.F, 'g', -1, 64)
		case keyenc.Bool:
			parts[i] = strconv.FormatBool(v.B)
		case keyenc.Timestamp:
			parts[i] = v.Time().Format(time.RFC3339Nano)
		case keyenc.Bytes:
			parts[i] = fmt.Sprintf("0x%x", v.S)
		default:
			parts[i] = v.S
		}
	}
	return strings.Join(parts, ",")
}
