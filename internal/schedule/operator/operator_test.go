package operator

import (
	"errors"
	"fmt"
	"testing"

	"github.com/postdb/pcs/internal/schedule/view"
)

func TestAdminSteps(t *testing.T) {
	sh := &view.Shard{ID: 7, Primary: 1, Replicas: []uint64{1, 2, 3}, Learners: []uint64{4}}
	for _, tc := range []struct {
		kind     string
		from, to uint64
		want     string // steps, or "" for ErrInvalid
	}{
		{"move", 1, 5, "[add-learner 5 promote 5 transfer-primary 5 remove 1]"},
		{"move", 2, 5, "[add-learner 5 promote 5 remove 2]"},
		{"move", 2, 3, "[remove 2]"}, // resumed: 3 is already a replica
		{"move", 2, 2, ""},
		{"move", 0, 5, ""},
		{"transfer-primary", 0, 2, "[transfer-primary 2]"},
		{"transfer-primary", 0, 1, ""},
		{"transfer-primary", 0, 4, ""}, // a learner
		{"remove", 4, 0, "[remove 4]"},
		{"remove", 1, 0, ""}, // the primary
		{"remove", 9, 0, ""},
		{"add", 0, 5, "[add-learner 5 promote 5]"},
		{"add", 0, 4, ""},
		{"split", 0, 0, ""},
	} {
		steps, err := AdminSteps(sh, tc.kind, tc.from, tc.to)
		if tc.want == "" {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s %d->%d: %v, %v; want ErrInvalid", tc.kind, tc.from, tc.to, steps, err)
			}
			continue
		}
		if err != nil || fmt.Sprint(steps) != tc.want {
			t.Errorf("%s %d->%d: %v, %v; want %s", tc.kind, tc.from, tc.to, steps, err, tc.want)
		}
	}
}
