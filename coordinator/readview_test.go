package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// heldKV is a kvStore whose commits can be held: while armed, update announces itself on
// entered and waits for release before committing.
type heldKV struct {
	kvStore
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (k *heldKV) update(fn func(kvTx) error) error {
	if k.armed.Load() {
		k.entered <- struct{}{}
		<-k.release
	}
	return k.kvStore.update(fn)
}

// Reads are answered while another caller's commit is in progress (GetBatch from the
// published views, the loop's reads while it waits for the commit), show only committed state,
// and a caller sees its own write as soon as the write is acknowledged. Writes that arrive
// during the commit wait for it.
func TestReadsDoNotWaitForOtherCallersCommit(t *testing.T) {
	held := &heldKV{entered: make(chan struct{}), release: make(chan struct{})}
	var c *Coordinator
	h := startHarnessWith(t, nil, func(co *Coordinator) {
		c = co
		held.kvStore = c.st.kv
		c.st.kv = held
	})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(held.release) }) }
	t.Cleanup(release) // before the harness stops: a failed test must not leave the loop held
	ctx := ctxT(t)
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "a", Papers: specs("a", 2, 1)}); err != nil {
		t.Fatal(err)
	}
	held.armed.Store(true)
	type submitted struct {
		res *pb.SubmitBatchResponse
		err error
	}
	done := make(chan submitted, 1)
	go func() {
		res, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "b", Papers: specs("b", 1, 1)})
		done <- submitted{res, err}
	}()
	<-held.entered // the loop is committing batch b (and waits)
	held.armed.Store(false)

	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// Taken from the inbox during the commit, but applied after it: a write.
	cancelA := &cancelBatchReq{id: "a", reply: make(chan batchResult, 1)}
	if err := c.post(cancelA); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the loop to take the call", func() bool { return len(c.inbox) == 0 })

	got, err := h.api.GetBatch(rctx, &pb.GetBatchRequest{BatchId: "a"})
	if err != nil {
		t.Fatalf("GetBatch of a committed batch while another commit is held: %v", err)
	}
	if got.GetBatch().GetCounts().GetQueued() != 2 || got.GetBatch().GetState() != pb.BatchState_BATCH_STATE_RUNNING {
		t.Fatalf("batch a: %v", got.GetBatch())
	}
	// b is applied but not durable: neither its submitter nor anyone else sees it yet.
	if _, err := h.api.GetBatch(rctx, &pb.GetBatchRequest{BatchId: "b"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetBatch of a batch whose commit is in progress: %v, want NotFound", err)
	}
	lb, err := h.api.ListBatches(rctx, &pb.ListBatchesRequest{})
	if err != nil || len(lb.GetBatches()) != 1 || lb.GetBatches()[0].GetBatchId() != "a" {
		t.Fatalf("ListBatches during the commit: %v %v", lb, err)
	}
	if p, err := h.api.GetPaper(rctx, &pb.GetPaperRequest{BatchId: "a", PaperId: "a-1"}); err != nil || p.GetPaper().GetState() != pb.PaperState_PAPER_STATE_QUEUED {
		t.Fatalf("GetPaper during the commit: %v %v", p, err)
	}
	if _, err := h.api.GetPaper(rctx, &pb.GetPaperRequest{BatchId: "b", PaperId: "b-0"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetPaper of a paper whose commit is in progress: %v, want NotFound", err)
	}
	if lp, err := h.api.ListPapers(rctx, &pb.ListPapersRequest{BatchId: "a"}); err != nil || len(lp.GetPapers()) != 2 {
		t.Fatalf("ListPapers during the commit: %v %v", lp, err)
	}
	if hs, err := h.api.ListHosts(rctx, &pb.ListHostsRequest{}); err != nil || len(hs.GetHosts()) != 1 {
		t.Fatalf("ListHosts during the commit: %v %v", hs, err)
	}
	if _, err := h.api.ListFetchers(rctx, &pb.ListFetchersRequest{}); err != nil {
		t.Fatalf("ListFetchers during the commit: %v", err)
	}
	select {
	case s := <-done:
		t.Fatalf("SubmitBatch returned before its commit: %v %v", s.res, s.err)
	case r := <-cancelA.reply:
		t.Fatalf("CancelBatch returned during another commit: %+v", r)
	default:
	}
	release()
	s := <-done
	if s.err != nil || !s.res.GetCreated() {
		t.Fatalf("SubmitBatch: %v %v", s.res, s.err)
	}
	// Acknowledged: visible to the next read at once (no waiting, no retry).
	if got, err := h.api.GetBatch(rctx, &pb.GetBatchRequest{BatchId: "b"}); err != nil || got.GetBatch().GetTotalPapers() != 1 {
		t.Fatalf("GetBatch after the acknowledgement: %v %v", got, err)
	}
	if r := <-cancelA.reply; r.err != nil {
		t.Fatalf("CancelBatch: %v", r.err)
	}
	if got, err := h.api.GetBatch(rctx, &pb.GetBatchRequest{BatchId: "a"}); err != nil || got.GetBatch().GetState() != pb.BatchState_BATCH_STATE_CANCELLED {
		t.Fatalf("GetBatch after CancelBatch: %v %v", got, err)
	}
}

// A ListPapers filtered by state, answered while the commit of a change to the batch's papers
// is in progress, filters on the committed states.
func TestFilteredListPapersDuringCommit(t *testing.T) {
	held := &heldKV{entered: make(chan struct{}), release: make(chan struct{})}
	h := startHarnessWith(t, nil, func(c *Coordinator) {
		held.kvStore = c.st.kv
		c.st.kv = held
	})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(held.release) }) }
	t.Cleanup(release)
	ctx := ctxT(t)
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "a", Papers: specs("a", 3, 1)}); err != nil {
		t.Fatal(err)
	}
	held.armed.Store(true)
	cancelled := make(chan error, 1)
	go func() {
		_, err := h.api.CancelBatch(ctx, &pb.CancelBatchRequest{BatchId: "a"})
		cancelled <- err
	}()
	<-held.entered // a's papers are CANCELLED in memory, QUEUED as committed
	held.armed.Store(false)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	list := func(s pb.PaperState) []*pb.Paper {
		t.Helper()
		r, err := h.api.ListPapers(rctx, &pb.ListPapersRequest{BatchId: "a", States: []pb.PaperState{s}})
		if err != nil {
			t.Fatalf("ListPapers %v: %v", s, err)
		}
		return r.GetPapers()
	}
	if got := list(pb.PaperState_PAPER_STATE_QUEUED); len(got) != 3 || got[0].GetState() != pb.PaperState_PAPER_STATE_QUEUED {
		t.Fatalf("QUEUED papers during the commit of their cancellation: %v", got)
	}
	if got := list(pb.PaperState_PAPER_STATE_CANCELLED); len(got) != 0 {
		t.Fatalf("CANCELLED papers before their cancellation is committed: %v", got)
	}
	release()
	if err := <-cancelled; err != nil {
		t.Fatal(err)
	}
	if got := list(pb.PaperState_PAPER_STATE_CANCELLED); len(got) != 3 {
		t.Fatalf("CANCELLED papers after the commit: %v", got)
	}
	if got := list(pb.PaperState_PAPER_STATE_QUEUED); len(got) != 0 {
		t.Fatalf("QUEUED papers after the commit: %v", got)
	}
}

