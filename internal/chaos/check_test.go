package chaos

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/postdb/pcs/api/pcspb"
)

func TestCheckTSO(t *testing.T) {
	good := []tsoOp{{0, 10, 5}, {5, 20, 7}, {11, 30, 6}, {31, 40, 9}} // 6 overlaps 7: either order
	if bad := checkTSO(good); len(bad) != 0 {
		t.Fatalf("good history: %v", bad)
	}
	for name, h := range map[string][]tsoOp{
		"duplicate":              {{0, 10, 5}, {20, 30, 5}},
		"regression":             {{0, 10, 8}, {11, 20, 7}},
		"equal concurrent twice": {{0, 10, 8}, {5, 20, 8}},
	} {
		if bad := checkTSO(h); len(bad) == 0 {
			t.Errorf("%s: not found", name)
		}
	}
}

func TestCheckIDs(t *testing.T) {
	if bad := checkIDs([]idRange{{1, 7}, {8, 7}, {100, 7}}); len(bad) != 0 {
		t.Fatalf("disjoint ranges: %v", bad)
	}
	if bad := checkIDs([]idRange{{1, 7}, {100, 7}, {7, 7}}); len(bad) != 1 {
		t.Fatalf("overlap: %v", bad)
	}
}

func TestCheckCoverage(t *testing.T) {
	sh := func(id uint64, start, end byte) *pcspb.Shard {
		return &pcspb.Shard{Id: id, Start: []byte{start}, End: []byte{end}, Primary: 1, Replicas: []uint64{1, 2, 3}}
	}
	if bad := checkCoverage([]*pcspb.Shard{sh(2, 5, 9), sh(1, 0, 5)}, []byte{0}, []byte{9}); len(bad) != 0 {
		t.Fatalf("tiling: %v", bad)
	}
	for name, s := range map[string][]*pcspb.Shard{
		"gap":     {sh(1, 0, 4), sh(2, 5, 9)},
		"overlap": {sh(1, 0, 6), sh(2, 5, 9)},
		"short":   {sh(1, 0, 5)},
		"primary": {sh(1, 0, 5), {Id: 2, Start: []byte{5}, End: []byte{9}, Primary: 4, Replicas: []uint64{1, 2, 3}}},
	} {
		if bad := checkCoverage(s, []byte{0}, []byte{9}); len(bad) == 0 {
			t.Errorf("%s: not found", name)
		}
	}
}

func TestRegisterModel(t *testing.T) {
	op := func(call, ret int64, in regInput, out regOutput) porcupine.Operation {
		return porcupine.Operation{Input: in, Output: out, Call: call, Return: ret}
	}
	for _, tc := range []struct {
		name string
		h    []porcupine.Operation
		ok   bool
	}{
		{"put then read", []porcupine.Operation{
			op(0, 1, regInput{op: "put", value: "a"}, regOutput{ok: true, version: 1}),
			op(2, 3, regInput{op: "get"}, regOutput{value: "a", version: 1}),
		}, true},
		{"stale read", []porcupine.Operation{
			op(0, 1, regInput{op: "put", value: "a"}, regOutput{ok: true, version: 1}),
			op(2, 3, regInput{op: "get"}, regOutput{}),
		}, false},
		{"cas at the right version", []porcupine.Operation{
			op(0, 1, regInput{op: "put", value: "a"}, regOutput{ok: true, version: 1}),
			op(2, 3, regInput{op: "cas", value: "b", expected: 1}, regOutput{ok: true, version: 2}),
			op(4, 5, regInput{op: "get"}, regOutput{value: "b", version: 2}),
		}, true},
		{"cas refused at the right version", []porcupine.Operation{
			op(0, 1, regInput{op: "put", value: "a"}, regOutput{ok: true, version: 1}),
			op(2, 3, regInput{op: "cas", value: "b", expected: 1}, regOutput{ok: false}),
		}, false},
		{"unknown put seen later", []porcupine.Operation{
			op(0, unknownReturn, regInput{op: "put", value: "a"}, regOutput{unknown: true}),
			op(2, 3, regInput{op: "get"}, regOutput{value: "a", version: 1}),
		}, true},
		{"unknown put never seen", []porcupine.Operation{
			op(0, unknownReturn, regInput{op: "put", value: "a"}, regOutput{unknown: true}),
			op(2, 3, regInput{op: "get"}, regOutput{}),
		}, true},
		{"a write applied twice", []porcupine.Operation{
			op(0, 1, regInput{op: "put", value: "a"}, regOutput{ok: true, version: 1}),
			op(2, 3, regInput{op: "put", value: "b"}, regOutput{ok: true, version: 2}),
			op(4, 5, regInput{op: "get"}, regOutput{value: "a", version: 3}),
		}, false},
	} {
		if got := porcupine.CheckOperations(registerModel, tc.h); got != tc.ok {
			t.Errorf("%s: linearizable=%v, want %v", tc.name, got, tc.ok)
		}
	}
}

