package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// submitLongIDs submits a sealed batch of n papers with 200-byte ids, in chunks.
func submitLongIDs(t testing.TB, h *harness, id string, n int) {
	t.Helper()
	ctx := ctxT(t)
	if _, err := h.api.CreateBatch(ctx, &pb.CreateBatchRequest{BatchId: id}); err != nil {
		t.Fatal(err)
	}
	chunk := 0
	for start := 0; start < n; start += 5000 {
		ps := make([]*pb.PaperSpec, 0, 5000)
		for i := start; i < min(start+5000, n); i++ {
			ps = append(ps, &pb.PaperSpec{PaperId: fmt.Sprintf("%s-%06d-%s", id, i, strings.Repeat("x", 180)),
				Urls: []string{fmt.Sprintf("https://h%d.example/%d.pdf", i%4, i)}})
		}
		if _, err := h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: id, ChunkIndex: int64(chunk), Papers: ps}); err != nil {
			t.Fatal(err)
		}
		chunk++
	}
	if _, err := h.api.SealBatch(ctx, &pb.SealBatchRequest{BatchId: id, ChunkCount: int64(chunk)}); err != nil {
		t.Fatal(err)
	}
}

// abortAll confirms the cancellation of every lease f holds.
func abortAll(t testing.TB, f *fakeFetcher) {
	t.Helper()
	f.mu.Lock()
	as := append([]*pb.Assign(nil), f.assigns...)
	f.mu.Unlock()
	for _, a := range as {
		f.failWith(a, pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0)
	}
}

// A large update is split into messages a default client accepts, and after CancelBatch the
// watch ends with the settled batch (issue 10 item 8, issue 13 items 3 and 4).
func TestWatchSplitsLargeUpdatesAndEndsSettled(t *testing.T) {
	h := startHarness(t, func(c *Config) {
		c.NoSync = true
		c.PerHostConcurrency = 1
	})
	const n = 30_000 // the cancellation changes ~7 MB of paper updates at once
	submitLongIDs(t, h, "big", n)
	f := startFetcher(t, h, "f", 4, holdAll)
	waitFor(t, "four downloads", func() bool { return f.assignCount() == 4 })
	ws, err := h.api.WatchBatch(ctxT(t), &pb.WatchBatchRequest{BatchId: "big", IncludePapers: true})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := ws.Recv(); err != nil || !m.GetSnapshot() || len(m.GetActive()) != 4 {
		t.Fatalf("snapshot: %v %v", m, err)
	}
	if _, err := h.api.CancelBatch(ctxT(t), &pb.CancelBatchRequest{BatchId: "big"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cancels", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.cancels) == 4 })
	abortAll(t, f)
	states := map[string]pb.PaperState{}
	var last *pb.WatchBatchResponse
	parts := 0
	for {
		m, err := ws.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("recv after %d messages: %v", parts, err)
		}
		if sz := proto.Size(m); sz > maxWatchMessageBytes {
			t.Fatalf("message of %d bytes", sz)
		}
		if m.GetMore() {
			parts++
			if m.GetBatch() != nil || len(m.GetActive()) > 0 {
				t.Fatal("a non-final part carries the batch")
			}
		}
		for _, u := range m.GetPaperUpdates() {
			states[u.GetPaperId()] = u.GetState()
		}
		last = m
	}
	if parts < 5 {
		t.Fatalf("the cancellation was sent in %d parts", parts+1)
	}
	b := last.GetBatch()
	if last.GetMore() || b.GetState() != pb.BatchState_BATCH_STATE_CANCELLED || b.GetCounts().GetDownloading() != 0 ||
		b.GetCounts().GetCancelled() != n || len(last.GetActive()) != 0 {
		t.Fatalf("last message: more=%v batch=%v active=%d", last.GetMore(), b, len(last.GetActive()))
	}
	if len(states) != n {
		t.Fatalf("updates for %d papers, want %d", len(states), n)
	}
	for id, s := range states {
		if s != pb.PaperState_PAPER_STATE_CANCELLED {
			t.Fatalf("paper %s ended %v", id, s)
		}
	}
}

func TestWatcherLimitsPerBatchAndPeer(t *testing.T) {
	h := startHarness(t, func(c *Config) {
		c.NoSync = true
		c.WatchersPerBatch = 3
		c.WatchersPerPeer = 5
	})
	ctx := ctxT(t)
	for _, id := range []string{"a", "b"} {
		if _, err := h.api.CreateBatch(ctx, &pb.CreateBatchRequest{BatchId: id}); err != nil {
			t.Fatal(err)
		}
	}
	open := func(ctx context.Context, id string) error {
		ws, err := h.api.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: id, IncludePapers: true})
		if err == nil {
			_, err = ws.Recv()
		}
		return err
	}
	first, cancelFirst := context.WithCancel(ctx)
	defer cancelFirst()
	if err := open(first, "a"); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := open(ctx, "a"); err != nil {
			t.Fatalf("watcher %d of a: %v", i+2, err)
		}
	}
	if err := open(ctx, "a"); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "batch") {
		t.Fatalf("4th watcher of a: %v", err)
	}
	for i := range 2 {
		if err := open(ctx, "b"); err != nil {
			t.Fatalf("watcher %d of b: %v", i+1, err)
		}
	}
	if err := open(ctx, "b"); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "client") {
		t.Fatalf("6th watcher of the client: %v", err)
	}
	// A watcher that goes away gives its slot back.
	cancelFirst()
	waitFor(t, "a freed slot", func() bool { return open(ctx, "a") == nil })
}

