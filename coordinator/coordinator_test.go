package coordinator

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func TestSubmitWatchComplete(t *testing.T) {
	h := startHarness(t, nil)
	ctx := ctxT(t)
	startFetcher(t, h, "f1", 4, nil)
	startFetcher(t, h, "f2", 4, nil)
	res, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "b1", Papers: specs("p", 50, 3)})
	if err != nil {
		t.Fatalf("SubmitBatch: %v", err)
	}
	if !res.GetCreated() || res.GetBatchId() != "b1" || res.GetBatch().GetTotalPapers() != 50 {
		t.Fatalf("unexpected response %v", res)
	}
	b := watchToEnd(t, h, "b1")
	if b.GetState() != pb.BatchState_BATCH_STATE_COMPLETED || b.GetCounts().GetSucceeded() != 50 {
		t.Fatalf("final batch %v", b)
	}
	p, err := h.api.GetPaper(ctx, &pb.GetPaperRequest{BatchId: "b1", PaperId: "p-7"})
	if err != nil {
		t.Fatalf("GetPaper: %v", err)
	}
	if p.GetPaper().GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED || p.GetPaper().GetSha256() != fakeSHA("p-7") || p.GetPaper().GetAttempts() != 1 {
		t.Fatalf("paper %v", p.GetPaper())
	}
	var all []*pb.Paper
	tok := ""
	for {
		lp, err := h.api.ListPapers(ctx, &pb.ListPapersRequest{BatchId: "b1", PageSize: 7, PageToken: tok})
		if err != nil {
			t.Fatalf("ListPapers: %v", err)
		}
		all = append(all, lp.GetPapers()...)
		if tok = lp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if len(all) != 50 || all[0].GetSpec().GetPaperId() != "p-0" || all[49].GetSpec().GetPaperId() != "p-49" {
		t.Fatalf("ListPapers returned %d papers", len(all))
	}
}

func holdAll(*fakeFetcher, *pb.Assign) {}

func TestIdempotentSubmitAndAlreadyExists(t *testing.T) {
	h := startHarness(t, nil)
	ctx := ctxT(t)
	req := &pb.SubmitBatchRequest{BatchId: "same", Papers: specs("x", 5, 1)}
	r1, err := h.api.SubmitBatch(ctx, req)
	if err != nil || !r1.GetCreated() {
		t.Fatalf("first submit: %v %v", r1, err)
	}
	r2, err := h.api.SubmitBatch(ctx, req)
	if err != nil || r2.GetCreated() || r2.GetBatchId() != "same" {
		t.Fatalf("retry: %v %v", r2, err)
	}
	other := &pb.SubmitBatchRequest{BatchId: "same", Papers: specs("y", 5, 1)}
	if _, err := h.api.SubmitBatch(ctx, other); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("different content: got %v, want AlreadyExists", err)
	}
	dup := &pb.SubmitBatchRequest{Papers: append(specs("z", 2, 1), specs("z", 1, 1)...)}
	if _, err := h.api.SubmitBatch(ctx, dup); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("duplicate ids: got %v, want InvalidArgument", err)
	}
	gen, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{Papers: specs("g", 1, 1)})
	if err != nil || gen.GetBatchId() == "" {
		t.Fatalf("generated id: %v %v", gen, err)
	}
	lb, err := h.api.ListBatches(ctx, &pb.ListBatchesRequest{PageSize: 1})
	if err != nil || len(lb.GetBatches()) != 1 || lb.GetBatches()[0].GetBatchId() != gen.GetBatchId() || lb.GetNextPageToken() == "" {
		t.Fatalf("ListBatches page 1: %v %v", lb, err)
	}
	lb2, err := h.api.ListBatches(ctx, &pb.ListBatchesRequest{PageSize: 10, PageToken: lb.GetNextPageToken()})
	if err != nil || len(lb2.GetBatches()) != 1 || lb2.GetBatches()[0].GetBatchId() != "same" || lb2.GetNextPageToken() != "" {
		t.Fatalf("ListBatches page 2: %v %v", lb2, err)
	}
	if _, err := h.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown batch: %v", err)
	}
}

