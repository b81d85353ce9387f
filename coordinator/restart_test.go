package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gocloud.dev/blob/fileblob"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paperfetch/paperfetch/internal/clock"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// TestCrashRestartCompletesExactlyOnce kills the coordinator in the middle of a batch,
// restarts it on the same store and checks every paper completes exactly once.
func TestCrashRestartCompletesExactlyOnce(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg := func(c *Config) {
		c.DataDir, c.Clock, c.ReconnectGrace, c.LeaseTTL, c.PerHostConcurrency = dir, clk, 10*time.Second, time.Hour, 10
		c.CommitWindow = 0 // the fake clock does not advance by itself: a window would never end
	}
	h1 := startHarness(t, cfg)
	ctx := ctxT(t)
	var mu sync.Mutex
	completed := 0
	var held []*pb.Assign
	partial := func(f *fakeFetcher, a *pb.Assign) {
		mu.Lock()
		defer mu.Unlock()
		if completed < 10 {
			completed++
			f.complete(a)
			f.credit(1)
			return
		}
		held = append(held, a)
	}
	a := startFetcher(t, h1, "a", 8, partial)
	if _, err := h1.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "k", Papers: specs("p", 40, 8)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "10 acks and 8 held", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return a.ackCount() == 10 && len(held) == 8
	})
	h1.crash()
	a.kill()

	h2 := startHarness(t, cfg)
	g, err := h2.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if c := g.GetBatch().GetCounts(); c.GetSucceeded() != 10 || c.GetDownloading() != 8 || c.GetQueued() != 22 {
		t.Fatalf("after restart: %v", c)
	}
	// The fetcher comes back and re-announces half of its leases, then finishes them.
	var again []*pb.InFlightLease
	for _, x := range held[:4] {
		again = append(again, &pb.InFlightLease{LeaseId: x.GetLeaseId(), Attempt: x.GetAttempt(), BatchId: x.GetBatchId(), PaperId: x.GetPaperId()})
	}
	a2 := startFetcher(t, h2, "a", 1, completeNow, again...)
	for _, x := range held[:4] {
		a2.complete(x)
	}
	waitFor(t, "re-announced leases acked", func() bool { return a2.ackCount() >= 4 })
	// A stale result for an un-announced lease of the old process is acked but ignored later.
	b := startFetcher(t, h2, "b", 8, nil)
	waitFor(t, "queued papers done", func() bool {
		g, err := h2.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "k"})
		return err == nil && g.GetBatch().GetCounts().GetSucceeded() == 36
	})
	// The other 4 orphans are re-queued once the grace period ends.
	clk.Advance(11 * time.Second)
	final := watchToEnd(t, h2, "k")
	if c := final.GetCounts(); final.GetState() != pb.BatchState_BATCH_STATE_COMPLETED || c.GetSucceeded() != 40 {
		t.Fatalf("final: %v", final)
	}
	for _, x := range held[4:] {
		p, err := h2.api.GetPaper(ctx, &pb.GetPaperRequest{BatchId: "k", PaperId: x.GetPaperId()})
		if err != nil || p.GetPaper().GetAttempts() != 2 || p.GetPaper().GetSha256() != fakeSHA(x.GetPaperId()) {
			t.Fatalf("re-queued orphan: %v %v", p, err)
		}
	}
	lp, err := h2.api.ListPapers(ctx, &pb.ListPapersRequest{BatchId: "k", PageSize: 100})
	if err != nil || len(lp.GetPapers()) != 40 {
		t.Fatalf("ListPapers: %v", err)
	}
	for _, p := range lp.GetPapers() {
		if p.GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED || p.GetSha256() != fakeSHA(p.GetSpec().GetPaperId()) {
			t.Fatalf("paper %v", p)
		}
	}
	// A late result of a lease that was re-queued and re-assigned is dropped (but acked).
	acked := a2.ackCount()
	a2.complete(held[5])
	waitFor(t, "stale result acked", func() bool { return a2.ackCount() == acked+1 })
	if n := b.assignCount() + a2.assignCount(); n != 26 {
		t.Fatalf("%d assigns after the restart, want 26", n)
	}
	h2.stop()
	// A third start sees the same state.
	h3 := startHarness(t, cfg)
	g3, err := h3.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "k"})
	if err != nil || g3.GetBatch().GetState() != pb.BatchState_BATCH_STATE_COMPLETED || g3.GetBatch().GetCounts().GetSucceeded() != 40 {
		t.Fatalf("third start: %v %v", g3, err)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	c1, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c1.Close() }()
	start := time.Now()
	cfg.LockTimeout = 100 * time.Millisecond
	_, err = Open(cfg)
	if !errors.Is(err, ErrStoreLocked) || !strings.Contains(err.Error(), "another coordinator") {
		t.Fatalf("second Open: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("second Open took %v", time.Since(start))
	}
}

