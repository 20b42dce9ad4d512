package server

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/nodeconf"
)

// nodeConfigKey holds the node settings PCS carries to the data nodes (nodeconf.Desired, JSON).
var nodeConfigKey = []byte("\x00pcs/node/config")

// parsedNodeConfig is the desired node settings as parsed at one revision of their key.
type parsedNodeConfig struct {
	rev uint64
	d   nodeconf.Desired
}

// nodeConfig returns the desired node settings (none if unset or unreadable: logged). Every
// heartbeat asks, so the parse is kept until the key changes.
func (s *Server) nodeConfig() nodeconf.Desired {
	kv, _ := s.fsm.Get(nodeConfigKey)
	rev := kv.GetModRevision()
	if c := s.nodeConf.Load(); c != nil && c.rev == rev {
		return c.d
	}
	d, err := nodeconf.Parse(kv.GetValue())
	if err != nil {
		s.log.Warn("node settings unreadable; none sent", "err", err)
	}
	s.nodeConf.Store(&parsedNodeConfig{rev: rev, d: d})
	return d
}

// configCommand returns the command that brings a node's settings to what PCS asks, if they
// differ from those it reports in force.
func (s *Server) configCommand(node uint64, stats *pcspb.NodeStats) *pcspb.NodeCommand {
	p := nodeconf.Pending(s.nodeConfig().For(node), stats.GetConfig())
	if p == nil {
		return nil
	}
	return &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_SetConfig{SetConfig: &pcspb.NodeConfigCommand{Settings: p}}}
}

// SetNodeConfig sets a node setting through Raft; heartbeat answers carry it to the nodes
// (also to those that register later, or were down) until each reports it in force.
func (v *service) SetNodeConfig(ctx context.Context, req *pcspb.SetNodeConfigRequest) (*pcspb.NodeConfigResponse, error) {
	value, err := nodeconf.Canonical(req.Key, req.Value)
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: %w", ErrInvalid, err))
	}
	cli, err := v.s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.SetNodeConfig(ctx, req)
	}
	if err := v.s.knownNodes(req.Nodes); err != nil {
		return nil, toStatus(err)
	}
	err = v.s.updateSystemKey(ctx, nodeConfigKey, v.s.apply, func(kv *pcspb.KeyValue) ([]byte, error) {
		d, err := nodeconf.Parse(kv.GetValue())
		if err != nil {
			d = nodeconf.Desired{} // unreadable: replaced
		}
		d.Set(req.Nodes, req.Key, value)
		return d.Marshal()
	})
	if err != nil {
		return nil, toStatus(err)
	}
	v.s.log.Info("node setting changed", "nodes", req.Nodes, "key", req.Key, "value", value)
	return v.s.nodeConfigResponse(req.Nodes), nil
}

// GetNodeConfig reports, per node, the settings PCS asks and those the node reports in force
// (the primary's view: it hears the heartbeats).
func (v *service) GetNodeConfig(ctx context.Context, req *pcspb.GetNodeConfigRequest) (*pcspb.NodeConfigResponse, error) {
	cli, err := v.s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.GetNodeConfig(ctx, req)
	}
	if err := v.s.knownNodes(req.Nodes); err != nil {
		return nil, toStatus(err)
	}
	return v.s.nodeConfigResponse(req.Nodes), nil
}

// knownNodes fails for an id that is not a registered node.
func (s *Server) knownNodes(ids []uint64) error {
	for _, id := range ids {
		if _, err := s.dataNode(id); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) nodeConfigResponse(ids []uint64) *pcspb.NodeConfigResponse {
	d := s.nodeConfig()
	resp := &pcspb.NodeConfigResponse{}
	for _, n := range s.fsm.DataNodes() {
		if n.Tombstone || len(ids) > 0 && !slices.Contains(ids, n.Id) {
			continue
		}
		info := &pcspb.NodeConfigInfo{NodeId: n.Id, Desired: d.For(n.Id), State: s.nodeState(n)}
		if st := s.live.NodeStats(n.Id); st != nil {
			info.Applied = st.Config
		}
		resp.Nodes = append(resp.Nodes, info)
	}
	slices.SortFunc(resp.Nodes, func(a, b *pcspb.NodeConfigInfo) int { return cmpU64(a.NodeId, b.NodeId) })
	return resp
}

// tracingLoop applies the tracing settings for all nodes (trace-ratio, trace-exporter) to this
// member too, as they change: every member reads them from its own state.
func (s *Server) tracingLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var ratio, target string
	for {
		all := s.nodeConfig().All
		if r := all[nodeconf.TraceRatio]; r != ratio {
			v, _ := strconv.ParseFloat(r, 64) // "" (unset): 0, off
			s.cfg.Tracing.SetRatio(v)
			ratio = r
			s.log.Info("tracing ratio set", "ratio", v)
		}
		if e := all[nodeconf.TraceExporter]; e != target {
			if err := s.cfg.Tracing.SetExporter(ctx, e); err != nil {
				s.log.Warn("tracing exporter", "target", e, "err", err)
			} else {
				s.log.Info("tracing exporter set", "target", e)
			}
			target = e
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