func TestChunkedSubmit(t *testing.T) {
	h := startHarness(t, nil)
	ctx := ctxT(t)
	if _, err := h.api.CreateBatch(ctx, &pb.CreateBatchRequest{BatchId: "big"}); err != nil {
		t.Fatal(err)
	}
	cr, err := h.api.CreateBatch(ctx, &pb.CreateBatchRequest{BatchId: "big"})
	if err != nil || cr.GetCreated() {
		t.Fatalf("idempotent create: %v %v", cr, err)
	}
	const chunks, per = 20, 50
	for i := 0; i < chunks; i++ {
		r, err := h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "big", ChunkIndex: int64(i), Papers: specs(fmt.Sprintf("c%d", i), per, 4)})
		if err != nil || r.GetDuplicate() || r.GetTotalPapers() != int64((i+1)*per) {
			t.Fatalf("append %d: %v %v", i, r, err)
		}
	}
	r, err := h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "big", ChunkIndex: 3, Papers: specs("c3", per, 4)})
	if err != nil || !r.GetDuplicate() || r.GetTotalPapers() != chunks*per {
		t.Fatalf("duplicate chunk: %v %v", r, err)
	}
	if _, err := h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "big", ChunkIndex: 3, Papers: specs("c4", per, 4)}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("changed chunk: %v", err)
	}
	if _, err := h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "big", ChunkIndex: 99, Papers: specs("c4", 1, 4)}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("paper id repeated across chunks: %v", err)
	}
	if _, err := h.api.SealBatch(ctx, &pb.SealBatchRequest{BatchId: "big", ChunkCount: chunks + 1}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("seal with missing chunks: %v", err)
	}
	sr, err := h.api.SealBatch(ctx, &pb.SealBatchRequest{BatchId: "big", ChunkCount: chunks})
	if err != nil || sr.GetBatch().GetState() != pb.BatchState_BATCH_STATE_RUNNING {
		t.Fatalf("seal: %v %v", sr, err)
	}
	if _, err := h.api.SealBatch(ctx, &pb.SealBatchRequest{BatchId: "big", ChunkCount: chunks}); err != nil {
		t.Fatalf("idempotent seal: %v", err)
	}
	if _, err := h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "big", ChunkIndex: chunks, Papers: specs("late", 1, 1)}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("append after seal: %v", err)
	}
	startFetcher(t, h, "f", 16, nil)
	b := watchToEnd(t, h, "big")
	if b.GetState() != pb.BatchState_BATCH_STATE_COMPLETED || b.GetCounts().GetSucceeded() != chunks*per {
		t.Fatalf("final %v", b)
	}
}

