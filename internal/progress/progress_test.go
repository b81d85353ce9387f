package progress

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/clock"
	"github.com/paperfetch/paperfetch/internal/syncbuf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// lineWriter sends every write on a channel, so tests wait for output without sleeping.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

func next(t *testing.T, w lineWriter) string {
	t.Helper()
	select {
	case s := <-w:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no output")
		return ""
	}
}

func waitWaiters(t *testing.T, c *clock.Fake, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := c.WaitForWaiters(ctx, n); err != nil {
		t.Fatalf("ticker never armed: %v", err)
	}
}

func batch(total, ok, failed, cached, downloading, bytes int64) *pb.Batch {
	return &pb.Batch{BatchId: "b1", State: pb.BatchState_BATCH_STATE_RUNNING, TotalPapers: total, BytesDownloaded: bytes,
		Counts: &pb.PaperCounts{Succeeded: ok, Failed: failed, Cached: cached, Downloading: downloading, Queued: total - ok - failed - downloading}}
}

var plainPattern = regexp.MustCompile(`^progress done=(\d+)/(\d+) succeeded=(\d+) failed=(\d+) cached=(\d+) active=(\d+) bytes=\S+ rate=\S+/s elapsed=\S+ eta=\S+\n$`)

func TestPlain(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	out := make(lineWriter, 10)
	d := New(Options{Mode: ModePlain, Out: out, Clock: clk, Total: 10})
	d.Update(&pb.WatchBatchResponse{Snapshot: true, Batch: batch(4, 0, 0, 0, 0, 0)})
	waitWaiters(t, clk, 1)
	clk.Advance(time.Second)
	d.Update(&pb.WatchBatchResponse{Batch: batch(10, 3, 1, 1, 2, 3<<20), PaperUpdates: []*pb.PaperUpdate{
		{PaperId: "p 1", State: pb.PaperState_PAPER_STATE_FAILED, Attempts: 2, LastError: "HTTP 404", LastFailureReason: pb.FailureReason_FAILURE_REASON_NOT_FOUND},
		{PaperId: "p2", State: pb.PaperState_PAPER_STATE_SUCCEEDED, Size: 10},
	}})
	if got := next(t, out); got != "failed paper=\"p 1\" reason=not_found attempts=2 error=\"HTTP 404\"\n" {
		t.Fatalf("failure line %q", got)
	}
	clk.Advance(time.Second)
	line := next(t, out)
	m := plainPattern.FindStringSubmatch(line)
	if m == nil || m[1] != "4" || m[2] != "10" || m[3] != "3" || m[4] != "1" || m[6] != "2" {
		t.Fatalf("progress line %q", line)
	}
	if !strings.Contains(line, "bytes=3.0MiB") || !strings.Contains(line, "rate=3.0MiB/s") || !strings.Contains(line, "elapsed=2.0s") || !strings.Contains(line, "eta=") {
		t.Fatalf("progress line %q", line)
	}
	d.Close()
	if line := next(t, out); !plainPattern.MatchString(line) {
		t.Fatalf("final line %q", line)
	}
}

func TestJSON(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	out := make(lineWriter, 10)
	d := New(Options{Mode: ModeJSON, JSONOut: out, Out: os.Stderr, Clock: clk})
	d.Update(&pb.WatchBatchResponse{Batch: batch(2, 1, 0, 1, 0, 100), PaperUpdates: []*pb.PaperUpdate{
		{PaperId: "p2", State: pb.PaperState_PAPER_STATE_SUCCEEDED, Size: 100, Cached: true, Attempts: 0},
		{PaperId: "p3", State: pb.PaperState_PAPER_STATE_DOWNLOADING},
	}})
	var rec map[string]any
	if err := json.Unmarshal([]byte(next(t, out)), &rec); err != nil || rec["type"] != "paper" || rec["id"] != "p2" || rec["state"] != "succeeded" || rec["cached"] != true {
		t.Fatalf("paper record %v %v", rec, err)
	}
	d.Message("hello")
	if err := json.Unmarshal([]byte(next(t, out)), &rec); err != nil || rec["type"] != "message" || rec["message"] != "hello" {
		t.Fatalf("message record %v %v", rec, err)
	}
	d.Close()
	rec = nil
	if err := json.Unmarshal([]byte(next(t, out)), &rec); err != nil || rec["type"] != "progress" || rec["done"] != 1.0 || rec["total"] != 2.0 {
		t.Fatalf("progress record %v %v", rec, err)
	}
}

