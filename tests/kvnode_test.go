package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/keyenc"
)

// nodeProc is one pcsnode process.
type nodeProc struct {
	t      testing.TB
	dir    string
	addr   string
	args   []string
	cmd    *exec.Cmd
	exited chan struct{}
}

func (n *nodeProc) start() {
	n.cmd = exec.Command(filepath.Join(binDir, "pcsnode"), append([]string{"--data-dir", n.dir, "--addr", n.addr}, n.args...)...)
	f, err := os.OpenFile(n.dir+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	n.cmd.Stdout, n.cmd.Stderr = f, f
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(n.cmd, n.exited)
}

func (n *nodeProc) kill() {
	select {
	case <-n.exited:
	default:
		n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.exited
	}
}

func startNodeProcs(t testing.TB, pc *procCluster, count int) []*nodeProc {
	root := t.TempDir()
	var out []*nodeProc
	for i := 0; i < count; i++ {
		n := &nodeProc{t: t, dir: filepath.Join(root, fmt.Sprint("node", i)), addr: freeAddr(t),
			args: []string{"--endpoints", pc.procs[0].client + "," + pc.procs[len(pc.procs)-1].client,
				"--labels", fmt.Sprintf("zone=z%d", i%3), "--log-level", "warn"}}
		n.start()
		t.Cleanup(n.kill)
		out = append(out, n)
	}
	return out
}

// TestPcsnodeKV: real pcs and pcsnode processes; rows written through the client's KV are read
// back, survive a SIGKILL of a data node, and bad requests get the right errors.
func TestPcsnodeKV(t *testing.T) {
	pc := startCluster(t, 3, "--node-warmup", "300ms")
	c := pc.client()
	pc.primary(c)
	nodes := startNodeProcs(t, pc, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitFor(t, 20*time.Second, "three data nodes up", func() bool {
		resp, err := c.ListNodes(ctx)
		up := 0
		for _, n := range resp.GetNodes() {
			if n.State == "up" {
				up++
			}
		}
		return err == nil && up == 3
	})
	tbl := &pcspb.Table{Name: "kv", Replicas: 1, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 6}}
	if _, err := c.CreateTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "table public", func() bool {
		tr, err := c.GetTable(ctx, "kv")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	key := func(i int) []byte {
		b, _ := keyenc.Encode(nil, []keyenc.Column{{Type: keyenc.Int64}}, []keyenc.Value{keyenc.I64(int64(i))})
		return b
	}
	kv := c.KV("kv")
	for i := 0; i < 300; i++ {
		if err := kv.Put(ctx, key(i), []byte(fmt.Sprint("v", i))); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	check := func() {
		for i := 0; i < 300; i++ {
			v, found, err := kv.Get(ctx, key(i))
			if err != nil || !found || string(v) != fmt.Sprint("v", i) {
				t.Fatalf("get %d: %q %v %v", i, v, found, err)
			}
		}
	}
	check()
	rows, err := kv.Scan(ctx, key(100), key(200), 0)
	if err != nil || len(rows) != 100 {
		t.Fatalf("scan [100, 200): %d rows, %v", len(rows), err)
	}
	// A data node is SIGKILLed and restarted: every acknowledged write is still there.
	nodes[1].kill()
	nodes[1].start()
	check()
	if err := kv.Delete(ctx, key(7)); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := kv.Get(ctx, key(7)); found {
		t.Fatal("deleted row still found")
	}

	// Bad requests straight to a node.
	sh, err := c.Route(ctx, "kv", key(1))
	if err != nil {
		t.Fatal(err)
	}
	var primary, other string
	resp, _ := c.ListNodes(ctx)
	for _, n := range resp.Nodes {
		if n.Node.Id == sh.Primary {
			primary = n.Node.Address
		} else {
			other = n.Node.Address
		}
	}
	conn := func(addr string) pcspb.KVClient {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return pcspb.NewKVClient(cc)
	}
	rk := append(append([]byte(nil), sh.Start...), key(1)...)
	for name, tc := range map[string]struct {
		addr string
		req  *pcspb.KVPutRequest
		want error
	}{
		"stale epoch":    {primary, &pcspb.KVPutRequest{Header: &pcspb.KVHeader{ShardId: sh.Id, Epoch: &pcspb.ShardEpoch{ConfVer: 9, Version: 9}}, Key: rk}, client.ErrEpochNotMatch},
		"unknown shard":  {primary, &pcspb.KVPutRequest{Header: &pcspb.KVHeader{ShardId: 99999, Epoch: sh.Epoch}, Key: rk}, client.ErrShardNotFound},
		"key outside":    {primary, &pcspb.KVPutRequest{Header: &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}, Key: []byte{0xff, 0xff, 0xff, 0xff}}, client.ErrKeyNotInShard},
		"oversize value": {primary, &pcspb.KVPutRequest{Header: &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}, Key: rk, Value: make([]byte, 2<<20)}, client.ErrInvalidArgument},
		"not primary":    {other, &pcspb.KVPutRequest{Header: &pcspb.KVHeader{ShardId: sh.Id, Epoch: sh.Epoch}, Key: rk}, nil},
	} {
		_, err := conn(tc.addr).Put(ctx, tc.req)
		mapped := client.MapKVError(err)
		switch {
		case err == nil:
			t.Errorf("%s: accepted", name)
		case tc.want != nil && !errors.Is(mapped, tc.want):
			t.Errorf("%s: %v, want %v", name, mapped, tc.want)
		case tc.want == nil && !errors.Is(mapped, client.ErrNotPrimary) && !errors.Is(mapped, client.ErrShardNotFound):
			// A node that is not the shard's primary either holds no replica (replicas: 1) or refuses.
			t.Errorf("%s: %v", name, mapped)
		}
	}
	v, _, _ := kv.Get(ctx, key(1))
	if string(v) != "v1" {
		t.Fatalf("refused writes changed row 1: %q", v)
	}
}

// logTail returns the last n bytes of the node's log.
func (n *nodeProc) logTail(size int) string {
	b, err := os.ReadFile(n.dir + ".log")
	if err != nil {
		return err.Error()
	}
	return string(b[max(0, len(b)-size):])
}

// mostLeading returns the data node that is primary of the most shards of table, by id and
// process.
func mostLeading(t testing.TB, ctx context.Context, c *client.Client, table string, nodes []*nodeProc) (uint64, *nodeProc) {
	t.Helper()
	shards, err := c.ScanShards(ctx, table, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lead := map[uint64]int{}
	for _, sh := range shards.Shards {
		lead[sh.Primary]++
	}
	resp, err := c.ListNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var id uint64
	var proc *nodeProc
	for _, n := range resp.Nodes {
		for _, np := range nodes {
			if np.addr == n.Node.Address && (proc == nil || lead[n.Node.Id] > lead[id]) {
				id, proc = n.Node.Id, np
			}
		}
	}
	if proc == nil {
		t.Fatalf("no data node of %d leads a shard of %s", len(nodes), table)
	}
	return id, proc
}
