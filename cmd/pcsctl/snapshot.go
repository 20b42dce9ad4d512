package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/durable"
)

func snapshotCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Save the metadata state to a file (restore it with 'pcs restore')"}
	var endpoint string
	save := &cobra.Command{
		Use: "save FILE", Short: "Save a snapshot of the metadata state (the primary's, or --endpoint's) to FILE", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := g.open(cmd)
			if err != nil {
				return err
			}
			defer done()
			data, rev, err := c.SnapshotSave(ctx, endpoint)
			if err != nil {
				return err
			}
			if err := durable.WriteFile(args[0], data, 0o600); err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), table{rows: [][]string{{fmt.Sprintf("saved %d bytes at revision %d to %s", len(data), rev, args[0])}},
				value: map[string]any{"file": args[0], "bytes": len(data), "revision": rev}})
		},
	}
	save.Flags().StringVar(&endpoint, "endpoint", "", "save this node's state (may be stale) instead of the primary's")
	cmd.AddCommand(save)
	return cmd
}
