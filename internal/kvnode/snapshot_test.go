package kvnode

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// installs is how many snapshots a node has installed.
func installs(n *Node) uint64 { return uint64(testutil.ToFloat64(n.metrics.snapshotsReceived)) }

// snapshotPair serves a replica Node over real gRPC and returns a primary Node that reaches
// it, both on stores on disk holding shard sh.
func snapshotPair(t *testing.T, sh *pcspb.Shard) (primary, rnode *Node, replica *Store, kv pcspb.KVClient) {
	t.Helper()
	open := func() *Store {
		s, err := Open(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		if err := s.PutReplica(sh); err != nil {
			t.Fatal(err)
		}
		return s
	}
	pstore, replica := open(), open()
	rnode = NewNode(replica, func() uint64 { return 2 }, allGranted{}, nil, nil)
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(16 << 20))
	pcspb.RegisterKVServer(srv, rnode)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	kv = pcspb.NewKVClient(cc)
	primary = NewNode(pstore, func() uint64 { return 1 }, allGranted{},
		func(context.Context, uint64) (pcspb.KVClient, error) { return kv, nil }, nil)
	return primary, rnode, replica, kv
}

func fill(t *testing.T, s *Store, shard, lsn uint64, n, valueSize int, tag byte) {
	t.Helper()
	var puts []*pcspb.KVPair
	for i := 0; i < n; i++ {
		v := bytes.Repeat([]byte{tag}, valueSize)
		binary.BigEndian.PutUint32(v, uint32(i))
		puts = append(puts, &pcspb.KVPair{Key: binary.BigEndian.AppendUint64([]byte("k"), uint64(i)), Value: v})
		if len(puts) == 10_000 || i == n-1 {
			if err := s.Write(shard, Position{lsn, 1}, puts, nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			puts = nil
		}
	}
}

// TestLargeSnapshot: a shard far larger than one gRPC message (19 MiB, 120k keys) reaches a
// replica in chunks, replacing its data wholly; a snapshot whose stream breaks changes nothing.
func TestLargeSnapshot(t *testing.T) {
	sh := &pcspb.Shard{Id: 7, TableId: 1, Start: []byte("k"), End: []byte("l"), Epoch: &pcspb.ShardEpoch{ConfVer: 1, Version: 1},
		Term: 1, Primary: 1, Replicas: []uint64{1, 2}}
	primary, rnode, replica, kv := snapshotPair(t, sh)
	fill(t, primary.store, sh.Id, 9, 120_000, 160, 'p') // 120k keys, ≈ 19 MiB
	fill(t, replica, sh.Id, 3, 1000, 16, 'r')           // the replica's older data
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A stream that breaks after some chunks: the replica keeps its data and position.
	bctx, bcancel := context.WithCancel(ctx)
	stream, err := kv.InstallSnapshot(bctx)
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	err = primary.store.Chunks(sh.Id, SnapshotChunkBytes, func(pairs []*pcspb.KVPair) error {
		if sent == 3 {
			return context.Canceled
		}
		sent++
		return stream.Send(&pcspb.InstallSnapshotRequest{ShardId: sh.Id, Term: 1, Lsn: 9, Primary: 1, Pairs: pairs,
			Start: sh.Start, End: sh.End, Version: 1})
	}, nil)
	if err == nil {
		t.Fatal("the broken stream was not broken")
	}
	bcancel()
	waitFor(t, 10*time.Second, "the replica to drop the broken snapshot", func() bool {
		l := rnode.shardLock(sh.Id)
		if !l.TryLock() {
			return false
		}
		l.Unlock()
		return true
	})
	if got, _, _ := replica.Scan(sh.Id, nil, nil, 1_000_000); len(got) != 1000 || replica.LSN(sh.Id) != 3 {
		t.Fatalf("after a broken snapshot the replica has %d keys at position %d, want its 1000 at 3", len(got), replica.LSN(sh.Id))
	}

	// The whole snapshot.
	if err := primary.sendSnapshot(ctx, kv, sh, 9); err != nil {
		t.Fatal(err)
	}
	want, _, err := primary.store.Scan(sh.Id, nil, nil, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := replica.Scan(sh.Id, nil, nil, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || replica.LSN(sh.Id) != 9 {
		t.Fatalf("the replica has %d keys at position %d, want %d at 9", len(got), replica.LSN(sh.Id), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].Key, want[i].Key) || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Fatalf("row %d differs", i)
		}
	}
	// A chunk of another shard or position in the stream is refused, and changes nothing.
	stream, err = kv.InstallSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []*pcspb.InstallSnapshotRequest{
		{ShardId: sh.Id, Term: 1, Lsn: 10, Primary: 1, Pairs: []*pcspb.KVPair{{Key: []byte("k1"), Value: []byte("x")}}},
		{ShardId: sh.Id, Term: 1, Lsn: 11, Primary: 1, Pairs: []*pcspb.KVPair{{Key: []byte("k2"), Value: []byte("y")}}},
	} {
		if err := stream.Send(req); err != nil {
			break
		}
	}
	if _, err := stream.CloseAndRecv(); err == nil {
		t.Fatal("a stream mixing positions was accepted")
	}
	if replica.LSN(sh.Id) != 9 {
		t.Fatalf("a refused snapshot moved the replica to position %d", replica.LSN(sh.Id))
	}
}

// TestSnapshotOnlyWhenPositionsDiffer: a new primary sends no snapshot to a replica at its own
// Position, and one to a replica at the same log position written in another term (a
// position the old primary wrote that the new one never had).
func TestSnapshotOnlyWhenPositionsDiffer(t *testing.T) {
	sh := &pcspb.Shard{Id: 7, TableId: 1, Start: []byte("k"), End: []byte("l"), Epoch: &pcspb.ShardEpoch{ConfVer: 1, Version: 1},
		Term: 3, Primary: 1, Replicas: []uint64{1, 2}}
	primary, rnode, replica, _ := snapshotPair(t, sh)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	fill(t, primary.store, sh.Id, 5, 100, 16, 'a')
	fill(t, replica, sh.Id, 5, 100, 16, 'a')
	if err := primary.snapshotTo(ctx, 2, sh, 5, true); err != nil {
		t.Fatal(err)
	}
	if n := installs(rnode); n != 0 {
		t.Fatalf("a replica at the primary's position got %d snapshots", n)
	}
	if got, err := replica.Replica(sh.Id); !err || got.Term != 3 || got.Primary != 1 {
		t.Fatalf("the replica did not adopt the primary's term: %v", got)
	}

	// Same position 6, written in different terms: the replica's differs from the primary's.
	if err := primary.store.Write(sh.Id, Position{6, 3}, []*pcspb.KVPair{{Key: []byte("k-new"), Value: []byte("primary")}}, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := replica.Write(sh.Id, Position{6, 2}, []*pcspb.KVPair{{Key: []byte("k-old"), Value: []byte("deposed")}}, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := primary.snapshotTo(ctx, 2, sh, 6, true); err != nil {
		t.Fatal(err)
	}
	if n := installs(rnode); n != 1 {
		t.Fatalf("a replica at the same lsn of another term got %d snapshots, want 1", n)
	}
	if _, found, _ := replica.Get(sh.Id, []byte("k-old")); found {
		t.Fatal("the deposed primary's write survived the snapshot")
	}
	if v, _, _ := replica.Get(sh.Id, []byte("k-new")); string(v) != "primary" || replica.Position(sh.Id) != (Position{6, 3}) {
		t.Fatalf("after the snapshot: %q at %v", v, replica.Position(sh.Id))
	}
	// A primary of a lower term is refused, and changes nothing.
	old := proto.Clone(sh).(*pcspb.Shard)
	old.Term = 2
	if err := primary.snapshotTo(ctx, 2, old, 6, true); client.KVErrorOf(err).GetStaleTerm() == 0 {
		t.Fatalf("a primary of an old term: %v", err)
	}
}
