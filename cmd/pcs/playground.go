package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/internal/kvnode"
	"github.com/postdb/pcs/server"
)

// playgroundCmd starts a whole local cluster in this process: three PCS nodes and three
// pcsnode data nodes (zones z0, z1, z2), creates nothing, and stops everything on Ctrl-C.
func playgroundCmd() *cobra.Command {
	var dir, logLevel string
	var basePort int
	cmd := &cobra.Command{
		Use:   "playground",
		Short: "Run a local cluster for trying things: 3 PCS + 3 data nodes in one process",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := new(slog.LevelVar)
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if dir == "" {
				d, err := os.MkdirTemp("", "pcs-playground-")
				if err != nil {
					return err
				}
				dir = d
				defer os.RemoveAll(d)
			}
			addr := func(off int) string { return fmt.Sprintf("127.0.0.1:%d", basePort+off) }
			var peers []server.Peer
			for i := 0; i < 3; i++ {
				peers = append(peers, server.Peer{Name: fmt.Sprintf("pcs-%d", i+1), PeerAddr: addr(10*i + 1)})
			}
			var servers []*server.Server
			defer func() {
				for _, s := range servers {
					s.Close()
				}
			}()
			var endpoints []string
			for i, p := range peers {
				cfg := server.DefaultConfig()
				cfg.Name, cfg.DataDir = p.Name, filepath.Join(dir, p.Name)
				cfg.ClientAddr, cfg.Raft.PeerAddr, cfg.HTTPAddr = addr(10*i), p.PeerAddr, addr(10*i+2)
				cfg.InitialCluster = peers
				cfg.Nodes.Warmup = 2 * time.Second
				cfg.Logger, cfg.LogLevel = log, level
				s, err := server.New(cfg)
				if err != nil {
					return err
				}
				s.Start()
				servers = append(servers, s)
				endpoints = append(endpoints, s.ClientAddr())
			}
			var nodes []*kvnode.Server
			defer func() {
				for _, n := range nodes {
					n.Close()
				}
			}()
			for i := 0; i < 3; i++ {
				n, err := kvnode.Start(kvnode.Config{DataDir: filepath.Join(dir, fmt.Sprintf("node-%d", i+1)), Addr: addr(100 + i),
					Endpoints: endpoints, Labels: map[string]string{"zone": fmt.Sprintf("z%d", i), "host": fmt.Sprintf("h%d", i)},
					HTTPAddr: addr(110 + i), Logger: log})
				if err != nil {
					return err
				}
				nodes = append(nodes, n)
			}
			eps := strings.Join(endpoints, ",")
			fmt.Printf(`PCS playground (data in %s)
  PCS endpoints:  %s
  HTTP:           http://%s/status  http://%s/metrics
  data nodes:     %s, %s, %s (zones z0, z1, z2)
  node metrics:   http://%s/metrics  http://%s/metrics  http://%s/metrics

Try:
  go run ./cmd/pcsctl --endpoints %s status
  go run ./cmd/pcsctl --endpoints %s node list
  go run ./cmd/pcsctl --endpoints %s table create orders --columns id:int64 --hash-columns id --hash-partitions 8 --replicas 3 --isolation-label zone
  go run ./cmd/pcsctl --endpoints %s shard list orders
  go run ./cmd/pcsctl --endpoints %s shard split SHARD_ID
  go run ./cmd/pcsctl --endpoints %s tso
Ctrl-C stops everything.
`, dir, eps, addr(2), addr(2), nodes[0].Addr(), nodes[1].Addr(), nodes[2].Addr(),
				nodes[0].HTTPAddr(), nodes[1].HTTPAddr(), nodes[2].HTTPAddr(), eps, eps, eps, eps, eps, eps)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			fmt.Println("stopping")
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "data directory (default: a temporary one, removed on exit)")
	cmd.Flags().IntVar(&basePort, "base-port", 13000, "PCS i uses base+10i (gRPC), +1 (Raft), +2 (HTTP); data node j uses base+100+j (KV) and base+110+j (metrics)")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	return cmd
}
