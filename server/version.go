package server

import (
	"context"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/meta"
)

// commandVersion is the newest command format this node reports it reads.
func (s *Server) commandVersion() uint32 {
	if s.cfg.CommandVersion != 0 {
		return min(s.cfg.CommandVersion, meta.CommandVersion)
	}
	return meta.CommandVersion
}

// versionLoop raises the cluster version, on the primary, to the newest command format every
// member of the configuration reports it reads (etcd's cluster version): a feature that
// changes what entries say is used only once no member would apply them differently. A member
// that does not answer holds the version where it is.
func (s *Server) versionLoop(ctx context.Context) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if v := s.fsm.ClusterVersion(); v < s.commandVersion() {
			want := s.membersCommandVersion(ctx)
			s.membersVersion.Store(want)
			if want > v {
				if _, err := s.apply(ctx, &pcspb.Command{Op: &pcspb.Command_SetClusterVersion{SetClusterVersion: &pcspb.CmdSetClusterVersion{Version: want}}}); err != nil {
					s.log.Warn("raising the cluster version", "version", want, "err", err)
				} else {
					s.log.Info("cluster version raised", "version", want)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// membersCommandVersion is the lowest command version the members report (0 if one does not
// answer or has not recorded its address).
func (s *Server) membersCommandVersion(ctx context.Context) uint32 {
	statuses, servers, err := s.memberStatuses(ctx, time.Second)
	if err != nil {
		return 0
	}
	low := s.commandVersion()
	for _, srv := range servers {
		if string(srv.ID) == s.cfg.Name {
			continue
		}
		st := statuses[srv.ID]
		if st == nil {
			return 0
		}
		low = min(low, st.CommandVersion)
	}
	return low
}