// stalledWatchers opens n include_papers watchers that never read on conn's coordinator and
// returns the coordinator's side of them.
func stalledWatchers(t testing.TB, h *harness, conn *grpc.ClientConn, id string, n int) []*watcher {
	t.Helper()
	var mu sync.Mutex
	var ws []*watcher
	h.c.onWatch = func(w *watcher) { mu.Lock(); ws = append(ws, w); mu.Unlock() }
	api := pb.NewCoordinatorServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for range n {
		if _, err := api.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: id, IncludePapers: true}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "watchers registered", func() bool { mu.Lock(); defer mu.Unlock(); return len(ws) == n })
	return ws
}

// smallWindowConn is a client connection without BDP window growth (64 KiB per stream), so a
// stalled watcher's client buffers little and the server's share is what a benchmark measures.
func smallWindowConn(t testing.TB, h *harness) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return h.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// cancelUnderStalledWatchers cancels batch "big", confirms the aborts of f's four downloads and
// waits until every stalled watcher got the whole cancellation and is stuck sending its first
// part.
func cancelUnderStalledWatchers(t testing.TB, h *harness, f *fakeFetcher, ws []*watcher) {
	t.Helper()
	if _, err := h.api.CancelBatch(ctxT(t), &pb.CancelBatchRequest{BatchId: "big"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cancels", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.cancels) == 4 })
	abortAll(t, f)
	waitFor(t, "watchers blocked in Send", func() bool {
		for _, w := range ws {
			if w.sending.Load() == 0 {
				return false
			}
		}
		return true
	})
}

// Stalled watchers of a big batch that is cancelled hold a bounded amount each (issue 10,
// item 8: each used to hold the whole update and its encoded copy, ~37 MB for 50,000 papers).
func TestStalledWatchersStayBounded(t *testing.T) {
	h := startHarness(t, func(c *Config) {
		c.NoSync = true
		c.PerHostConcurrency = 1
	})
	const n = 30_000
	submitLongIDs(t, h, "big", n)
	f := startFetcher(t, h, "f", 4, holdAll)
	waitFor(t, "four downloads", func() bool { return f.assignCount() == 4 })
	ws := stalledWatchers(t, h, smallWindowConn(t, h), "big", 10)
	cancelUnderStalledWatchers(t, h, f, ws)
	for i, w := range ws {
		if hw := w.highWater.Load(); hw > watcherMemoryBound || hw < 4*n {
			t.Fatalf("watcher %d held %d bytes at most; bound %d", i, hw, watcherMemoryBound)
		}
	}
}

// BenchmarkStalledWatchers measures the coordinator's heap with 100 stalled include_papers
// watchers on a 50,000-paper batch that is cancelled (the attack of issue 10, item 8).
func BenchmarkStalledWatchers(b *testing.B) {
	for range b.N {
		h := startHarness(b, func(c *Config) {
			c.NoSync = true
			c.PerHostConcurrency = 1
			c.WatchersPerBatch = 100
			c.WatchersPerPeer = 100
		})
		const n = 50_000
		submitLongIDs(b, h, "big", n)
		f := startFetcher(b, h, "f", 4, holdAll)
		waitFor(b, "four downloads", func() bool { return f.assignCount() == 4 })
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		ws := stalledWatchers(b, h, smallWindowConn(b, h), "big", 100)
		cancelUnderStalledWatchers(b, h, f, ws)
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		var maxHW int64
		for _, w := range ws {
			maxHW = max(maxHW, w.highWater.Load())
		}
		grown := float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / (1 << 20)
		b.ReportMetric(grown, "heap-MB")
		b.ReportMetric(grown/100, "heap-MB/watcher")
		b.ReportMetric(float64(maxHW)/(1<<20), "max-queued-MB/watcher")
		h.stop()
	}
}
