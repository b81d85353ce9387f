package coordinator

import (
	"errors"
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func (h *engHarness) retry(id string) retryResult {
	h.t.Helper()
	r := &retryReq{id: id, reply: make(chan retryResult, 1)}
	h.apply(r)
	return <-r.reply
}

func (h *engHarness) hosts(busyOnly bool, size int, token string) hostsResult {
	h.t.Helper()
	r := &hostsReq{size: size, token: token, busyOnly: busyOnly, reply: make(chan hostsResult, 1)}
	h.apply(r)
	return <-r.reply
}

// TestRetryFailed: the failed papers of a completed batch are re-queued with a fresh attempt
// budget, the batch runs again and completes, the per-reason counts follow, and all of it
// survives a restart.
func TestRetryFailed(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.MaxAttempts = 1
		c.PerHostConcurrency = 10
	})
	h.submit("b", oneHost("p", 3))
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 3 {
		t.Fatalf("%d assigns", len(as))
	}
	h.send(c, eventReq(as[0], 1, completedEv(as[0])))
	h.send(c, eventReq(as[1], 1, failedEv(pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_NOT_FOUND, 404, 0)))
	h.send(c, eventReq(as[2], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_CONNECTION, 0, 0)))
	b := h.e.batchProto(h.batch("b"))
	if b.GetState() != pb.BatchState_BATCH_STATE_COMPLETED || b.GetCounts().GetFailed() != 2 {
		t.Fatalf("before retry: %v", b)
	}
	if got := b.GetFailedByReason(); len(got) != 2 || got[0].GetCount() != 1 {
		t.Fatalf("failed_by_reason: %v", got)
	}

	h.restart() // the counts per reason are rebuilt from the store
	if got := h.e.batchProto(h.batch("b")).GetFailedByReason(); len(got) != 2 {
		t.Fatalf("failed_by_reason after restart: %v", got)
	}
	res := h.retry("b")
	if res.err != nil || res.retried != 2 {
		t.Fatalf("retry: %+v", res)
	}
	if s := res.batch.GetState(); s != pb.BatchState_BATCH_STATE_RUNNING || res.batch.GetFinishedAt() != nil ||
		res.batch.GetCounts().GetFailed() != 0 || len(res.batch.GetFailedByReason()) != 0 {
		t.Fatalf("batch after retry: %v", res.batch)
	}
	if got := h.e.counts[stateFailed]; got != 0 {
		t.Fatalf("global failed count %d", got)
	}
	h.restart() // the re-queued papers and the RUNNING batch are durable
	if s := h.paperState("b", "p1"); s != pb.PaperState_PAPER_STATE_QUEUED {
		t.Fatalf("p1 after restart: %v", s)
	}
	c = h.connect("f", 10)
	as, _, _ = recv(c)
	if len(as) != 2 || as[0].GetAttempt() != 2 {
		t.Fatalf("after retry: %v", as)
	}
	for _, a := range as {
		h.send(c, eventReq(a, 1, completedEv(a)))
	}
	b = h.e.batchProto(h.batch("b"))
	if b.GetState() != pb.BatchState_BATCH_STATE_COMPLETED || b.GetCounts().GetSucceeded() != 3 {
		t.Fatalf("after the retried papers succeeded: %v", b)
	}
	// Nothing left to retry: a no-op.
	if res := h.retry("b"); res.err != nil || res.retried != 0 || res.batch.GetState() != pb.BatchState_BATCH_STATE_COMPLETED {
		t.Fatalf("second retry: %+v", res)
	}
}

func TestRetryFailedErrors(t *testing.T) {
	h := newEngHarness(t, nil)
	if res := h.retry("nope"); !errors.Is(res.err, errNotFound) {
		t.Fatalf("unknown batch: %v", res.err)
	}
	h.submit("b", oneHost("p", 1))
	r := &cancelBatchReq{id: "b", reply: make(chan batchResult, 1)}
	h.apply(r)
	<-r.reply
	if res := h.retry("b"); !errors.Is(res.err, errPrecondition) {
		t.Fatalf("cancelled batch: %v", res.err)
	}
}

// TestListHostsAndFetchers: the views show a paused host with its cause and breaker state, its
// counters, paging, and the connected fetchers.
func TestListHostsAndFetchers(t *testing.T) {
	// The fake fetchers never report their leases started: no lease deadline gets in the way.
	h := newEngHarness(t, func(c *Config) {
		c.BreakerThreshold = 2
		c.BreakerCooldown = time.Minute
		c.MaxAttempts = 10
		c.PerHostConcurrency = 10
		c.StartTimeout = time.Hour
		c.LeaseTTL = time.Hour
	})
	papers := oneHost("p", 3)
	papers = append(papers, &pb.PaperSpec{PaperId: "q", Urls: []string{"https://two.example/q.pdf"}},
		&pb.PaperSpec{PaperId: "r", Urls: []string{"https://three.example/r.pdf"}})
	h.submit("b", papers)
	c := h.connect("f1", 10)
	h.connect("f2", 3)
	as, _, _ := recv(c)
	transient := failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_SERVER_ERROR, 500, 0)
	for _, a := range as {
		if a.GetPaperId() == "p0" || a.GetPaperId() == "p1" {
			h.send(c, eventReq(a, 1, transient))
		}
	}
	res := h.hosts(false, 100, "")
	if res.err != nil || len(res.hosts) != 3 || res.next != "" {
		t.Fatalf("hosts: %+v", res)
	}
	one := res.hosts[0]
	if one.GetName() != "one.example" || one.GetBreaker() != pb.BreakerState_BREAKER_STATE_OPEN ||
		one.GetPauseReason() != "circuit_breaker" || !one.GetPausedUntil().AsTime().Equal(t0.Add(time.Minute)) ||
		one.GetFailures() != 2 || one.GetLastFailureReason() != pb.FailureReason_FAILURE_REASON_SERVER_ERROR {
		t.Fatalf("paused host: %v", one)
	}
	page := h.hosts(false, 2, "")
	if len(page.hosts) != 2 || page.next == "" {
		t.Fatalf("first page: %+v", page)
	}
	if rest := h.hosts(false, 2, page.next); len(rest.hosts) != 1 || rest.next != "" || rest.hosts[0].GetName() != "three.example" {
		t.Fatalf("second page: %+v", rest)
	}
	if bad := h.hosts(false, 2, "x"); !errors.Is(bad.err, errInvalid) {
		t.Fatalf("bad token: %v", bad.err)
	}
	h.advance(2 * time.Minute) // the pause is over: half-open
	if got := h.hosts(false, 100, "").hosts[0]; got.GetBreaker() != pb.BreakerState_BREAKER_STATE_HALF_OPEN || got.GetPausedUntil() != nil {
		t.Fatalf("after the pause: %v", got)
	}

	r := &fetchersReq{reply: make(chan *pb.ListFetchersResponse, 1)}
	h.apply(r)
	fs := <-r.reply
	if fs.GetTotal() != 2 || len(fs.GetFetchers()) != 2 || fs.GetFetchers()[0].GetFetcherId() != "f1" ||
		fs.GetFetchers()[1].GetSlots() != 3 || fs.GetFetchers()[0].GetInFlight() != 3 || // p2, q, r: p2 is still out on the half-open host, so no probe
		fs.GetFetchers()[0].GetConnectedAt() == nil {
		t.Fatalf("fetchers: %v", fs)
	}
}
