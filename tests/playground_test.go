package tests

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postdb/pcs/api/pcspb"
	"github.com/postdb/pcs/client"
)

// TestPlayground: `pcs playground` brings up 3 PCS and 3 data nodes, a table created on it
// becomes public, and Ctrl-C (SIGINT) stops everything cleanly.
func TestPlayground(t *testing.T) {
	base := 10000 + rand.IntN(9000) // the playground uses base..base+102: below freeAddr's range and the ephemeral one
	var out lockedBuffer
	cmd := exec.Command(filepath.Join(binDir, "pcs"), "playground", "--dir", t.TempDir(), "--base-port", fmt.Sprint(base))
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()
	eps := []string{fmt.Sprintf("127.0.0.1:%d", base), fmt.Sprintf("127.0.0.1:%d", base+10), fmt.Sprintf("127.0.0.1:%d", base+20)}
	c, err := client.New(eps)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitFor(t, 30*time.Second, "three data nodes up", func() bool {
		resp, err := c.ListNodes(ctx)
		up := 0
		for _, n := range resp.GetNodes() {
			if n.State == "up" {
				up++
			}
		}
		return err == nil && up == 3
	})
	if _, err := c.CreateTable(ctx, &pcspb.Table{Name: "t", Replicas: 3, IsolationLabel: "zone",
		Columns: []*pcspb.ColumnDef{{Name: "k", Type: "int64"}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "table public", func() bool {
		tr, err := c.GetTable(ctx, "t")
		return err == nil && tr.Table.State == pcspb.TableState_TABLE_STATE_PUBLIC
	})
	if !strings.Contains(out.String(), "pcsctl --endpoints") {
		t.Fatalf("the playground did not print what to try:\n%s", out.String())
	}
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("playground exited with %v:\n%s", waitErr, out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("playground did not stop on SIGINT")
	}
}

// lockedBuffer is a bytes.Buffer safe to read while a process writes into it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
