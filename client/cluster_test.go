package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/cluster"
	"github.com/postdb/pcs/internal/kvnode"
	"github.com/postdb/pcs/server"
)

// startCluster starts one PCS and three data nodes over loopback in dir, for the examples: it
// returns PCS's client endpoint and a function that stops everything.
func startCluster(dir string) (string, func(), error) {
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	listen := func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
	quiet := slog.New(slog.DiscardHandler)
	cfg := server.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.HTTPAddr, cfg.Logger = "p1", filepath.Join(dir, "pcs"), "", quiet
	cfg.Nodes = cluster.Config{DisconnectAfter: 300 * time.Millisecond, DownAfter: time.Second, Warmup: 300 * time.Millisecond}
	cfg.DDLInterval = 20 * time.Millisecond
	var err error
	if cfg.ClientListener, err = listen(); err != nil {
		return "", nil, err
	}
	if cfg.Raft.PeerListener, err = listen(); err != nil {
		return "", nil, err
	}
	pcs, err := server.New(cfg)
	if err != nil {
		return "", nil, err
	}
	pcs.Start()
	stops = append(stops, func() { pcs.Close() })
	for i := 0; i < 3; i++ {
		ln, err := listen()
		if err != nil {
			stop()
			return "", nil, err
		}
		n, err := kvnode.Start(kvnode.Config{DataDir: filepath.Join(dir, fmt.Sprint("n", i)), Listener: ln,
			Endpoints: []string{pcs.ClientAddr()}, Labels: map[string]string{"zone": fmt.Sprint("z", i)},
			HeartbeatInterval: 50 * time.Millisecond, Logger: quiet})
		if err != nil {
			stop()
			return "", nil, err
		}
		stops = append(stops, func() { n.Close() })
	}
	// Wait until the three nodes are up, as an operator would before creating tables.
	c, err := client.New([]string{pcs.ClientAddr()})
	if err != nil {
		stop()
		return "", nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for up := 0; up < 3; {
		resp, err := c.ListNodes(ctx)
		if ctx.Err() != nil {
			stop()
			return "", nil, fmt.Errorf("waiting for three data nodes: %w (%v)", ctx.Err(), err)
		}
		up = 0
		for _, n := range resp.GetNodes() {
			if n.State == "up" {
				up++
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return pcs.ClientAddr(), func() { stop(); os.RemoveAll(dir) }, nil
}
