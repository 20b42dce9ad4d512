package kvnode

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// withRequest is ctx as a data node receives a row write carrying request id (client, seq).
func withRequest(client, seq, ackedBelow uint64, retry bool) context.Context {
	out := pcspb.WithRequestID(context.Background(), &pcspb.RequestID{ClientId: client, Seq: seq, AckedBelow: ackedBelow, Retry: retry})
	md, _ := metadata.FromOutgoingContext(out)
	return metadata.NewIncomingContext(context.Background(), md)
}

// TestRequestFloors: no clock decides what a data node applies. A delayed first attempt of a
// request the client already has the answer for (below its acked_below) is refused, not
// applied again; records expire by log position, RequestWindow entries behind, and an attempt
// of an expired one is refused too; a record stamped with a wall clock (as before) expires.
func TestRequestFloors(t *testing.T) {
	store, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	n := NewNode(store, func() uint64 { return 1 }, allGranted{}, nil, nil)
	sh := &pcspb.Shard{Id: 7, TableId: 1, Term: 1, Primary: 1, Replicas: []uint64{1}, Epoch: &pcspb.ShardEpoch{ConfVer: 1, Version: 1}}
	if err := store.PutReplica(sh); err != nil {
		t.Fatal(err)
	}
	put := func(ctx context.Context, v string) error {
		_, err := n.Put(ctx, &pcspb.KVPutRequest{Header: &pcspb.KVHeader{ShardId: 7, Epoch: sh.Epoch}, Key: []byte("k"), Value: []byte(v)})
		return err
	}
	get := func() string {
		v, _, err := store.Get(7, []byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	if err := put(withRequest(9, 1, 1, true), "1"); err != nil { // the retry of seq 1 applied it
		t.Fatal(err)
	}
	if err := put(withRequest(9, 2, 2, false), "2"); err != nil { // the client has seq 1's answer
		t.Fatal(err)
	}
	if err := put(withRequest(9, 1, 1, false), "1"); !errors.Is(client.MapKVError(err), client.ErrOutcomeUnknown) || get() != "2" {
		t.Fatalf("a delayed first attempt below the floor: %v, value %q", err, get())
	}
	// Records expire by the shard's log, never by a clock.
	exp, err := store.ExpiredRequests(7, store.LSN(7), 100)
	if err != nil || len(exp) != 0 {
		t.Fatalf("expired right away: %v %v", exp, err)
	}
	exp, err = store.ExpiredRequests(7, store.LSN(7)+RequestWindow, 100)
	if err != nil || len(exp) != 1 || exp[0].Seq != 2 {
		t.Fatalf("records RequestWindow entries behind: %v %v", exp, err)
	}
	if err := store.Write(7, Position{store.LSN(7) + 1, 1}, nil, nil, nil, exp); err != nil {
		t.Fatal(err)
	}
	if f, err := store.Floor(7, 9); err != nil || f != 3 {
		t.Fatalf("floor after the expiry: %d %v, want 3", f, err)
	}
	if err := put(withRequest(9, 2, 2, true), "2"); !errors.Is(client.MapKVError(err), client.ErrOutcomeUnknown) {
		t.Fatalf("a retry whose record expired: %v", err)
	}
	if err := put(withRequest(9, 3, 3, false), "3"); err != nil || get() != "3" {
		t.Fatalf("the client's next request: %v, value %q", err, get())
	}
	// A record stamped with a wall clock (ms) by an older build expires.
	old := []*pcspb.AppliedRequest{{ClientId: 5, Seq: 1, At: 1_800_000_000_000}}
	if err := store.Write(7, Position{store.LSN(7) + 1, 1}, nil, nil, old, nil); err != nil {
		t.Fatal(err)
	}
	exp, _ = store.ExpiredRequests(7, store.LSN(7), 100)
	if len(exp) != 1 || exp[0].ClientId != 5 {
		t.Fatalf("a clock-stamped record: expired %v", exp)
	}
}
