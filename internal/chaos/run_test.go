package chaos

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSmokeSchedule: the whole suite on real hosts — binaries built with the fault hooks, 3 pcs
// and 3 pcsnode each in its own namespace, the primary isolated by iptables and then paused
// past its lease while every workload runs — passes every check. (.ci/run runs the longer 'ci'
// schedule through pcschaos.)
func TestSmokeSchedule(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := BuildBinaries(ctx, "../..", filepath.Join(dir, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	rep, err := Run(ctx, Config{Faults: []string{"isolate-primary", "pause-primary"}, Seed: 1, Bin: bin, Out: filepath.Join(dir, "run"), Log: &log})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	var out bytes.Buffer
	rep.Print(&out)
	t.Log("\n" + out.String())
	if !rep.Passed() {
		t.Fatalf("verdict FAIL:\n%s\nprogress:\n%s", out.String(), log.String())
	}
	if len(rep.Windows) != 2 || !strings.Contains(out.String(), "PASS") {
		t.Fatalf("report: %s", out.String())
	}
	for _, w := range rep.Workloads {
		if rep.Ops[w] == 0 {
			t.Errorf("workload %s made no successful operation", w)
		}
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	for _, cfg := range []Config{{Schedule: "nosuch"}, {Faults: []string{"isolate-primary", "meteor"}}, {Schedule: "soak"}} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}
