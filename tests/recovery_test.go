package tests

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestSnapshotRestoreAndForceNewCluster: a snapshot saved with pcsctl and restored with
// `pcs restore` starts a new cluster (new id) that serves every key; a group that lost its
// quorum for good comes back with --force-new-cluster on the survivor, keeping every
// acknowledged write.
func TestSnapshotRestoreAndForceNewCluster(t *testing.T) {
	pc := startCluster(t, 3)
	c := pc.client()
	pc.primary(c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const keys = 300
	for i := 0; i < keys; i++ {
		if _, err := c.Put(ctx, []byte(fmt.Sprintf("r/%03d", i)), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	st, err := c.Status(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "pcs.snap")
	ep := "--endpoints=" + pc.procs[0].client
	if code, out := run(t, 30*time.Second, "pcsctl", ep, "snapshot", "save", file); code != 0 {
		t.Fatalf("snapshot save: %s", out)
	}
	r := &proc{t: t, name: "r1", dir: filepath.Join(t.TempDir(), "r1"), client: freeAddr(t), peer: freeAddr(t), http: freeAddr(t)}
	if code, out := run(t, 30*time.Second, "pcs", "restore", file, "--data-dir", r.dir, "--name", r.name, "--peer-addr", r.peer); code != 0 {
		t.Fatalf("restore: %s", out)
	}
	if code, out := run(t, 30*time.Second, "pcs", "restore", file, "--data-dir", r.dir, "--name", r.name, "--peer-addr", r.peer); code == 0 {
		t.Fatalf("a second restore into the same dir was accepted: %s", out)
	}
	r.start()
	t.Cleanup(func() {
		r.kill()
		if t.Failed() {
			t.Logf("---- log of %s ----\n%s", r.name, r.logTail())
		}
	})
	rc := (&procCluster{t: t, procs: []*proc{r}}).client()
	waitFor(t, 20*time.Second, "the restored node serving", func() bool {
		_, err := rc.Put(ctx, []byte("restored/alive"), []byte("1"))
		return err == nil
	})
	for i := 0; i < keys; i++ {
		got, err := rc.Get(ctx, []byte(fmt.Sprintf("r/%03d", i)))
		if err != nil || got.Kv == nil || string(got.Kv.Value) != fmt.Sprint(i) {
			t.Fatalf("restored key %d: %v %v", i, got, err)
		}
	}
	rst, err := rc.Status(ctx, "", false)
	if err != nil || rst.ClusterId == "" || rst.ClusterId == st.ClusterId {
		t.Fatalf("the restored cluster's id %q (the original's %q): %v", rst.GetClusterId(), st.ClusterId, err)
	}

	// Quorum lost for good: two of three members are gone. The survivor starts alone.
	survivor := pc.procs[0]
	for _, p := range pc.procs {
		p.kill()
	}
	survivor.args = append(survivor.args, "--force-new-cluster")
	survivor.start()
	sc := (&procCluster{t: t, procs: []*proc{survivor}}).client()
	waitFor(t, 30*time.Second, "the survivor serving alone", func() bool {
		_, err := sc.Put(ctx, []byte("forced/alive"), []byte("1"))
		return err == nil
	})
	for i := 0; i < keys; i++ {
		got, err := sc.Get(ctx, []byte(fmt.Sprintf("r/%03d", i)))
		if err != nil || got.Kv == nil || string(got.Kv.Value) != fmt.Sprint(i) {
			t.Fatalf("key %d after --force-new-cluster: %v %v", i, got, err)
		}
	}
	ml, err := sc.MemberList(ctx)
	if err != nil || len(ml.Members) != 1 {
		t.Fatalf("members after --force-new-cluster: %v %v", ml, err)
	}
	if sst, err := sc.Status(ctx, "", false); err != nil || sst.ClusterId != st.ClusterId {
		t.Fatalf("--force-new-cluster changed the cluster id: %v %v", sst, err)
	}
}