func TestInboxFullIsResourceExhausted(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir, cfg.InboxSize = t.TempDir(), 1
	c, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	a := &api{c: c}
	// Run is not running: the first call occupies the inbox, the second finds it full.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := a.ListBatches(ctx, &pb.ListBatchesRequest{})
		done <- err
	}()
	waitFor(t, "inbox occupied", func() bool { return len(c.inbox) == 1 })
	if _, err := a.ListBatches(context.Background(), &pb.ListBatchesRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("got %v, want ResourceExhausted", err)
	}
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("first call: %v", err)
	}
}

func TestReadPaper(t *testing.T) {
	blobDir := t.TempDir()
	bucket, err := fileblob.OpenBucket(blobDir, &fileblob.Options{Metadata: fileblob.MetadataDontWrite})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bucket.Close() }()
	content := []byte("%PDF-1.7\n" + strings.Repeat("x", 2<<20+123))
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	key := "sha256/" + sha[:2] + "/" + sha + ".pdf"
	if err := os.MkdirAll(filepath.Join(blobDir, "sha256", sha[:2]), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blobDir, filepath.FromSlash(key)), content, 0o644); err != nil {
		t.Fatal(err)
	}
	h := startHarness(t, func(c *Config) {
		c.Bucket = bucket
	})
	ctx := ctxT(t)
	startFetcher(t, h, "f", 2, func(f *fakeFetcher, a *pb.Assign) {
		f.sendEvent(a, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Completed{Completed: &pb.DownloadCompleted{
			Sha256: sha, Size: int64(len(content)), BlobKey: key, FinalUrl: a.GetUrl()}}})
		f.credit(1)
	})
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "rp", Papers: specs("doc", 1, 1)}); err != nil {
		t.Fatal(err)
	}
	watchToEnd(t, h, "rp")
	read := func(off int64) ([]byte, int) {
		rs, err := h.api.ReadPaper(ctx, &pb.ReadPaperRequest{BatchId: "rp", PaperId: "doc-0", Offset: off})
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		msgs := 0
		for {
			m, err := rs.Recv()
			if err != nil {
				if status.Code(err) != codes.OK && !errors.Is(err, context.Canceled) && err.Error() != "EOF" {
					t.Fatalf("recv: %v", err)
				}
				return got, msgs
			}
			if len(m.GetData()) > readChunkSize || m.GetSize() != int64(len(content)) || m.GetSha256() != sha || m.GetOffset() != off+int64(len(got)) {
				t.Fatalf("bad chunk: offset %d len %d", m.GetOffset(), len(m.GetData()))
			}
			got = append(got, m.GetData()...)
			msgs++
		}
	}
	got, msgs := read(0)
	if string(got) != string(content) || msgs != 3 {
		t.Fatalf("read %d bytes in %d messages", len(got), msgs)
	}
	got, _ = read(1 << 20)
	if string(got) != string(content[1<<20:]) {
		t.Fatalf("read from offset: %d bytes", len(got))
	}
	got, _ = read(1<<20 + 5)
	if string(got) != string(content[1<<20+5:]) {
		t.Fatalf("read from an unaligned offset: %d bytes", len(got))
	}
	// A damaged blob ends the stream with DATA_LOSS before the end of the file is sent
	// (issue 13, item 4): truncated, corrupted in place, or longer than recorded.
	path := filepath.Join(blobDir, filepath.FromSlash(key))
	corrupted := append([]byte(nil), content...)
	corrupted[len(corrupted)-10] ^= 1
	for name, data := range map[string][]byte{
		"truncated": content[:len(content)-1000],
		"corrupted": corrupted,
		"longer":    append(append([]byte(nil), content...), "tail"...),
	} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, off := range []int64{0, 2 << 20} {
			rs, err := h.api.ReadPaper(ctx, &pb.ReadPaperRequest{BatchId: "rp", PaperId: "doc-0", Offset: off})
			if err != nil {
				t.Fatal(err)
			}
			received := off
			for {
				m, err := rs.Recv()
				if err != nil {
					if status.Code(err) != codes.DataLoss {
						t.Fatalf("%s blob from %d: %v, want DataLoss", name, off, err)
					}
					break
				}
				received += int64(len(m.GetData()))
			}
			if received >= int64(len(content)) {
				t.Fatalf("%s blob from %d: the whole file was sent before DATA_LOSS", name, off)
			}
		}
	}
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "q", Papers: specs("other", 1, 1)}); err != nil {
		t.Fatal(err)
	}
	rs, err := h.api.ReadPaper(ctx, &pb.ReadPaperRequest{BatchId: "nope", PaperId: "doc-0"})
	if err == nil {
		_, err = rs.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown batch: %v", err)
	}
}

