package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"pgregory.net/rapid"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFileName(t *testing.T) {
	for id, want := range map[string]string{
		"2301.00001":         "2301.00001",
		"2301.00001v2":       "2301.00001v2",
		"hep-th/9901001":     "hep-th_9901001",
		"math.GT/0309136":    "math.GT_0309136",
		"attention-1a2b3c4d": "attention-1a2b3c4d",
	} {
		if got := FileName(id); got != want {
			t.Errorf("FileName(%q) = %q, want %q", id, got, want)
		}
	}
	for _, id := range []string{"hep-th_9901001", "a/b", "a b", "../etc/passwd", ".hidden", "-rf", "x-0123456789", "10.1000/xyz", "日本語", strings.Repeat("a", 300)} {
		got := FileName(id)
		if got == id || strings.ContainsAny(got, "/\\ ") || strings.HasPrefix(got, ".") || strings.HasPrefix(got, "-") || len(got) > maxNameBytes {
			t.Errorf("FileName(%q) = %q: not made safe", id, got)
		}
	}
}

// TestFileNameInjective checks that distinct ids never share a file name, and names are safe.
func TestFileNameInjective(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		gen := rapid.OneOf(rapid.String(), rapid.StringMatching(`[a-z0-9._/-]{1,20}`), rapid.StringMatching(`[a-z-]{2,6}[/_][0-9]{7}`))
		a, b := gen.Draw(t, "a"), gen.Draw(t, "b")
		if a == "" || b == "" {
			return
		}
		fa, fb := FileName(a), FileName(b)
		if a != b && fa == fb {
			t.Fatalf("%q and %q both map to %q", a, b, fa)
		}
		if fa == "" || strings.ContainsAny(fa, "/\\\x00") || fa == "." || fa == ".." || strings.HasPrefix(fa, ".") || len(fa) > maxNameBytes {
			t.Fatalf("unsafe name %q for %q", fa, a)
		}
	})
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "1KiB": 1024, "1k": 1024, "100MB": 100e6, "512MiB": 512 << 20, "1.5G": 3 << 29, "2 GiB": 2 << 30} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "12XB", "MB", "1e400"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) succeeded", in)
		}
	}
	if got := formatSize(512 << 20); got != "512MiB" {
		t.Errorf("formatSize = %q", got)
	}
}

func TestParseFlagsInterleaved(t *testing.T) {
	a := &app{env: Env{Stdout: &bytes.Buffer{}, LookupEnv: func(k string) (string, bool) {
		if k == "PAPERFETCH_NAME" {
			return "from-env", true
		}
		return "", false
	}}}
	fs := a.newFlagSet("x", "", "")
	n := fs.Int("n", 1, "")
	name := fs.String("name", "", "")
	other := fs.String("other", "default", "")
	pos, err := a.parseFlags(fs, []string{"a.txt", "--n", "3", "b.txt", "--", "--other", "-"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(pos, ",") != "a.txt,b.txt,--other,-" || *n != 3 || *name != "from-env" || *other != "default" {
		t.Fatalf("pos %q n %d name %q other %q", pos, *n, *name, *other)
	}
	if _, err := a.parseFlags(a.newFlagSet("y", "", ""), []string{"--nope"}); err == nil || !strings.Contains(err.Error(), "--nope") {
		t.Fatalf("unknown flag: %v", err)
	}
}

func TestReportAndSummary(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "r.json")
	rw, err := newReportWriter(path, "b1", nil, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	sum := &summary{BatchID: "b1", State: "completed"}
	papers := []*pb.Paper{
		{Spec: &pb.PaperSpec{PaperId: "a"}, State: pb.PaperState_PAPER_STATE_SUCCEEDED, Size: 10, Cached: true},
		{Spec: &pb.PaperSpec{PaperId: "b"}, State: pb.PaperState_PAPER_STATE_FAILED, LastFailureReason: pb.FailureReason_FAILURE_REASON_NOT_PDF},
		{Spec: &pb.PaperSpec{PaperId: "c"}, State: pb.PaperState_PAPER_STATE_FAILED, LastFailureReason: pb.FailureReason_FAILURE_REASON_NOT_PDF},
	}
	for _, p := range papers {
		sum.add(p)
		rw.add(reportEntry{ID: p.GetSpec().GetPaperId(), State: "x"})
	}
	sum.BytesDownloaded = 2048
	sum.finish(2 * time.Second)
	if err := rw.close(sum); err != nil {
		t.Fatal(err)
	}
	var got struct {
		BatchID string        `json:"batch_id"`
		Papers  []reportEntry `json:"papers"`
		Summary summary       `json:"summary"`
	}
	data, _ := os.ReadFile(path)
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if got.BatchID != "b1" || len(got.Papers) != 3 || got.Summary.Failed != 2 || got.Summary.FailedByReason["not_pdf"] != 2 || got.Summary.BytesPerSecond != 1024 {
		t.Fatalf("%+v", got)
	}
	var buf bytes.Buffer
	sum.print(&buf)
	for _, want := range []string{"Batch b1: completed", "succeeded   1  (1 cached)", "failed      2  (not_pdf 2)", "1.0 KiB/s"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, buf.String())
		}
	}
}

func TestMainDispatch(t *testing.T) {
	var out, errOut bytes.Buffer
	env := Env{Stdout: &out, Stderr: &errOut}
	if code := Main(context.Background(), []string{"version"}, env); code != ExitOK || !strings.HasPrefix(out.String(), "paperfetch ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	if code := Main(context.Background(), []string{"help", "pull"}, env); code != ExitOK || !strings.Contains(out.String(), "--parallel N") {
		t.Fatalf("help pull: %d %q", code, out.String())
	}
	if code := Main(context.Background(), []string{"nope"}, env); code != ExitUsage {
		t.Fatalf("unknown command: %d", code)
	}
}
