package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
)

// localhost names the same loopback port under another name: an advertise address that
// differs from the bound one yet can be dialled.
func localhost(t testing.TB, addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return "localhost:" + port
}

// TestAdvertiseAddresses: members and a data node bound to 127.0.0.1 advertise themselves as
// localhost. The group forms on the advertised Raft addresses, the member list and the node
// list show the advertised addresses, and clients that discover the primary and the node from
// them write and read rows.
func TestAdvertiseAddresses(t *testing.T) {
	pc := startClusterWith(t, 3, func(p *proc) []string {
		return []string{"--advertise-client-addr", localhost(t, p.client), "--advertise-peer-addr", localhost(t, p.peer),
			"--advertise-http-addr", localhost(t, p.http)}
	})
	c := pc.client()
	pc.primary(c)
	var last string
	defer func() {
		if t.Failed() {
			t.Logf("last member list:\n%s", last)
		}
	}()
	waitFor(t, 20*time.Second, "every member to show its advertised addresses", func() bool {
		code, out := run(t, 20*time.Second, "pcsctl", "--endpoints", strings.Join(pc.endpoints(), ","), "-o", "json", "member", "list")
		last = out
		var members []struct {
			Name     string `json:"name"`
			Peer     string `json:"peer_addr"`
			Client   string `json:"client_addr"`
			HTTPAddr string `json:"http_addr"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &members) != nil || len(members) != 3 {
			return false
		}
		for _, m := range members {
			if !strings.HasPrefix(m.Peer, "localhost:") || !strings.HasPrefix(m.Client, "localhost:") || !strings.HasPrefix(m.HTTPAddr, "localhost:") {
				return false
			}
		}
		return true
	})

	n := &nodeProc{t: t, dir: filepath.Join(t.TempDir(), "node"), addr: freeAddr(t)}
	n.args = []string{"--endpoints", strings.Join(pc.endpoints(), ","), "--advertise-addr", localhost(t, n.addr), "--log-level", "warn"}
	n.start()
	t.Cleanup(n.kill)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitFor(t, 20*time.Second, "the node registered at its advertised address", func() bool {
		resp, err := c.ListNodes(ctx)
		return err == nil && len(resp.Nodes) == 1 && resp.Nodes[0].Node.Address == localhost(t, n.addr) && resp.Nodes[0].State == "up"
	})
	if _, err := c.CreateTable(ctx, &pcspb.Table{Name: "t", Replicas: 1, Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}},
		Partition: &pcspb.PartitionSpec{Strategy: pcspb.PartitionStrategy_PARTITION_STRATEGY_HASH, Columns: []string{"k"}, HashPartitions: 2}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "table public", func() bool {
		tr, err := c.GetTable(ctx, "t")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	for i := range 10 {
		if err := c.KV("t").Put(ctx, rowKey(i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		if v, ok, err := c.KV("t").Get(ctx, rowKey(i)); err != nil || !ok || string(v) != fmt.Sprint(i) {
			t.Fatalf("row %d: %q %v %v", i, v, ok, err)
		}
	}
}