// reply returns what the loop has already sent on ch (a read replies when it is applied).
func reply[T any](t *testing.T, ch chan T, what string) T {
	t.Helper()
	select {
	case r := <-ch:
		return r
	default:
		t.Fatalf("%s: no reply before the commit", what)
		panic("unreachable")
	}
}

// Reads that go through the loop reply as they are applied, before the iteration commits,
// and show committed state only: neither a batch nor a host nor a state change that is not
// yet durable.
func TestLoopReadsAnswerFromCommittedState(t *testing.T) {
	h := newEngHarness(t, nil)
	h.submit("a", oneHost("p", 3))
	now := h.clk.Now()
	// Uncommitted: a new batch on a new host, and batch a cancelled.
	pp, sum, err := preparePapers("papers", []*pb.PaperSpec{{PaperId: "q0", Urls: []string{"https://other.example/q0.pdf"}}})
	if err != nil {
		t.Fatal(err)
	}
	sub := &submitReq{op: opSubmit, batchID: "b", papers: pp, hash: sum, reply: make(chan submitResult, 1)}
	sub.apply(h.e, now)
	cancelA := &cancelBatchReq{id: "a", reason: "test", reply: make(chan batchResult, 1)}
	cancelA.apply(h.e, now)

	lb := &listBatchesReq{size: 10, reply: make(chan listBatchesResult, 1)}
	lb.apply(h.e, now)
	res := reply(t, lb.reply, "ListBatches")
	if res.err != nil || len(res.batches) != 1 || res.batches[0].GetBatchId() != "a" ||
		res.batches[0].GetState() != pb.BatchState_BATCH_STATE_RUNNING || res.batches[0].GetCounts().GetQueued() != 3 {
		t.Fatalf("ListBatches before the commit: %v", res)
	}
	lk := &lookupReq{batchID: "b", paperID: "q0", reply: make(chan lookupResult, 1)}
	lk.apply(h.e, now)
	if r := reply(t, lk.reply, "lookup b"); !errors.Is(r.err, errNotFound) {
		t.Fatalf("lookup of a paper of an uncommitted batch: %+v", r)
	}
	lk = &lookupReq{batchID: "a", paperID: "p1", reply: make(chan lookupResult, 1)}
	lk.apply(h.e, now)
	if r := reply(t, lk.reply, "lookup a"); r.err != nil || r.batchID != "a" {
		t.Fatalf("lookup of a committed paper: %+v", r)
	}
	// a's papers are CANCELLED in memory, QUEUED as committed: a filter on QUEUED still picks
	// them (changed since the commit), and so does one on CANCELLED; the handler keeps the
	// papers whose committed record matches.
	for _, st := range []pb.PaperState{pb.PaperState_PAPER_STATE_QUEUED, pb.PaperState_PAPER_STATE_CANCELLED} {
		lp := &listPapersReq{batchID: "a", states: 1 << uint8(st), size: 10, reply: make(chan listPapersResult, 1)}
		lp.apply(h.e, now)
		r := reply(t, lp.reply, "ListPapers")
		if r.err != nil || len(r.idxs) != 3 {
			t.Fatalf("ListPapers %v before the commit: %+v", st, r)
		}
		recs, _, err := h.st.readPapers(r.idxs)
		if err != nil {
			t.Fatal(err)
		}
		kept := 0
		for i := range recs {
			if lp.matches(recs[i].state, recs[i].reason) {
				kept++
			}
		}
		if want := map[pb.PaperState]int{pb.PaperState_PAPER_STATE_QUEUED: 3}[st]; kept != want {
			t.Fatalf("ListPapers %v: %d papers kept by their committed records, want %d", st, kept, want)
		}
	}
	hr := &hostsReq{size: 10, reply: make(chan hostsResult, 1)}
	hr.apply(h.e, now)
	if r := reply(t, hr.reply, "ListHosts"); r.err != nil || len(r.hosts) != 1 || r.hosts[0].GetName() != "one.example" {
		t.Fatalf("ListHosts before the commit: %+v", r)
	}
	fr := &fetchersReq{reply: make(chan *pb.ListFetchersResponse, 1)}
	fr.apply(h.e, now)
	reply(t, fr.reply, "ListFetchers")
	select {
	case r := <-sub.reply:
		t.Fatalf("SubmitBatch replied before its commit: %+v", r)
	default:
	}

	h.step() // commit: the writers get their replies, the reads see the writes
	if r := <-sub.reply; r.err != nil || !r.created {
		t.Fatalf("SubmitBatch: %+v", r)
	}
	lb = &listBatchesReq{size: 10, reply: make(chan listBatchesResult, 1)}
	lb.apply(h.e, h.clk.Now())
	res = reply(t, lb.reply, "ListBatches")
	if len(res.batches) != 2 || res.batches[0].GetBatchId() != "b" || res.batches[1].GetState() != pb.BatchState_BATCH_STATE_CANCELLED {
		t.Fatalf("ListBatches after the commit: %v", res.batches)
	}
	hr = &hostsReq{size: 10, reply: make(chan hostsResult, 1)}
	hr.apply(h.e, h.clk.Now())
	if r := reply(t, hr.reply, "ListHosts"); len(r.hosts) != 2 {
		t.Fatalf("ListHosts after the commit: %+v", r.hosts)
	}
}