func TestLongestGap(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	ok := []time.Duration{ms(0), ms(10), ms(20), ms(900), ms(910), ms(2000), ms(2010)}
	// A fault from 25 to 1500: the gap 20→900 is in it, and 910→2000 runs past the heal.
	if got := longestGap(ok, ms(25), ms(1500)); got != ms(1090) {
		t.Fatalf("gap %v, want 1.09s", got)
	}
	if got := longestGap(ok, ms(2001), ms(2005)); got != ms(10) {
		t.Fatalf("a fault nobody noticed: %v", got)
	}
	if got := longestGap(ok, ms(2011), ms(3000)); got != ms(990) { // from the last success to the heal
		t.Fatalf("never recovered: %v", got)
	}
}

// TestResolveUnknown: writes of unknown outcome are settled from the watch (kv) or dropped when
// nobody read them (rows) without turning a bad history into a good one.
func TestResolveUnknown(t *testing.T) {
	op := func(call, ret int64, in regInput, out regOutput) porcupine.Operation {
		return porcupine.Operation{Input: in, Output: out, Call: call, Return: ret}
	}
	h := []porcupine.Operation{
		op(0, unknownReturn, regInput{op: "put", value: "a"}, regOutput{unknown: true}),
		op(1, unknownReturn, regInput{op: "cas", value: "b", expected: 1}, regOutput{unknown: true}),
		op(5, 6, regInput{op: "get"}, regOutput{value: "b", version: 2}),
	}
	got := resolve(h, map[string][]uint64{"a": {1}, "b": {2}})
	if len(got) != 3 || got[0].Output.(regOutput).version != 1 || !porcupine.CheckOperations(registerModel, got) {
		t.Fatalf("resolved: %+v", got)
	}
	// "a" never applied: it leaves, and the read of version 2 is then impossible.
	got = resolve(h, map[string][]uint64{"b": {2}})
	if len(got) != 2 || porcupine.CheckOperations(registerModel, got) {
		t.Fatalf("a CAS at version 1 with no write before it passed: %+v", got)
	}

	rop := func(call, ret int64, in rowInput, out rowOutput) porcupine.Operation {
		return porcupine.Operation{Input: in, Output: out, Call: call, Return: ret}
	}
	rows := []porcupine.Operation{
		rop(0, unknownReturn, rowInput{put: true, value: "x"}, rowOutput{unknown: true}),
		rop(0, unknownReturn, rowInput{put: true, value: "y"}, rowOutput{unknown: true}),
		rop(3, 4, rowInput{}, rowOutput{value: "y"}),
	}
	if got := dropUnseen(rows); len(got) != 2 || !porcupine.CheckOperations(rowModel, got) {
		t.Fatalf("rows: %+v", got)
	}
	// A read of a value nobody wrote stays impossible.
	bad := append(rows, rop(5, 6, rowInput{}, rowOutput{value: "z"}))
	if porcupine.CheckOperations(rowModel, dropUnseen(bad)) {
		t.Fatal("a read of a value never written passed")
	}
}
