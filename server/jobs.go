package server

import (
	"context"
	"fmt"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/ddl"
	"github.com/postdb/pcs/internal/meta"
)

// jobOf describes a table's DDL job, or returns nil if it has none.
func (s *Server) jobOf(t *pcspb.Table) *pcspb.Job {
	j := &pcspb.Job{TableId: t.Id, Table: t.Name}
	count := func(want bool) {
		for _, sh := range s.fsm.TableShards(t.Id) {
			for _, n := range sh.Replicas {
				j.Total++
				if s.live.Holds(n, sh.Id) == want {
					j.Done++
				}
			}
		}
	}
	switch {
	case t.State == pcspb.TableState_TABLE_STATE_CREATING:
		j.Kind, j.Step = "create", "creating replicas"
		count(true)
	case t.State == pcspb.TableState_TABLE_STATE_DROPPING:
		j.Kind, j.Step = "drop", "dropping replicas"
		count(false)
	case t.PartitionJob != nil:
		pj := t.PartitionJob
		j.Kind, j.Partition = pj.Kind, pj.Partition
		_, c := ddl.PartitionJobProgress(fsmCatalog{s.fsm}, s.live, t)
		j.Done, j.Total = c[0], c[1]
		j.Step = fmt.Sprintf("%s %q: %d new shards to create on their replicas, %d removed shards to drop on every node", pj.Kind, pj.Partition, len(pj.Creating), len(pj.Dropping))
	case t.SchemaVersion != t.MinLiveVersion || len(t.PendingSteps) > 0:
		j.Kind = "alter"
		j.Step = fmt.Sprintf("loading version %d (%d steps pending)", t.SchemaVersion, len(t.PendingSteps))
		for _, n := range s.live.UpNodes() {
			j.Total++
			if s.live.LoadedVersion(n, t.Id) >= t.SchemaVersion {
				j.Done++
			}
		}
	default:
		// SET REPLICAS under way: shards whose replica count is not the table's yet.
		for _, sh := range s.fsm.TableShards(t.Id) {
			j.Total++
			if len(sh.Replicas) == int(t.Replicas) && len(sh.Learners) == 0 {
				j.Done++
			}
		}
		if j.Done == j.Total {
			return nil
		}
		j.Kind, j.Step = "replicas", fmt.Sprintf("shards at the table's %d replicas", t.Replicas)
	}
	return j
}

func (v *service) ListJobs(ctx context.Context, req *pcspb.ListJobsRequest) (*pcspb.ListJobsResponse, error) {
	cli, err := v.s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.ListJobs(ctx, req) // progress is the primary's live view
	}
	resp := &pcspb.ListJobsResponse{}
	for _, t := range v.s.fsm.Tables() {
		if j := v.s.jobOf(t); j != nil {
			resp.Jobs = append(resp.Jobs, j)
		}
	}
	return resp, nil
}

func (v *service) CancelJob(ctx context.Context, req *pcspb.CancelJobRequest) (*pcspb.CancelJobResponse, error) {
	cli, err := v.s.route(ctx, false)
	if err != nil {
		return nil, toStatus(err)
	}
	if cli != nil {
		return cli.CancelJob(ctx, req)
	}
	t, _, err := v.s.fsm.Table(req.Table)
	if err != nil {
		return nil, toStatus(err)
	}
	var cmd *pcspb.Command
	switch j := v.s.jobOf(t); {
	case j == nil:
		return nil, toStatus(fmt.Errorf("%w: table %q has no job", meta.ErrTableNotFound, req.Table))
	case j.Kind == "create":
		cmd = &pcspb.Command{Op: &pcspb.Command_SetTableState{SetTableState: &pcspb.CmdSetTableState{TableId: t.Id, State: pcspb.TableState_TABLE_STATE_DROPPING}}}
	case j.Kind == "alter":
		cmd = &pcspb.Command{Op: &pcspb.Command_CancelAlter{CancelAlter: &pcspb.CmdCancelAlter{TableId: t.Id}}}
	default:
		return nil, toStatus(fmt.Errorf("%w: a %s cannot be cancelled", ErrInvalid, j.Kind))
	}
	if _, err := v.s.applyRequest(ctx, cmd); err != nil {
		return nil, toStatus(err)
	}
	return &pcspb.CancelJobResponse{}, nil
}