// The views of the batches an iteration changed get their speeds from one pass over the
// running leases, not one per batch.
func TestViewSpeedsOnePassOverLeases(t *testing.T) {
	const batches = 20
	h := newMemEngHarness(t, nil)
	t.Cleanup(h.close)
	c := h.connect("f", batches)
	for i := range batches {
		id := fmt.Sprintf("b%d", i)
		if res := h.submit(id, []*pb.PaperSpec{{PaperId: id, Urls: []string{fmt.Sprintf("https://h%d.example/p.pdf", i)}}}); res.err != nil {
			t.Fatal(res.err)
		}
	}
	as, _, _ := recv(c)
	if len(as) != batches {
		t.Fatalf("%d assigns", len(as))
	}
	h.advance(time.Second)
	for i, a := range as {
		h.send(c, eventReq(a, 1, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{
			Bytes: 1, Total: 100, BytesPerSecond: float64(1000 * (i + 1))}}}))
	}
	// Every batch changed in the same iteration, with its speed due.
	h.clk.Advance(time.Second)
	for _, b := range h.e.batches {
		h.e.touchBatch(b)
	}
	before := h.e.speedVisits
	pv := h.e.takeViews(h.clk.Now())
	if n := h.e.speedVisits - before; n > uint64(len(h.e.leases)) {
		t.Errorf("%d lease visits for %d batches and %d leases", n, batches, len(h.e.leases))
	}
	want := map[string]float64{}
	for i, a := range as {
		want[a.GetBatchId()] = float64(1000 * (i + 1))
	}
	if len(pv.batches) != batches {
		t.Fatalf("%d views taken", len(pv.batches))
	}
	for _, u := range pv.batches {
		if u.v.bps != want[u.b.id] {
			t.Errorf("batch %s: speed %v, want %v", u.b.id, u.v.bps, want[u.b.id])
		}
	}
	h.e.publishViews(pv)
}
