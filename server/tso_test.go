package server

import (
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/postdb/pcs/internal/tso"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// TestTSOAndIDsAcrossTransfers: timestamps strictly increase and ids never repeat while the
// primary role moves around the group.
func TestTSOAndIDsAcrossTransfers(t *testing.T) {
	tc := newTestCluster(t, 3, nil)
	c := tc.client()
	ctx := ctxT(t, 60*time.Second)
	began := time.Now().UnixMilli()
	tsoWindowMs := DefaultConfig().TSOWindow.Milliseconds()
	var (
		mu   sync.Mutex
		ts   []uint64
		ids  []uint64
		stop = make(chan struct{})
		wg   sync.WaitGroup
		errs = make(chan error, 16)
	)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, err := c.GetTS(ctx)
				if err != nil {
					errs <- err
					return
				}
				if v <= last {
					errs <- errors.New("timestamp went backwards for one caller")
					return
				}
				last = v
				first, err := c.AllocIDs(ctx, "shard", 3)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				ts = append(ts, v)
				ids = append(ids, first, first+1, first+2)
				mu.Unlock()
			}
		}()
	}
	served := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(ts)
	}
	for i := 0; i < 3; i++ {
		before := served()
		waitFor(t, 10*time.Second, "timestamps flowing before the transfer", func() bool { return served() >= before+50 })
		if _, err := c.MemberTransfer(ctx, ""); err != nil {
			t.Fatalf("transfer %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	for name, vs := range map[string][]uint64{"timestamp": ts, "id": ids} {
		sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
		for i := 1; i < len(vs); i++ {
			if vs[i] == vs[i-1] {
				t.Fatalf("%s %d handed out twice", name, vs[i])
			}
		}
	}
	if len(ts) < 50 {
		t.Fatalf("only %d timestamps across the transfers", len(ts))
	}
	// The physical part follows the clock across the transfers: not behind when the test
	// began, and ahead of its end by at most a persisted window per primary (each new primary
	// starts above its predecessor's window).
	hi := time.Now().UnixMilli() + 4*tsoWindowMs + 1000
	for _, v := range ts {
		if p, _ := tso.Split(v); p < began-1000 || p > hi {
			t.Fatalf("timestamp %d has physical part %d ms, outside [%d, %d]", v, p, began-1000, hi)
		}
	}
}
