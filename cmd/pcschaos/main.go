// Command pcschaos runs PCS and its data nodes on network-namespace hosts through a schedule of
// faults (partitions, pauses, kills, clock jumps, disk stalls) while workloads run, and checks
// the histories. It needs root (namespaces, iptables) and binaries built with -tags chaos,
// which it builds itself from the module it is run in unless --bin-dir is given.
//
//	pcschaos run --schedule ci --seed 1
//	pcschaos run --schedule soak --duration 30m
//	pcschaos run --faults isolate-primary,clock-back
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/internal/chaos"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "pcschaos:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "pcschaos",
		Short:         "Fault suite: PCS on separate hosts under partitions, pauses, kills, clock jumps and disk stalls",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), listCmd(), cleanupCmd())
	return root
}

func runCmd() *cobra.Command {
	var (
		cfg    chaos.Config
		faults string
		binDir string
		keep   bool
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a schedule of faults under every workload and check the histories",
		Long: `run makes 6 hosts (3 pcs, 3 pcsnode), starts the cluster, runs the workloads (system KV
registers with compare-and-swap, TSO, ids, rows on the data nodes) and puts it through the
schedule's faults, each held --hold then healed, --quiet apart. It then checks: linearizability
(porcupine), writes applied at most once and acknowledged ones exactly once (the watch from
revision 1), TSO strictly increasing in real-time order, ids never twice, the catalog's shards
tiling the key space, every member at the same revision and digest. It prints a table of
unavailability per fault and workload and a one-line verdict; exit 1 on FAIL. On failure the
histories, porcupine visualisations and the processes' logs stay in --out.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if faults != "" {
				cfg.Faults = strings.Split(faults, ",")
			}
			if cfg.Out == "" {
				dir, err := os.MkdirTemp("", "pcschaos-")
				if err != nil {
					return err
				}
				cfg.Out = dir
			}
			if binDir == "" {
				binDir = filepath.Join(cfg.Out, "bin")
				fmt.Fprintln(cmd.ErrOrStderr(), "building pcs and pcsnode with -tags chaos ...")
				bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
				b, err := chaos.BuildBinaries(bctx, ".", binDir)
				cancel()
				if err != nil {
					return err
				}
				cfg.Bin = b
			} else {
				cfg.Bin = chaos.Binaries{PCS: filepath.Join(binDir, "pcs"), Node: filepath.Join(binDir, "pcsnode")}
			}
			cfg.Log = cmd.ErrOrStderr()
			rep, err := chaos.Run(ctx, cfg)
			if err != nil {
				return err
			}
			rep.Print(cmd.OutOrStdout())
			if !rep.Passed() {
				fmt.Fprintln(cmd.ErrOrStderr(), "histories and logs in", cfg.Out)
				os.Exit(1)
			}
			if !keep {
				os.RemoveAll(cfg.Out)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Schedule, "schedule", "ci", "named schedule: "+chaos.ScheduleNames())
	f.StringVar(&faults, "faults", "", "comma-separated faults to run instead of a schedule (see 'pcschaos list')")
	f.DurationVar(&cfg.Duration, "duration", 0, "stop starting faults after this long (soak: run this long; 0: the schedule's length)")
	f.Uint64Var(&cfg.Seed, "seed", 1, "seed of the workloads and of the faults' random choices")
	f.DurationVar(&cfg.Hold, "hold", 4*time.Second, "how long each fault lasts")
	f.DurationVar(&cfg.Quiet, "quiet", 3*time.Second, "time without faults between two")
	f.StringVar(&cfg.Out, "out", "", "directory for data, logs and histories (default: a new temporary one, removed on PASS)")
	f.StringVar(&binDir, "bin-dir", "", "directory with pcs and pcsnode built with -tags chaos (default: build them)")
	f.BoolVar(&keep, "keep", false, "keep --out after a PASS")
	return cmd
}

func listCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the faults and schedules",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "faults:", strings.Join(chaos.FaultNames(), ", "))
			for _, name := range strings.Split(chaos.ScheduleNames(), ", ") {
				fmt.Fprintf(cmd.OutOrStdout(), "schedule %s: %s\n", name, strings.Join(chaos.Schedules[name], ","))
			}
		},
	}
}

func cleanupCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup",
		Short: "Remove hosts (namespaces, bridges) left by runs that no longer run",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { chaos.CleanStale(cmd.Context()) },
	}
}
