package kvnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/nodeagent"
)

// Config configures a running data node.
type Config struct {
	// DataDir holds the Pebble database.
	DataDir string
	// Addr is the KV service's listen address; it is also the node's identity at PCS.
	Addr string
	// Listener, if set, is used instead of binding Addr.
	Listener net.Listener
	// Endpoints are PCS client addresses.
	Endpoints []string
	Labels    map[string]string
	// HeartbeatInterval, default 1s.
	HeartbeatInterval time.Duration
	Logger            *slog.Logger
}

// Server is a running data node: store, KV service and agent.
type Server struct {
	Store *Store
	Node  *Node
	Agent *nodeagent.Agent
	grpc  *grpc.Server
	ln    net.Listener
	pcs   *client.Client // reaches PCS, and the other data nodes for replication
	wg    sync.WaitGroup
	stop  context.CancelFunc

	closeOnce sync.Once
	closeErr  error
}

// Start opens the store, serves the KV service and starts the agent.
func Start(cfg Config) (*Server, error) {
	if cfg.DataDir == "" || len(cfg.Endpoints) == 0 {
		return nil, errors.New("kvnode: data dir and PCS endpoints are required")
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, fmt.Errorf("kvnode: listening on %s: %w", cfg.Addr, err)
		}
	}
	store, err := Open(cfg.DataDir, cfg.Logger)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s := &Server{Store: store, ln: ln}
	pcs, err := client.New(cfg.Endpoints)
	if err != nil {
		store.Close()
		ln.Close()
		return nil, err
	}
	s.pcs = pcs
	var agent *nodeagent.Agent
	s.Node = NewNode(store, func() uint64 { return agent.NodeID() }, func() bool { return agent.LeaseValid() }, pcs.NodeKV)
	agent, err = nodeagent.New(nodeagent.Config{Endpoints: cfg.Endpoints, Address: ln.Addr().String(), Labels: cfg.Labels,
		Interval: cfg.HeartbeatInterval, Logger: cfg.Logger}, s.Node)
	if err != nil {
		store.Close()
		ln.Close()
		return nil, err
	}
	s.Agent = agent
	s.grpc = grpc.NewServer(grpc.MaxRecvMsgSize(16 << 20))
	pcspb.RegisterKVServer(s.grpc, s.Node)
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.grpc.Serve(ln) }()
	go func() { defer s.wg.Done(); agent.Run(ctx) }()
	return s, nil
}

// Addr is the KV service's address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the agent and the service and closes the store. It is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Server) close() error {
	s.stop()
	// Wait for the requests in flight (and their replication) before the store closes.
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		s.grpc.Stop()
		<-stopped
	}
	s.wg.Wait()
	s.pcs.Close()
	return s.Store.Close()
}
