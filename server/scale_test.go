package server

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/internal/clock"
	"github.com/postdb/pcs/internal/cluster"
	"github.com/postdb/pcs/internal/meta"
	"github.com/postdb/pcs/internal/schedule/view"
)

// scaleServer returns a server holding only what a scheduling tick reads: a catalog of n shards
// (tables of 4,000 hash partitions, 3 replicas round the nodes) and a registry where each of
// nodes heartbeats, holds its replicas and reports every shard it is the primary of.
// PCS_SCALE_SHARDS sets n (e.g. 10000000).
func scaleServer(tb testing.TB, n, nodes int) *Server {
	tb.Helper()
	if v, err := strconv.Atoi(os.Getenv("PCS_SCALE_SHARDS")); err == nil && v > 0 {
		n = v
	}
	f := meta.New(meta.Options{})
	var index uint64
	apply := func(cmd *pcspb.Command) {
		tb.Helper()
		data, err := meta.EncodeCommand(cmd, 0)
		if err != nil {
			tb.Fatal(err)
		}
		index++
		if res := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(*meta.Result); res.Err != nil {
			tb.Fatal(res.Err)
		}
	}
	for i := range nodes {
		apply(&pcspb.Command{Op: &pcspb.Command_RegisterNode{RegisterNode: &pcspb.CmdRegisterNode{Node: &pcspb.DataNode{
			Address: fmt.Sprintf("10.0.0.%d:7000", i)}}}})
	}
	for i := 0; n > 0; i++ {
		t := &pcspb.Table{Name: fmt.Sprintf("t%04d", i), Replicas: 3,
			Columns:   []*pcspb.ColumnDef{{Name: "id", Type: "int64"}},
			Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"id"}, HashPartitions: uint32(min(n, 4000))}}
		spec, err := compileForCreate(t)
		if err != nil {
			tb.Fatal(err)
		}
		cmd := &pcspb.CmdCreateTable{Table: t}
		for j, l := range spec.Leaves() {
			r := []uint64{uint64(1 + j%nodes), uint64(1 + (j+1)%nodes), uint64(1 + (j+2)%nodes)}
			cmd.Shards = append(cmd.Shards, &pcspb.Shard{Start: l.Start, End: l.End, Primary: r[0], Replicas: r})
		}
		apply(&pcspb.Command{Op: &pcspb.Command_CreateTable{CreateTable: cmd}})
		n -= len(cmd.Shards)
	}
	clk := clock.NewReal()
	s := &Server{fsm: f, clk: clk, live: cluster.New(clk, cluster.Config{DisconnectAfter: time.Hour, DownAfter: time.Hour})}
	s.downAfter = time.Hour
	hbs := map[uint64]*pcspb.NodeHeartbeat{}
	for _, dn := range f.DataNodes() {
		hbs[dn.Id] = &pcspb.NodeHeartbeat{NodeId: dn.Id, Stats: &pcspb.NodeStats{}}
	}
	for _, t := range f.Tables() {
		for _, sh := range f.TableShards(t.Id) {
			pos := map[uint64]uint64{}
			for _, r := range sh.Replicas {
				hbs[r].HeldShards = append(hbs[r].HeldShards, sh.Id)
				pos[r] = 7
			}
			hbs[sh.Primary].ShardStats = append(hbs[sh.Primary].ShardStats, &pcspb.ShardStats{ShardId: sh.Id, Primary: true,
				Term: sh.Term, ConfVer: sh.Epoch.GetConfVer(), SizeBytes: 1 << 20, ReplicaPositions: pos, WritePerSec: float64(sh.Id % 7)})
		}
	}
	for _, hb := range hbs {
		s.live.Observe(hb)
	}
	return s
}

// BenchmarkScheduleView: building the scheduler's picture of 100k shards (PCS_SCALE_SHARDS sets
// another count), what every scheduling tick starts with. live-B/shard is the heap the view
// holds while the tick runs.
func BenchmarkScheduleView(b *testing.B) {
	s := scaleServer(b, 100_000, 12)
	var v *view.Cluster
	for b.Loop() {
		var err error
		if v, err = s.scheduleView(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	n := len(v.Shards)
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	runtime.KeepAlive(v)
	v = nil
	runtime.GC()
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(m0.HeapAlloc-m1.HeapAlloc)/float64(n), "live-B/shard")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/shard")
}

// TestHeatSampleStreams: the primary's sample, which reads the shards twice and keeps no list
// of them, compacts exactly as compactHeat does over the list of every shard.
func TestHeatSampleStreams(t *testing.T) {
	s := scaleServer(t, 20_000, 6)
	var items []heatBucket
	for _, tb := range s.fsm.Tables() {
		for _, sh := range s.fsm.TableShards(tb.Id) {
			ld := s.live.ShardLoad(sh.Id)
			items = append(items, heatBucket{table: tb.Id, start: sh.Start, partition: sh.Partition,
				v: [4]float32{float32(ld.Reads), float32(ld.Writes), float32(ld.ReadBytes), float32(ld.WriteBytes)}})
		}
	}
	slices.SortStableFunc(items, func(a, b heatBucket) int { return cmp.Compare(a.table, b.table) })
	want := compactHeat(items, heatmapBuckets)
	col, err := s.heatSample(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got := col.buckets
	if len(want) >= len(items) || len(got) != len(want) {
		t.Fatalf("%d buckets from %d shards; compactHeat gives %d", len(got), len(items), len(want))
	}
	for i := range want {
		if got[i].table != want[i].table || !bytes.Equal(got[i].start, want[i].start) || got[i].v != want[i].v {
			t.Fatalf("bucket %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestViewStopsWithContext: building the scheduling view or a heatmap sample of many shards
// stops when the term or the server ends, with the context's error and no partial result.
func TestViewStopsWithContext(t *testing.T) {
	s := scaleServer(t, 12_000, 6)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if v, err := s.scheduleView(ctx); !errors.Is(err, context.Canceled) || v != nil {
		t.Fatalf("view after cancel: %v shards, %v", v != nil, err)
	}
	if col, err := s.heatSample(ctx, time.Now()); !errors.Is(err, context.Canceled) || col.buckets != nil {
		t.Fatalf("heat sample after cancel: %d buckets, %v", len(col.buckets), err)
	}
	v, err := s.scheduleView(context.Background())
	if err != nil || len(v.Shards) != 12_000 {
		t.Fatalf("view: %v", err)
	}
}
