// Command pcssim runs scheduling scenarios on virtual time against PCS's real coordinator,
// checkers, schedulers and controller (internal/schedule/sim): a per-minute metric table, the
// operator trace (--trace) and the trace hash, then the assertions' results.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/internal/schedule/sim"
)

func main() {
	var seed uint64
	var trace string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "pcssim SCENARIO.txt",
		Short: "Run a scheduling scenario in the deterministic simulator",
		Long: `Runs a scenario file (see internal/schedule/sim/testdata) on virtual time with the real
coordinator. Prints a per-minute table (time, operators, snapshots, moves, reverted moves, min/max
replicas and primaries per up node), the trace hash (same seed, same hash) and each assertion.
Exit status 1 if an assertion fails.`,
		Args:          cobra.ExactArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			out := cmd.OutOrStdout()
			var table io.Writer = out
			if quiet {
				table = nil
			} else {
				fmt.Fprint(out, sim.TableHeader)
			}
			var tw io.Writer
			if trace != "" {
				tf, err := os.Create(trace)
				if err != nil {
					return err
				}
				defer tf.Close()
				tw = tf
			}
			start := time.Now()
			res, err := sim.Run(f, seed, table, tw)
			wall := time.Since(start)
			if res != nil {
				fmt.Fprintf(out, "simulated %s in %s wall (%.2fs wall per simulated hour); trace hash %016x\n",
					res.Simulated, wall.Round(time.Millisecond), wall.Seconds()/max(res.Simulated.Hours(), 1e-9), res.Hash)
				for k, v := range res.Metrics {
					fmt.Fprintf(out, "%s = %.4g\n", k, v)
				}
			}
			if errors.Is(err, sim.ErrAssert) {
				fmt.Fprintln(out, "FAIL:", err)
				os.Exit(1)
			}
			return err
		},
	}
	cmd.Flags().Uint64Var(&seed, "seed", 1, "random seed")
	cmd.Flags().StringVar(&trace, "trace", "", "write the operator trace to this file")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no per-minute table")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "pcssim:", err)
		os.Exit(2)
	}
}
