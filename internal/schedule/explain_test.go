package schedule

import (
	"errors"
	"strings"
	"testing"

	"github.com/postdb/pcs/internal/schedule/operator"
	"github.com/postdb/pcs/internal/schedule/schedtest"
)

func TestExplain(t *testing.T) {
	v := schedtest.Cluster(5, 0, 3, "")
	for _, n := range v.Nodes {
		n.Capacity = 100 * mib
	}
	sh := schedtest.Shard(v, 10*mib, 1, 2, 3)
	schedtest.Shard(v, 85*mib, 4) // node 4 is low on space
	v.Shards[1].Replicas = []uint64{4}
	c := newCoord()
	lines, err := c.ExplainShard(0, v, sh.ID)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{"node 1 as a new replica: holds a replica", "node 4 as a new replica: low on space", "node 5 as a new replica: eligible", "checker replica: nothing to do"} {
		if !strings.Contains(text, want) {
			t.Errorf("explain shard lacks %q:\n%s", want, text)
		}
	}
	op := operator.New(operator.Admin, sh, "test", operator.Move(sh, 1, 5)...)
	if err := c.Submit(op, 0); err != nil {
		t.Fatal(err)
	}
	lines, _ = c.ExplainShard(0, v, sh.ID)
	if text = strings.Join(lines, "\n"); !strings.Contains(text, "under operator") {
		t.Errorf("explain shard with an operator:\n%s", text)
	}
	lines, err = c.ExplainNode(0, v, 4)
	if err != nil {
		t.Fatal(err)
	}
	if text = strings.Join(lines, "\n"); !strings.Contains(text, "above high-space-ratio") && !strings.Contains(text, "above low-space-ratio") {
		t.Errorf("explain node 4:\n%s", text)
	}
	lines, _ = c.ExplainNode(0, v, 5)
	if text = strings.Join(lines, "\n"); !strings.Contains(text, "operator: op") {
		t.Errorf("explain node 5 does not show the move to it:\n%s", text)
	}
	if _, err := c.ExplainShard(0, v, 99); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown shard: %v", err)
	}
	if _, err := c.ExplainNode(0, v, 99); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown node: %v", err)
	}
	if len(c.Operators(false)) != 1 {
		t.Errorf("explain changed the operators: %v", c.Operators(false))
	}
}