func TestQuiet(t *testing.T) {
	var buf bytes.Buffer
	d := New(Options{Mode: ModeQuiet, Out: &buf})
	d.Update(&pb.WatchBatchResponse{Batch: batch(1, 0, 1, 0, 0, 0), PaperUpdates: []*pb.PaperUpdate{
		{PaperId: "x", State: pb.PaperState_PAPER_STATE_FAILED, LastError: "gone", LastFailureReason: pb.FailureReason_FAILURE_REASON_GONE, Attempts: 1}}})
	d.Close()
	if got := buf.String(); got != "failed x (gone, 1 attempt): gone\n" {
		t.Fatalf("%q", got)
	}
}

func TestTerminalRendersToWriter(t *testing.T) {
	var buf syncbuf.Buffer
	d := New(Options{Mode: ModeTerminal, Out: &buf, Total: 3})
	d.Update(&pb.WatchBatchResponse{Batch: batch(3, 1, 0, 0, 1, 2048), Active: []*pb.ActiveDownload{{PaperId: "2301.00001", Bytes: 1024, Total: 4096}}})
	d.Message("a message")
	d.Update(&pb.WatchBatchResponse{Batch: batch(3, 3, 0, 0, 0, 8192)})
	d.Close()
	out := buf.String()
	for _, want := range []string{"papers 3/3", "a message", "8.0 KiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestFormat(t *testing.T) {
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := FormatBytes(in); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[time.Duration]string{850 * time.Millisecond: "850ms", 12 * time.Second: "12.0s", 184 * time.Second: "3m04s", 2*time.Hour + 5*time.Minute: "2h05m"} {
		if got := FormatDuration(in); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", in, got, want)
		}
	}
	for _, s := range []string{"succeeded", "DONE", "failed", "running", "retry_wait", "canceled"} {
		if _, err := ParseState(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseState("nope"); err == nil {
		t.Error("ParseState(nope) succeeded")
	}
}

// The terminal display never holds up its caller: updates that start and end many downloads
// (papers of a few KiB finish hundreds a second) while mpb renders return promptly. Before,
// Update held the display's lock while adding a bar (which waits for mpb's render loop) and
// the render loop's decorator waited for that lock: the whole `get` hung.
func TestTerminalUpdatesNeverWaitOnRendering(t *testing.T) {
	var buf syncbuf.Buffer
	d := New(Options{Mode: ModeTerminal, Out: &buf, Total: 100_000})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			active := make([]*pb.ActiveDownload, 16)
			for j := range active {
				active[j] = &pb.ActiveDownload{PaperId: fmt.Sprintf("p%d-%d", i, j), Bytes: 1024, Total: 20480}
			}
			d.Update(&pb.WatchBatchResponse{Batch: batch(100_000, int64(16*i), 0, 0, 16, int64(i)<<14), Active: active})
		}
	}()
	bound := time.NewTimer(60 * time.Second) // a failure bound, not a synchronisation
	defer bound.Stop()
	select {
	case <-done:
	case <-bound.C:
		t.Fatal("2,000 updates did not return within 60 s: the display is wedged")
	}
	d.Close()
	if out := buf.String(); !strings.Contains(out, "papers ") {
		t.Errorf("nothing rendered:\n%.500s", out)
	}
}
