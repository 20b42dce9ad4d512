package server

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/postdb/pcs/api/pcspb"
)

func createCmds(n int) []*pcspb.NodeCommand {
	out := make([]*pcspb.NodeCommand, n)
	for i := range out {
		out[i] = &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_CreateReplica{CreateReplica: &pcspb.Shard{Id: uint64(i + 1), TableId: 7,
			Start: []byte("start-key-of-some-length"), End: []byte("end-key-of-some-length"), Replicas: []uint64{1, 2, 3}, Primary: 1}}}
	}
	return out
}

// TestNodeCommandsBudget: a node owed more commands than fit one answer gets them all over a
// few heartbeats, each answer within the byte budget, none twice within resendAfter, and a
// command still pending is sent again once resendAfter has passed.
func TestNodeCommandsBudget(t *testing.T) {
	nc := newNodeCommands()
	cmds := createCmds(100_000)
	nc.set(map[uint64][]*pcspb.NodeCommand{1: cmds})
	now := time.Unix(1000, 0)
	seen := map[uint64]int{}
	beats := 0
	for len(seen) < len(cmds) {
		out := nc.take(1, now)
		if len(out) == 0 {
			t.Fatalf("beat %d: nothing sent with %d of %d commands never sent", beats, len(cmds)-len(seen), len(cmds))
		}
		size := 0
		for _, c := range out {
			size += proto.Size(c)
			seen[c.GetCreateReplica().Id]++
		}
		if size > maxCommandBytes {
			t.Fatalf("beat %d: %d bytes of commands; the budget is %d", beats, size, maxCommandBytes)
		}
		beats++
		now = now.Add(100 * time.Millisecond) // heartbeats faster than resendAfter
		if beats > 100 {
			t.Fatalf("%d of %d commands sent after %d beats", len(seen), len(cmds), beats)
		}
	}
	if beats < 2 {
		t.Fatalf("100k commands fit one answer (%d beats): the test does not exercise the budget", beats)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("command for shard %d sent %d times within resendAfter", id, n)
		}
	}
	// Nothing is due until resendAfter has passed since each was sent.
	if out := nc.take(1, now); len(out) != 0 && now.Sub(time.Unix(1000, 0)) < resendAfter {
		t.Fatalf("%d commands sent again within resendAfter", len(out))
	}
	// Later, the ones still pending go out again; the ones no longer planned do not.
	nc.set(map[uint64][]*pcspb.NodeCommand{1: cmds[:10]})
	out := nc.take(1, now.Add(2*resendAfter))
	if len(out) != 10 {
		t.Fatalf("after resendAfter: %d commands sent again, want the 10 still pending", len(out))
	}
	// A node with nothing pending holds no state.
	nc.set(map[uint64][]*pcspb.NodeCommand{})
	if out := nc.take(1, now.Add(10*resendAfter)); len(out) != 0 {
		t.Fatalf("%d commands sent with none pending", len(out))
	}
	if len(nc.nodes) != 0 {
		t.Fatalf("idle node state kept: %d nodes", len(nc.nodes))
	}
}

// TestNodeCommandsOneOversize: a single command larger than the budget still goes out (alone).
func TestNodeCommandsOneOversize(t *testing.T) {
	nc := newNodeCommands()
	big := &pcspb.NodeCommand{Cmd: &pcspb.NodeCommand_CreateReplica{CreateReplica: &pcspb.Shard{Id: 1, Start: make([]byte, maxCommandBytes+1)}}}
	nc.set(map[uint64][]*pcspb.NodeCommand{1: append([]*pcspb.NodeCommand{big}, createCmds(3)[1:]...)})
	if out := nc.take(1, time.Unix(1, 0)); len(out) != 1 || out[0] != big {
		t.Fatalf("got %d commands, want the oversize one alone", len(out))
	}
	if out := nc.take(1, time.Unix(1, 0)); len(out) != 2 {
		t.Fatalf("got %d commands, want the 2 others", len(out))
	}
}

func BenchmarkNodeCommandsTake(b *testing.B) {
	nc := newNodeCommands()
	nc.set(map[uint64][]*pcspb.NodeCommand{1: createCmds(400_000)})
	now := time.Unix(1000, 0)
	for b.Loop() {
		now = now.Add(resendAfter)
		nc.take(1, now)
	}
}

// TestNodeCommandsIdle: once a node has been sent its whole plan, its heartbeats get nothing
// without reading the plan until the first command is due again, and a new plan is read at once.
func TestNodeCommandsIdle(t *testing.T) {
	nc := newNodeCommands()
	cmds := createCmds(1000)
	nc.set(map[uint64][]*pcspb.NodeCommand{1: cmds})
	now := time.Unix(1000, 0)
	if out := nc.take(1, now); len(out) != len(cmds) {
		t.Fatalf("first answer: %d commands, want all %d", len(out), len(cmds))
	}
	if ns := nc.nodes[1]; ns.idleGen != nc.gen || !ns.dueAt.Equal(now.Add(resendAfter)) {
		t.Fatalf("after the whole plan went out: idle generation %d (plan %d), due at %v", ns.idleGen, nc.gen, ns.dueAt)
	}
	nc.pending[1] = nil // (not through set: an idle node must not read the plan at all)
	if out := nc.take(1, now.Add(resendAfter/2)); len(out) != 0 {
		t.Fatalf("idle node sent %d commands", len(out))
	}
	more := append(cmds[:len(cmds):len(cmds)], createCmds(1001)[1000])
	nc.set(map[uint64][]*pcspb.NodeCommand{1: more}) // a new plan: read at once
	out := nc.take(1, now.Add(resendAfter/2))
	if len(out) != 1 || out[0].GetCreateReplica().Id != 1001 {
		t.Fatalf("new plan: %d commands, want only the new one (1001)", len(out))
	}
	if out := nc.take(1, now.Add(resendAfter)); len(out) != len(cmds) {
		t.Fatalf("at resendAfter: %d commands due again, want the first %d", len(out), len(cmds))
	}
}