func TestCancelBatch(t *testing.T) {
	h := startHarness(t, func(c *Config) {
		c.PerHostConcurrency = 1
	})
	ctx := ctxT(t)
	f := startFetcher(t, h, "f", 4, holdAll)
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "c", Papers: specs("p", 10, 2)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two assignments", func() bool { return f.assignCount() == 2 })
	watched := make(chan *pb.Batch, 1)
	go func() { watched <- watchToEnd(t, h, "c") }()
	cr, err := h.api.CancelBatch(ctx, &pb.CancelBatchRequest{BatchId: "c", Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if cr.GetBatch().GetState() != pb.BatchState_BATCH_STATE_CANCELLED || cr.GetBatch().GetCounts().GetCancelled() != 8 || cr.GetBatch().GetCounts().GetDownloading() != 2 {
		t.Fatalf("after cancel: %v", cr.GetBatch())
	}
	lp, err := h.api.ListPapers(ctx, &pb.ListPapersRequest{BatchId: "c", States: []pb.PaperState{pb.PaperState_PAPER_STATE_DOWNLOADING}, PageSize: 1})
	if err != nil || len(lp.GetPapers()) != 1 || lp.GetNextPageToken() == "" {
		t.Fatalf("filtered page 1: %v %v", lp, err)
	}
	lp2, err := h.api.ListPapers(ctx, &pb.ListPapersRequest{BatchId: "c", States: []pb.PaperState{pb.PaperState_PAPER_STATE_DOWNLOADING}, PageSize: 5, PageToken: lp.GetNextPageToken()})
	if err != nil || len(lp2.GetPapers()) != 1 || lp2.GetNextPageToken() != "" || lp2.GetPapers()[0].GetState() != pb.PaperState_PAPER_STATE_DOWNLOADING {
		t.Fatalf("filtered page 2: %v %v", lp2, err)
	}
	waitFor(t, "cancels", func() bool { f.mu.Lock(); defer f.mu.Unlock(); return len(f.cancels) == 2 })
	f.mu.Lock()
	as := append([]*pb.Assign(nil), f.assigns...)
	f.mu.Unlock()
	for _, a := range as {
		f.failWith(a, pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0)
	}
	waitFor(t, "acks", func() bool { return f.ackCount() == 2 })
	// The watch ends only now, with the settled batch: nothing downloading (issue 13, item 4).
	if b := <-watched; b.GetState() != pb.BatchState_BATCH_STATE_CANCELLED || b.GetCounts().GetDownloading() != 0 || b.GetCounts().GetCancelled() != 10 {
		t.Fatalf("watch ended with %v", b)
	}
	g, err := h.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "c"})
	if err != nil || g.GetBatch().GetCounts().GetCancelled() != 10 {
		t.Fatalf("final: %v %v", g, err)
	}
	p, err := h.api.GetPaper(ctx, &pb.GetPaperRequest{BatchId: "c", PaperId: "p-9"})
	if err != nil || p.GetPaper().GetState() != pb.PaperState_PAPER_STATE_CANCELLED || p.GetPaper().GetLastError() != "cancelled: test" {
		t.Fatalf("paper: %v %v", p, err)
	}
	if f.assignCount() != 2 {
		t.Fatalf("cancelled papers were assigned: %d", f.assignCount())
	}
}

func TestBrokenStreamReassigns(t *testing.T) {
	h := startHarness(t, nil)
	ctx := ctxT(t)
	a := startFetcher(t, h, "a", 8, holdAll)
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "r", Papers: specs("p", 5, 5)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "all assigned to a", func() bool { return a.assignCount() == 5 })
	a.kill()
	startFetcher(t, h, "b", 8, nil)
	bt := watchToEnd(t, h, "r")
	if bt.GetCounts().GetSucceeded() != 5 {
		t.Fatalf("final %v", bt)
	}
	p, err := h.api.GetPaper(ctx, &pb.GetPaperRequest{BatchId: "r", PaperId: "p-0"})
	if err != nil || p.GetPaper().GetAttempts() != 2 {
		t.Fatalf("paper: %v %v", p, err)
	}
}

func TestDrainingFetcherGetsAcksBeforeClose(t *testing.T) {
	h := startHarness(t, func(c *Config) {
		c.PerHostConcurrency = 4
	})
	ctx := ctxT(t)
	f := startFetcher(t, h, "d", 2, holdAll)
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "d", Papers: specs("p", 3, 1)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two assigns", func() bool { return f.assignCount() == 2 })
	f.mu.Lock()
	a0, a1 := f.assigns[0], f.assigns[1]
	f.mu.Unlock()
	f.sendEvent(a0, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{Url: a0.GetUrl()}}})
	if err := f.stream.Send(&pb.WorkRequest{Msg: &pb.WorkRequest_Draining{Draining: &pb.Draining{Reason: "test"}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cancel of the unstarted lease", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.cancels) == 1 && f.cancels[0] == a1.GetLeaseId()
	})
	f.complete(a0)
	if err := f.closeSend(); err != nil {
		t.Fatalf("stream end: %v", err)
	}
	if f.ackCount() != 1 {
		t.Fatalf("acks before close: %d", f.ackCount())
	}
	startFetcher(t, h, "e", 2, nil)
	if b := watchToEnd(t, h, "d"); b.GetCounts().GetSucceeded() != 3 {
		t.Fatalf("final %v", b)
	}
}

func TestHelloRequired(t *testing.T) {
	h := startHarness(t, nil)
	stream, err := h.gw.Work(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(creditsReq(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
	stream2, err := h.gw.Work(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	_ = stream2.Send(&pb.WorkRequest{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: "x", Slots: 0}}})
	if _, err := stream2.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("zero slots: got %v, want InvalidArgument", err)
	}
}
