package coordinator

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func TestWatchIncludePapersAndSlowWatchers(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := startHarness(t, func(c *Config) {
		c.WatchInterval = 5 * time.Millisecond
		c.Registerer = reg
		c.PerHostConcurrency = 1
		c.WatchersPerPeer = 64
	})
	ctx := ctxT(t)
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "w", Papers: specs("p", 60, 3)}); err != nil {
		t.Fatal(err)
	}
	// Many watchers that never read: they must not slow the loop down.
	slowCtx, cancelSlow := context.WithCancel(context.Background())
	defer cancelSlow()
	for i := 0; i < 50; i++ {
		if _, err := h.api.WatchBatch(slowCtx, &pb.WatchBatchRequest{BatchId: "w", IncludePapers: true}); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := h.api.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: "w", IncludePapers: true})
	if err != nil {
		t.Fatal(err)
	}
	first, err := ws.Recv()
	if err != nil || !first.GetSnapshot() || first.GetBatch().GetTotalPapers() != 60 {
		t.Fatalf("snapshot: %v %v", first, err)
	}
	startFetcher(t, h, "f", 4, nil)
	states := map[string]pb.PaperState{}
	succeeded := map[string]*pb.PaperUpdate{}
	var last *pb.WatchBatchResponse
	for {
		m, err := ws.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.GetSnapshot() {
			t.Fatal("second snapshot")
		}
		for _, u := range m.GetPaperUpdates() {
			states[u.GetPaperId()] = u.GetState()
			if u.GetState() == pb.PaperState_PAPER_STATE_SUCCEEDED {
				succeeded[u.GetPaperId()] = u
			}
		}
		last = m
	}
	if last.GetBatch().GetState() != pb.BatchState_BATCH_STATE_COMPLETED {
		t.Fatalf("last message %v", last.GetBatch())
	}
	if len(states) != 60 {
		t.Fatalf("updates for %d papers", len(states))
	}
	for id, s := range states {
		if s != pb.PaperState_PAPER_STATE_SUCCEEDED {
			t.Fatalf("paper %s last update %v", id, s)
		}
	}
	// A SUCCEEDED update carries what GetPaper would say about the stored PDF.
	for id, u := range succeeded {
		got, err := h.api.GetPaper(ctx, &pb.GetPaperRequest{BatchId: "w", PaperId: id})
		if err != nil {
			t.Fatal(err)
		}
		p := got.GetPaper()
		if u.GetSha256() == "" || u.GetSha256() != p.GetSha256() || u.GetBlobKey() != p.GetBlobKey() || u.GetSize() != p.GetSize() ||
			u.GetUrl() == "" || u.GetUrl() != p.GetFinalUrl() || u.GetSource() == "" || u.GetSource() != p.GetSource() {
			t.Fatalf("update %v, paper %v", u, p)
		}
	}
	// A watch of a finished batch is a single (snapshot, terminal) message.
	if b := watchToEnd(t, h, "w"); b.GetState() != pb.BatchState_BATCH_STATE_COMPLETED {
		t.Fatalf("late watch %v", b)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	all := strings.Join(names, " ")
	for _, want := range []string{"paperfetch_coordinator_papers", "paperfetch_coordinator_store_commit_seconds",
		"paperfetch_coordinator_inbox_depth", "paperfetch_coordinator_connected_fetchers", "paperfetch_coordinator_download_size_bytes"} {
		if !strings.Contains(all, want) {
			t.Errorf("metric %s missing from %s", want, all)
		}
	}
}

func TestWatcherBacklogOverflow(t *testing.T) {
	w := newWatcher(0, true)
	idxs := make([]uint32, maxWatcherBacklog+1)
	for i := range idxs {
		idxs[i] = uint32(i)
	}
	if w.post(false, &pb.Batch{}, idxs[:10], nil, false) != true {
		t.Fatal("small backlog refused")
	}
	if w.post(false, &pb.Batch{}, idxs, nil, false) {
		t.Fatal("overflow not reported")
	}
	if u := w.take(); !u.overflow {
		t.Fatal("overflow not in the mailbox")
	}
}
