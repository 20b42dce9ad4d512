package server

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

func TestClusterReplicatesAndReads(t *testing.T) {
	for _, n := range []int{1, 3, 5} {
		t.Run(fmt.Sprintf("%d-nodes", n), func(t *testing.T) {
			tc := newTestCluster(t, n, nil)
			c := tc.client()
			ctx := ctxT(t, 30*time.Second)
			others := tc.live()
			for i := 0; i < 50; i++ {
				key := []byte(fmt.Sprintf("k/%03d", i))
				put, err := c.Put(ctx, key, []byte(fmt.Sprint(i)))
				if err != nil {
					t.Fatalf("put %s: %v", key, err)
				}
				// A linearizable read on any node, started after the put was acknowledged,
				// sees it.
				s := others[i%len(others)]
				got, err := c.Get(ctx, key, client.WithEndpoint(s.ClientAddr()))
				if err != nil {
					t.Fatalf("get %s at %s: %v", key, s.Name(), err)
				}
				if got.Kv == nil || string(got.Kv.Value) != fmt.Sprint(i) {
					t.Fatalf("linearizable read of %s at %s = %v, want %d", key, s.Name(), got.Kv, i)
				}
				if got.Header.ServedBy != s.Name() || got.Header.Revision < put.Header.Revision {
					t.Fatalf("read header %+v does not reflect revision %d at %s", got.Header, put.Header.Revision, s.Name())
				}
			}
			tc.waitConverged(10 * time.Second)
			// A stale read says what it saw.
			for _, s := range tc.live() {
				got, err := c.Get(ctx, []byte("k/049"), client.WithEndpoint(s.ClientAddr()), client.WithStale())
				if err != nil {
					t.Fatal(err)
				}
				if got.Header.AppliedIndex == 0 || got.Header.Revision == 0 || got.Header.ServedBy != s.Name() {
					t.Fatalf("stale read header %+v lacks its position", got.Header)
				}
				if !s.isPrimary() && got.Header.LastContactMs < 0 {
					t.Fatalf("follower %s reports no contact with the primary", s.Name())
				}
			}
		})
	}
}

func TestFollowerForwardsOrRedirects(t *testing.T) {
	tc := newTestCluster(t, 3, nil)
	p := tc.primary()
	f := tc.followers()[0]
	ctx := ctxT(t, 20*time.Second)
	fc := pcspb.NewPCSClient(mustConn(t, f.ClientAddr()))
	// The follower must have heard from the primary (under load it may not have yet).
	waitFor(t, 10*time.Second, "the follower to know the primary", func() bool { _, addr := f.primary(); return addr != "" })

	// Forwarded by default.
	resp, err := fc.Put(ctx, &pcspb.PutRequest{Key: []byte("fwd"), Value: []byte("v")})
	if err != nil {
		t.Fatalf("forwarded put: %v", err)
	}
	if resp.Kv.Version != 1 {
		t.Fatalf("version %d, want 1", resp.Kv.Version)
	}
	// Refused with the primary's address when asked not to forward.
	_, err = fc.Put(ctx, &pcspb.PutRequest{Key: []byte("fwd"), Value: []byte("v2"), NoForward: true})
	if !errors.Is(fromStatusForTest(err), client.ErrNotPrimary) {
		t.Fatalf("no-forward put on a follower: %v, want NotPrimary", err)
	}
	np := notPrimaryDetail(err)
	if np == nil || np.PrimaryAddr != p.ClientAddr() || np.PrimaryName != p.Name() {
		t.Fatalf("NotPrimary detail %v, want %s at %s", np, p.Name(), p.ClientAddr())
	}
	got, _ := p.FSM().Get([]byte("fwd"))
	if got == nil || string(got.Value) != "v" {
		t.Fatalf("refused write changed the key: %v", got)
	}
}

func TestRestartRecoversAcknowledgedWrites(t *testing.T) {
	tc := newTestCluster(t, 3, nil)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	for i := 0; i < 200; i++ {
		if _, err := c.Put(ctx, []byte(fmt.Sprintf("r/%03d", i)), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	want := tc.waitConverged(10 * time.Second)
	_, pos := tc.servers[0].FSM().Digest()
	// Stop every node, then start them all again on the same data.
	for i, s := range tc.servers {
		s.Close()
		tc.servers[i] = nil
	}
	for i, name := range tc.names {
		cfg := testConfig(t, name, tc.dirs[i])
		cfg.Raft.PeerAddr = tc.peerLns[i].Addr().String()
		cfg.ClientAddr = "127.0.0.1:0"
		s, err := New(cfg)
		if err != nil {
			t.Fatalf("restarting %s: %v", name, err)
		}
		s.Start()
		tc.servers[i] = s
	}
	tc.waitRunning(20 * time.Second)
	tc.waitConverged(10 * time.Second)
	for _, s := range tc.servers {
		kvs, _, _ := s.FSM().Range([]byte("r/"), nil, 1000)
		if len(kvs) != 200 {
			t.Fatalf("%s has %d keys after restart, want 200", s.Name(), len(kvs))
		}
	}
	// The takeover after restart wrote a TSO window and member records, so the digest moved
	// on; the keys above are what must have survived. The revision never goes back.
	if _, p2 := tc.servers[0].FSM().Digest(); p2.Revision < pos.Revision {
		t.Fatalf("revision went back from %d to %d", pos.Revision, p2.Revision)
	}
	_ = want
}
