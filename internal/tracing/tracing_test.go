package tracing

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRatioAndFileExporter: at ratio 0 a root span is not recorded, at 1 it is, and a child of a
// sampled parent is recorded at any ratio; spans go to DIR/SERVICE-PID.jsonl, one per line.
func TestRatioAndFileExporter(t *testing.T) {
	ctx := context.Background()
	tr := New("unit")
	defer tr.Shutdown(ctx)
	dir := t.TempDir()
	if err := tr.SetExporter(ctx, "file:"+dir); err != nil {
		t.Fatal(err)
	}
	if tr.Exporter() != "file:"+dir {
		t.Fatalf("exporter %q", tr.Exporter())
	}
	_, off := tr.Tracer().Start(ctx, "off")
	if off.IsRecording() {
		t.Fatal("a root span was recorded at ratio 0")
	}
	off.End()
	tr.SetRatio(1)
	pctx, parent := tr.Tracer().Start(ctx, "parent")
	tr.SetRatio(0)
	_, child := tr.Tracer().Start(pctx, "child")
	if !parent.IsRecording() || !child.IsRecording() {
		t.Fatal("a sampled parent's child was not recorded at ratio 0")
	}
	child.End()
	parent.End()
	if err := tr.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "unit-*.jsonl"))
	if len(files) != 1 {
		t.Fatalf("files %v", files)
	}
	b, _ := os.ReadFile(files[0])
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || !strings.Contains(string(b), `"parent"`) || !strings.Contains(string(b), `"child"`) || strings.Contains(string(b), `"off"`) {
		t.Fatalf("exported:\n%s", b)
	}
	if err := tr.SetExporter(ctx, ""); err != nil || tr.Exporter() != "" {
		t.Fatalf("exporter off: %q %v", tr.Exporter(), err)
	}
	tr.SetRatio(7)
	if tr.Ratio() != 1 {
		t.Fatalf("ratio 7 is kept as %v", tr.Ratio())
	}
}

func TestValidateTarget(t *testing.T) {
	for target, ok := range map[string]bool{"": true, "file:/tmp/x": true, "collector:4317": true, "otlp://c:4317": true,
		"file:": false, "nonsense": false, "http://c:4317/v1": false} {
		if err := ValidateTarget(target); (err == nil) != ok || err != nil && !errors.Is(err, ErrBadTarget) {
			t.Errorf("ValidateTarget(%q) = %v", target, err)
		}
	}
}