// TestGracefulStopKeepsLeases checks that a graceful stop (CloseStreams) leaves running leases
// in place, so that the fetcher can re-announce them to the next process, and that only that
// fetcher can: the same leases re-announced by another fetcher id are cancelled ("unknown
// lease": a lease id is bound to the id it was issued to) and stay orphaned (issue 10, attack 3).
func TestGracefulStopKeepsLeases(t *testing.T) {
	h2, held, again := restartWithHeldLeases(t)
	ctx := ctxT(t)
	g, err := h2.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "g"})
	if err != nil || g.GetBatch().GetCounts().GetDownloading() != 3 {
		t.Fatalf("after a graceful stop: %v %v", g, err)
	}
	rogue := startFetcher(t, h2, "rogue", 3, holdAll, again...)
	var ids []string
	for _, a := range held {
		ids = append(ids, a.GetLeaseId())
	}
	waitFor(t, "the rogue's re-announced leases to be cancelled", func() bool {
		rogue.mu.Lock()
		defer rogue.mu.Unlock()
		return len(rogue.cancels) == len(ids)
	})
	rogue.mu.Lock()
	cancelled := slices.Sorted(slices.Values(rogue.cancels))
	rogue.mu.Unlock()
	if slices.Sort(ids); !slices.Equal(cancelled, ids) {
		t.Fatalf("the rogue got cancels %v, want %v", cancelled, ids)
	}
	if g, err := h2.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "g"}); err != nil || g.GetBatch().GetCounts().GetDownloading() != 3 {
		t.Fatalf("after the rogue's hello: %v %v; want the 3 leases still waiting for their fetcher", g, err)
	}
	f2 := startFetcher(t, h2, "f", 1, holdAll, again...)
	for _, a := range held {
		f2.complete(a)
	}
	if b := watchToEnd(t, h2, "g"); b.GetCounts().GetSucceeded() != 3 {
		t.Fatalf("final %v", b)
	}
	if n := f2.assignCount() + rogue.assignCount(); n != 0 {
		t.Fatalf("%d papers assigned twice", n)
	}
}

// restartWithHeldLeases submits batch "g" of 3 papers to a coordinator whose fetcher "f" holds
// all three, stops the coordinator gracefully and kills the fetcher, and starts a new
// coordinator on the same store. It returns the new harness, the Assigns f held and the
// in-flight leases f would re-announce.
func restartWithHeldLeases(t *testing.T) (*harness, []*pb.Assign, []*pb.InFlightLease) {
	t.Helper()
	dir := t.TempDir()
	cfg := func(c *Config) { c.DataDir, c.PerHostConcurrency = dir, 10 }
	h1 := startHarness(t, cfg)
	f := startFetcher(t, h1, "f", 3, holdAll)
	if _, err := h1.api.SubmitBatch(ctxT(t), &pb.SubmitBatchRequest{BatchId: "g", Papers: specs("p", 3, 1)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "assigns", func() bool { return f.assignCount() == 3 })
	h1.stop()
	f.kill()
	var again []*pb.InFlightLease
	for _, a := range f.assigns {
		again = append(again, &pb.InFlightLease{LeaseId: a.GetLeaseId(), Attempt: a.GetAttempt()})
	}
	return startHarness(t, cfg), f.assigns, again
}
