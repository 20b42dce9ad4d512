package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/client"
)

type contextT = context.Context

// eachEndpoint runs f at every endpoint and prints one row per endpoint; it fails if any did.
func eachEndpoint(g *globals, cmd *cobra.Command, f func(*client.Client, context.Context, string) (string, error)) error {
	c, err := g.newClient(client.WithMaxAttempts(1))
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := g.ctx(cmd)
	defer cancel()
	t := table{header: []string{"ENDPOINT", "LEVEL"}}
	out := map[string]string{}
	var errs []error
	for _, ep := range g.endpoints {
		level, err := f(c, ctx, ep)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ep, err))
			level = "error: " + oneLine(err)
		}
		out[ep] = level
		t.rows = append(t.rows, []string{ep, level})
	}
	t.value = out
	if err := g.print(cmd.OutOrStdout(), t); err != nil {
		return err
	}
	return errors.Join(errs...)
}
