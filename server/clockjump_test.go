package server

import (
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
	"github.com/postdb/pcs/internal/meta"
)

// skewed is the real clock with its wall clock off by offset (a member whose clock is wrong).
type skewed struct {
	origin time.Time
	offset time.Duration
}

func (c skewed) WallMs() int64       { return time.Now().Add(c.offset).UnixMilli() }
func (c skewed) Mono() time.Duration { return time.Since(c.origin) }

// TestExactlyOnceAcrossClockJumps: the primary's wall clock 11 minutes ahead, then a failover
// to a member 11 minutes behind, then one on time: a retry of a write in flight since before
// all that is answered from its record, not applied again, and a delayed first attempt of a
// request the client already has the answer for is refused, not applied.
func TestExactlyOnceAcrossClockJumps(t *testing.T) {
	offsets := map[string]time.Duration{"n1": 0, "n2": 11 * time.Minute, "n3": -11 * time.Minute}
	tc := newTestCluster(t, 3, func(c *Config) { c.Clock = skewed{origin: time.Now(), offset: offsets[c.Name]} })
	c := tc.client()
	ctx := ctxT(t, 30*time.Second)
	waitFor(t, 10*time.Second, "this build's command version in force", func() bool {
		return tc.primary().FSM().ClusterVersion() == meta.CommandVersion
	})
	put := func(addr string, key string, id *pcspb.RequestID) (*pcspb.PutResponse, error) {
		return pcspb.NewPCSClient(mustConn(t, addr)).Put(pcspb.WithRequestID(ctx, id), &pcspb.PutRequest{Key: []byte(key), Value: []byte("v")})
	}
	const me = 0xC10C
	if _, err := put(tc.primary().ClientAddr(), "jump/k", &pcspb.RequestID{ClientId: me, Seq: 1, AckedBelow: 1}); err != nil {
		t.Fatal(err)
	}
	for _, to := range []string{"n2", "n3", "n1"} {
		if _, err := c.MemberTransfer(ctx, to); err != nil {
			t.Fatalf("transfer to %s: %v", to, err)
		}
		waitFor(t, 10*time.Second, "primary "+to, func() bool { return tc.primary().Name() == to })
		for i := 0; i < 5; i++ { // entries proposed under this primary's clock
			if _, err := c.Put(ctx, []byte("jump/other"), []byte(to)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The retry of seq 1, in flight all along.
	if _, err := put(tc.primary().ClientAddr(), "jump/k", &pcspb.RequestID{ClientId: me, Seq: 1, AckedBelow: 1, Retry: true, AgeMs: 2000}); err != nil {
		t.Fatalf("retry after the clock jumps: %v", err)
	}
	if kv, _ := tc.primary().FSM().Get([]byte("jump/k")); kv == nil || kv.Version != 1 {
		t.Fatalf("the retried write was applied again: %+v", kv)
	}
	// The client moves on (it has seq 1's answer); a delayed copy of seq 1's first attempt comes.
	if _, err := put(tc.primary().ClientAddr(), "jump/j", &pcspb.RequestID{ClientId: me, Seq: 2, AckedBelow: 2}); err != nil {
		t.Fatal(err)
	}
	_, err := put(tc.primary().ClientAddr(), "jump/k", &pcspb.RequestID{ClientId: me, Seq: 1, AckedBelow: 1})
	if mapped := client.MapError(err); !errorsIs(mapped, client.ErrOutcomeUnknown) {
		t.Fatalf("a delayed first attempt below the floor: %v, want ErrOutcomeUnknown", err)
	}
	if kv, _ := tc.primary().FSM().Get([]byte("jump/k")); kv.Version != 1 {
		t.Fatalf("the delayed first attempt was applied: version %d", kv.Version)
	}
}
