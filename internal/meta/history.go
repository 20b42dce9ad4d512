package meta

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/postdb/pcs/api/pcspb"
)

// history is the bounded, revision-ordered log of key-value events kept for watches. Every
// event with revision >= start is retained in events[head:].
type history struct {
	events []*pcspb.Event
	head   int
	start  uint64
}

func (h *history) append(ev *pcspb.Event, capacity int) {
	h.events = append(h.events, ev)
	for len(h.events)-h.head > capacity {
		h.start = h.events[h.head].Kv.ModRevision + 1
		h.events[h.head] = nil
		h.head++
	}
	if h.head > capacity { // reclaim the dropped prefix
		h.events = append([]*pcspb.Event(nil), h.events[h.head:]...)
		h.head = 0
	}
}

func (h *history) since(from uint64, prefix []byte, max int, revision uint64) ([]*pcspb.Event, uint64, error) {
	if from < h.start {
		return nil, 0, fmt.Errorf("%w: revision %d is older than the oldest retained %d", ErrCompacted, from, h.start)
	}
	live := h.events[h.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].Kv.ModRevision >= from })
	var out []*pcspb.Event
	for ; i < len(live); i++ {
		if len(out) == max {
			// Complete through the revision before the first event not returned.
			return out, live[i].Kv.ModRevision - 1, nil
		}
		if bytes.HasPrefix(live[i].Kv.Key, prefix) {
			out = append(out, live[i])
		}
	}
	return out, revision, nil
}
