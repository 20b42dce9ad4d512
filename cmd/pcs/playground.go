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
	"github.com/postdb/pcs/pcstls"
	"github.com/postdb/pcs/server"
)

// playgroundCmd starts a whole local cluster in this process: three PCS nodes and three
// pcsnode data nodes (zones z0, z1, z2), creates nothing, and stops everything on Ctrl-C.
func playgroundCmd() *cobra.Command {
	var dir, logLevel string
	var basePort int
	var withTLS bool
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
			var pki *playgroundPKI
			if withTLS {
				var err error
				if pki, err = newPlaygroundPKI(filepath.Join(dir, "tls")); err != nil {
					return err
				}
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
				if pki != nil {
					var err error
					if cfg.TLS, err = pki.pcs(p.Name); err != nil {
						return err
					}
				}
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
				var nodeTLS *kvnode.TLS
				if pki != nil {
					var err error
					if nodeTLS, err = pki.node(fmt.Sprintf("node-%d", i+1)); err != nil {
						return err
					}
				}
				// Each node has a level of its own, which PCS may change (pcsctl node config).
				nodeLevel := new(slog.LevelVar)
				nodeLevel.Set(level.Level())
				n, err := kvnode.Start(kvnode.Config{DataDir: filepath.Join(dir, fmt.Sprintf("node-%d", i+1)), Addr: addr(100 + i),
					Endpoints: endpoints, Labels: map[string]string{"zone": fmt.Sprintf("z%d", i), "host": fmt.Sprintf("h%d", i)},
					HTTPAddr: addr(110 + i), Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: nodeLevel})),
					LogLevel: nodeLevel, TLS: nodeTLS})
				if err != nil {
					return err
				}
				nodes = append(nodes, n)
			}
			eps := strings.Join(endpoints, ",")
			url := func(a string) string { return "http://" + a }
			if pki != nil {
				url = func(a string) string { return "https://" + a }
				fmt.Printf(`Mutual TLS is on: every port wants a certificate of the CA in %s.
The admin certificate (for pcsctl; applications use client.crt, which may not administer):
  export PCS_TLS_CA=%s PCS_TLS_CERT=%s PCS_TLS_KEY=%s
  curl --cacert $PCS_TLS_CA --cert $PCS_TLS_CERT --key $PCS_TLS_KEY https://%s/status

`, pki.dir, pki.admin.CA, pki.admin.Cert, pki.admin.Key, addr(2))
			}
			fmt.Printf(`PCS playground (data in %s)
  PCS endpoints:  %s
  console:        %s/console/   (every member serves it)
  HTTP:           %s/status  %s/metrics
  data nodes:     %s, %s, %s (zones z0, z1, z2)
  node metrics:   %s/metrics  %s/metrics  %s/metrics

Try:
  go run ./cmd/pcsctl --endpoints %s status
  go run ./cmd/pcsctl --endpoints %s node list
  go run ./cmd/pcsctl --endpoints %s table create orders --columns id:int64 --hash-columns id --hash-partitions 8 --replicas 3 --isolation-label zone
  go run ./cmd/pcsctl --endpoints %s shard list orders
  go run ./cmd/pcsctl --endpoints %s shard split SHARD_ID
  go run ./cmd/pcsctl --endpoints %s tso
Ctrl-C stops everything.
`, dir, eps, url(addr(2)), url(addr(2)), url(addr(2)), nodes[0].Addr(), nodes[1].Addr(), nodes[2].Addr(),
				url(nodes[0].HTTPAddr()), url(nodes[1].HTTPAddr()), url(nodes[2].HTTPAddr()), eps, eps, eps, eps, eps, eps)
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
	cmd.Flags().BoolVar(&withTLS, "tls", false, "mutual TLS on every link: a CA and certificates (pcs-N, node-N, client, admin) are made in DIR/tls")
	return cmd
}

// playgroundPKI is the playground's test CA and the certificates it issued: pcs-N for the PCS
// members, node-N for the data nodes, client for applications and admin for pcsctl; each kind
// is allowed only its role.
type playgroundPKI struct {
	dir   string
	ca    *pcstls.CA
	admin pcstls.Files
}

func newPlaygroundPKI(dir string) (*playgroundPKI, error) {
	ca, err := pcstls.NewCA("pcs playground CA", 30*24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := ca.WriteCA(dir); err != nil {
		return nil, err
	}
	p := &playgroundPKI{dir: dir, ca: ca}
	if _, err = p.issue("client"); err != nil {
		return nil, err
	}
	if p.admin, err = p.issue("admin"); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *playgroundPKI) issue(name string) (pcstls.Files, error) {
	is, err := p.ca.Issue(name, []string{"127.0.0.1", "localhost", "::1"}, 30*24*time.Hour)
	if err != nil {
		return pcstls.Files{}, err
	}
	return is.Write(p.dir, name)
}

func (p *playgroundPKI) source(name string) (*pcstls.Source, error) {
	f, err := p.issue(name)
	if err != nil {
		return nil, err
	}
	return pcstls.NewSource(f)
}

func (p *playgroundPKI) allow(kind, pattern string) *pcstls.Allow {
	return &pcstls.Allow{Kind: kind, Patterns: []string{pattern}}
}

func (p *playgroundPKI) pcs(name string) (*server.TLSConfig, error) {
	src, err := p.source(name)
	if err != nil {
		return nil, err
	}
	return &server.TLSConfig{Source: src, AllowedPeers: p.allow("peers", "pcs-*"),
		AllowedNodes: p.allow("nodes", "node-*"), AllowedClients: p.allow("clients", "client"), AllowedAdmins: p.allow("admins", "admin")}, nil
}

func (p *playgroundPKI) node(name string) (*kvnode.TLS, error) {
	src, err := p.source(name)
	if err != nil {
		return nil, err
	}
	return &kvnode.TLS{Source: src, AllowedNodes: p.allow("nodes", "node-*"), AllowedClients: p.allow("clients", "client"),
		AllowedAdmins: p.allow("admins", "admin")}, nil
}
