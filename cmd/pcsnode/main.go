// Command pcsnode runs the reference data node: shard replicas in Pebble, a key-value service,
// and the node agent that registers with PCS, heartbeats and obeys its commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/postdb/pcs/version"

	"github.com/spf13/cobra"

	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/faults"
	"github.com/postdb/pcs/internal/kvnode"
	"github.com/postdb/pcs/internal/netaddr"
	"github.com/postdb/pcs/pcstls"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "pcsnode:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	var (
		dataDir, addr, httpAddr, labels, logLevel string
		advertise                                 string
		endpoints                                 []string
		interval, splitCheck                      time.Duration
		splitSize                                 uint64
		faultsAddr                                string
		tlsFiles                                  pcstls.Files
		allowedNodes, allowedClients              []string
		allowAnyOfCA                              bool
		capacity                                  uint64
		allowedAdmins                             []string
		pcsNames                                  []string
	)
	cmd := &cobra.Command{
		Use:           "pcsnode",
		Version:       version.Get().String(),
		Short:         "The reference data node of a PCS cluster",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := new(slog.LevelVar)
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
			}
			lbl := map[string]string{}
			if labels != "" {
				for _, kv := range strings.Split(labels, ",") {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" {
						return fmt.Errorf("--labels %q: want key=value,...", kv)
					}
					lbl[k] = v
				}
			}
			if interval <= 0 || splitCheck <= 0 || splitSize == 0 {
				return fmt.Errorf("--heartbeat-interval, --split-check-interval and --split-size must be positive")
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			tlsCfg, err := nodeTLS(tlsFiles, allowedNodes, allowedClients, allowedAdmins, allowAnyOfCA, log)
			if err != nil {
				return err
			}
			if tlsCfg != nil {
				tlsCfg.PCSNames = pcsNames
			} else {
				for _, a := range []string{addr, httpAddr, advertise} {
					if a != "" && !netaddr.Loopback(a) {
						log.Warn("serving plaintext on a non-loopback address: anyone who reaches it can read and write rows; start with --tls-ca, --tls-cert and --tls-key", "addr", a)
					}
				}
			}
			var syncStall func()
			if faultsAddr != "" {
				stalls := faults.NewStalls()
				stopFaults, err := faults.Serve(faultsAddr, nil, stalls)
				if err != nil {
					return fmt.Errorf("--debug-faults-addr: %w", err)
				}
				defer func() {
					sctx, cancel := context.WithTimeout(context.Background(), time.Second)
					defer cancel()
					_ = stopFaults(sctx)
				}()
				syncStall = stalls.Hook(faults.Pebble)
				log.Warn("fault hooks on: this node's disk syncs can be stalled from outside", "addr", faultsAddr)
			}
			s, err := kvnode.Start(kvnode.Config{SyncStall: syncStall, CapacityBytes: capacity, DataDir: dataDir, Addr: addr, AdvertiseAddr: advertise, Endpoints: endpoints, Labels: lbl,
				HeartbeatInterval: interval, SplitSize: splitSize, SplitCheckInterval: splitCheck, HTTPAddr: httpAddr, Logger: log, LogLevel: level, TLS: tlsCfg})
			if err != nil {
				return err
			}
			log.Info("serving", "addr", s.Addr(), "http_addr", s.HTTPAddr(), "data_dir", dataDir)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return s.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "pcsnode-data", "directory of the Pebble database")
	f.StringVar(&addr, "addr", "127.0.0.1:4379", "key-value service address; also the node's identity at PCS")
	f.StringVar(&advertise, "advertise-addr", "", "address PCS, clients and other nodes dial, if not --addr (NAT, containers, a 0.0.0.0 bind); the node's identity at PCS")
	f.StringVar(&httpAddr, "http-addr", "", "serve Prometheus /metrics on this address (empty: off)")
	f.StringSliceVar(&endpoints, "endpoints", []string{"127.0.0.1:3379"}, "PCS client addresses")
	f.StringVar(&labels, "labels", "", "node labels key=value,... (e.g. zone=z1,host=h1)")
	f.Uint64Var(&capacity, "capacity", 0, "bytes of storage this node offers (default: the size of the disk holding --data-dir)")
	f.DurationVar(&interval, "heartbeat-interval", 250*time.Millisecond, "heartbeat interval (well below PCS's --node-lease)")
	f.Uint64Var(&splitSize, "split-size", kvnode.DefaultSplitSize, "split a shard this node leads once it uses more bytes than this")
	f.DurationVar(&splitCheck, "split-check-interval", 10*time.Second, "how often shard sizes are checked against --split-size")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&tlsFiles.CA, "tls-ca", "", "CA bundle that signs every certificate of the cluster: mutual TLS with PCS, other nodes and clients (with --tls-cert and --tls-key)")
	f.StringVar(&tlsFiles.Cert, "tls-cert", "", "this node's certificate (server and client auth; names --addr's host); re-read when it changes")
	f.StringVar(&tlsFiles.Key, "tls-key", "", "this node's private key")
	f.StringSliceVar(&allowedNodes, "tls-allowed-nodes", nil, "identities (CN, DNS or IP SAN; globs) allowed to replicate to this node; both lists must name someone unless --tls-allow-any-of-ca")
	f.StringSliceVar(&allowedClients, "tls-allowed-clients", nil, "identities allowed to read and write rows")
	f.StringSliceVar(&allowedAdmins, "tls-allowed-admins", nil, "identities of PCS admins, allowed what clients are (optional)")
	f.StringSliceVar(&pcsNames, "tls-pcs-names", nil, "identities (globs) PCS members' certificates must name (default "+client.DefaultPCSNames+")")
	f.BoolVar(&allowAnyOfCA, "tls-allow-any-of-ca", false, "let every certificate the CA signed act as node and client where a --tls-allowed-* list is empty (a CA of one's own only)")
	f.StringVar(&faultsAddr, "debug-faults-addr", "", "serve the chaos suite's fault hooks (Pebble fsync stalls) here; only in builds with -tags chaos")
	return cmd
}

// nodeTLS builds the node's mutual TLS from the --tls-* flags; nil when they name no file.
func nodeTLS(files pcstls.Files, nodes, clients, admins []string, anyOfCA bool, log *slog.Logger) (*kvnode.TLS, error) {
	if err := files.Validate(); err != nil {
		return nil, fmt.Errorf("--tls-ca, --tls-cert, --tls-key: %w", err)
	}
	if !files.Enabled() {
		if len(nodes)+len(clients)+len(admins) > 0 || anyOfCA {
			return nil, errors.New("--tls-allowed-*: needs --tls-ca, --tls-cert and --tls-key")
		}
		return nil, nil
	}
	src, err := pcstls.NewSource(files, pcstls.WithReloadLog(log))
	if err != nil {
		return nil, err
	}
	t := &kvnode.TLS{Source: src, AllowAnyOfCA: anyOfCA}
	if t.AllowedNodes, err = pcstls.NewAllow("nodes", nodes); err != nil {
		return nil, fmt.Errorf("--tls-allowed-nodes: %w", err)
	}
	if t.AllowedClients, err = pcstls.NewAllow("clients", clients); err != nil {
		return nil, fmt.Errorf("--tls-allowed-clients: %w", err)
	}
	if len(admins) > 0 {
		if t.AllowedAdmins, err = pcstls.NewAllow("admins", admins); err != nil {
			return nil, fmt.Errorf("--tls-allowed-admins: %w", err)
		}
	}
	return t, t.Validate()
}
