package coordinator

import (
	"errors"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func oneHost(prefix string, n int) []*pb.PaperSpec {
	out := make([]*pb.PaperSpec, n)
	for i := range out {
		out[i] = &pb.PaperSpec{PaperId: fmt.Sprintf("%s%d", prefix, i), Urls: []string{fmt.Sprintf("https://one.example/%s%d.pdf", prefix, i)}}
	}
	return out
}

func TestPolitenessDelayAndConcurrency(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.PerHostDelay = time.Second
		c.PerHostConcurrency = 2
		c.HostOverrides = map[string]HostLimits{"slow.example": {Delay: new(5 * time.Second), Concurrency: new(1)}}
	})
	h.submit("b", append(oneHost("p", 5), &pb.PaperSpec{PaperId: "s", Urls: []string{"https://slow.example/s.pdf"}},
		&pb.PaperSpec{PaperId: "s2", Urls: []string{"https://slow.example/s2.pdf"}}))
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 2 { // one per host
		t.Fatalf("first round: %d assigns", len(as))
	}
	h.advance(999 * time.Millisecond)
	if as, _, _ := recv(c); len(as) != 0 {
		t.Fatalf("assigned before the delay: %d", len(as))
	}
	h.advance(time.Millisecond)
	as2, _, _ := recv(c)
	if len(as2) != 1 || as2[0].GetUrl() == "https://slow.example/s2.pdf" {
		t.Fatalf("after 1s: %v", as2)
	}
	h.advance(10 * time.Second)
	if as, _, _ := recv(c); len(as) != 0 {
		t.Fatalf("concurrency exceeded: %d more assigns", len(as))
	}
	// Completing one frees a slot on each host.
	h.send(c, eventReq(as[0], 1, completedEv(as[0])))
	h.send(c, eventReq(as[1], 1, completedEv(as[1])))
	as3, _, acks := recv(c)
	if len(as3) != 2 || len(acks) != 2 {
		t.Fatalf("after completions: %d assigns, %d acks", len(as3), len(acks))
	}
}

func TestRetryBackoffAndAttempts(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.MaxAttempts = 3
		c.RetryBaseDelay = 2 * time.Second
	})
	h.submit("b", oneHost("p", 1))
	c := h.connect("f", 10)
	transient := failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_CONNECTION, 0, 0)
	for attempt := 1; attempt <= 3; attempt++ {
		as, _, _ := recv(c)
		if len(as) != 1 || as[0].GetAttempt() != int32(attempt) {
			t.Fatalf("attempt %d: %v", attempt, as)
		}
		h.send(c, eventReq(as[0], 1, transient))
		if attempt == 3 {
			break
		}
		if s := h.paperState("b", "p0"); s != pb.PaperState_PAPER_STATE_RETRY_WAIT {
			t.Fatalf("after failure %d: %v", attempt, s)
		}
		minWait := time.Second << (attempt - 1) // equal jitter: at least half the exponential delay
		h.advance(minWait - time.Millisecond)
		if as, _, _ := recv(c); len(as) != 0 {
			t.Fatalf("retried before the backoff")
		}
		h.advance(minWait + time.Millisecond)
	}
	if s := h.paperState("b", "p0"); s != pb.PaperState_PAPER_STATE_FAILED {
		t.Fatalf("final state %v", s)
	}
	p := h.e.papers[0]
	if pb.FailureReason(p.reason) != pb.FailureReason_FAILURE_REASON_ATTEMPTS_EXHAUSTED || p.failures != 3 {
		t.Fatalf("reason %v failures %d", pb.FailureReason(p.reason), p.failures)
	}
	if h.batch("b").state != pb.BatchState_BATCH_STATE_COMPLETED {
		t.Fatalf("batch %v", h.batch("b").state)
	}
}

func TestPermanentFailureMovesToNextURL(t *testing.T) {
	h := newEngHarness(t, nil)
	h.submit("b", []*pb.PaperSpec{{PaperId: "p", Urls: []string{"https://a.example/p.pdf", "https://b.example/p.pdf"}}})
	c := h.connect("f", 10)
	notFound := failedEv(pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_NOT_FOUND, 404, 0)
	as, _, _ := recv(c)
	if len(as) != 1 || as[0].GetUrl() != "https://a.example/p.pdf" || len(as[0].GetCandidateUrls()) != 2 {
		t.Fatalf("first: %v", as)
	}
	h.send(c, eventReq(as[0], 1, notFound))
	as, _, _ = recv(c)
	if len(as) != 1 || as[0].GetUrl() != "https://b.example/p.pdf" || as[0].GetAttempt() != 2 {
		t.Fatalf("second (immediately, next URL): %v", as)
	}
	h.send(c, eventReq(as[0], 1, notFound))
	if s := h.paperState("b", "p"); s != pb.PaperState_PAPER_STATE_FAILED {
		t.Fatalf("state %v", s)
	}
	if r := pb.FailureReason(h.e.papers[0].reason); r != pb.FailureReason_FAILURE_REASON_NOT_FOUND {
		t.Fatalf("reason %v", r)
	}
}

func TestRetryAfterPausesHostAndAIMD(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.PerHostConcurrency = 4
		c.MaxRetryAfter = time.Hour
	})
	h.submit("b", oneHost("p", 6))
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 4 {
		t.Fatalf("%d assigns", len(as))
	}
	h.send(c, eventReq(as[0], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_RATE_LIMITED, 429, 30*time.Second)))
	host := h.e.hosts[h.e.papers[0].host]
	if host.limit != 2 || !host.pausedUntil.Equal(h.clk.Now().Add(30*time.Second)) {
		t.Fatalf("limit %d paused until %v", host.limit, host.pausedUntil)
	}
	for _, a := range as[1:] {
		h.send(c, eventReq(a, 1, completedEv(a)))
	}
	if as, _, _ := recv(c); len(as) != 0 {
		t.Fatalf("assigned on a paused host: %d", len(as))
	}
	h.advance(30 * time.Second)
	as, _, _ = recv(c)
	if len(as) != 2 { // the AIMD limit
		t.Fatalf("after the pause: %d assigns", len(as))
	}
	// A Retry-After beyond the cap fails the attempt with HOST_PAUSED.
	h.send(c, eventReq(as[0], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_RATE_LIMITED, 503, 3*time.Hour)))
	idx := h.e.byBatch[batchKey(hashString(as[0].GetPaperId()), 0)]
	if p := h.e.papers[idx]; p.state != stateFailed || pb.FailureReason(p.reason) != pb.FailureReason_FAILURE_REASON_HOST_PAUSED {
		t.Fatalf("paper %+v", p)
	}
	if !host.pausedUntil.Equal(h.clk.Now().Add(time.Hour)) {
		t.Fatalf("paused until %v", host.pausedUntil)
	}
}

func TestCircuitBreaker(t *testing.T) {
	// The test never reports its leases started: no lease deadline gets in the way.
	h := newEngHarness(t, func(c *Config) {
		c.PerHostConcurrency = 3
		c.BreakerThreshold = 3
		c.BreakerCooldown = time.Minute
		c.StartTimeout = time.Hour
		c.LeaseTTL = time.Hour
	})
	h.submit("b", oneHost("p", 10))
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	for _, a := range as {
		h.send(c, eventReq(a, 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_TIMEOUT, 0, 0)))
	}
	host := h.e.hosts[0]
	if !host.pausedUntil.Equal(h.clk.Now().Add(time.Minute)) {
		t.Fatalf("breaker did not trip: paused until %v", host.pausedUntil)
	}
	pre, _, _ := recv(c) // assigned while the first failures freed slots, before the breaker tripped
	if len(pre) != 2 {
		t.Fatalf("assigned before the trip: %d, want 2", len(pre))
	}
	h.advance(59 * time.Second)
	if as, _, _ := recv(c); len(as) != 0 {
		t.Fatalf("assigned while the breaker is open: %d", len(as))
	}
	h.advance(time.Second)
	if as, _, _ := recv(c); len(as) != 0 {
		t.Fatalf("half-open with two leases still out: %d more assigned, want none", len(as))
	}
	// Half-open: one more failure trips it again, for twice as long.
	h.send(c, eventReq(pre[0], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_TIMEOUT, 0, 0)))
	if !host.pausedUntil.Equal(h.clk.Now().Add(2 * time.Minute)) {
		t.Fatalf("second trip: paused until %v", host.pausedUntil)
	}
	h.advance(2 * time.Minute)
	if as, _, _ := recv(c); len(as) != 0 {
		t.Fatalf("half-open with a lease still out: %d more assigned, want none", len(as))
	}
	// A success closes the breaker; the host's limit then climbs back one success at a time.
	h.send(c, eventReq(pre[1], 1, completedEv(pre[1])))
	if host.br.open {
		t.Fatal("the breaker is still open after a success")
	}
	if as, _, _ := recv(c); len(as) == 0 {
		t.Fatal("nothing assigned after the success")
	}
}

func TestCacheHits(t *testing.T) {
	h := newEngHarness(t, nil)
	h.submit("a", []*pb.PaperSpec{{PaperId: "x", Urls: []string{"https://h.example/x.pdf"}}})
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	h.send(c, eventReq(as[0], 1, completedEv(as[0])))
	res := h.submit("b", []*pb.PaperSpec{
		{PaperId: "x", Urls: []string{"https://elsewhere.example/x.pdf"}},
		{PaperId: "y", Urls: []string{"https://other.example/y.pdf", "https://h.example/x.pdf"}},
		{PaperId: "z", Urls: []string{"https://h.example/x.pdf"}, ExpectedSha256: fakeSHA("not x")},
	})
	if res.err != nil {
		t.Fatal(res.err)
	}
	b := h.batch("b")
	if b.counts[stateSucceeded] != 2 || b.cached != 2 {
		t.Fatalf("counts %v cached %d", b.counts, b.cached)
	}
	if as, _, _ := recv(c); len(as) != 1 || as[0].GetPaperId() != "z" {
		t.Fatalf("assigns %v", as)
	}
	rec, _, err := h.st.readPaper(h.e.byBatch[batchKey(hashString("y"), b.idx)])
	if err != nil || rec.flags&flagCached == 0 || rec.sha256 != fakeSHA("x") {
		t.Fatalf("cached record %+v %v", rec, err)
	}
}

func TestLeaseExpiryAndDraining(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.LeaseTTL = 10 * time.Second
		c.PerHostConcurrency = 10
	})
	h.submit("b", oneHost("p", 4))
	c := h.connect("f", 2)
	as, _, _ := recv(c)
	if len(as) != 2 {
		t.Fatalf("%d assigns", len(as))
	}
	h.advance(5 * time.Second)
	// A lease is renewed by its own events only, not by heartbeats or other leases' events.
	h.send(c, eventReq(as[0], 1, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{Url: as[0].GetUrl()}}}))
	h.send(c, &pb.WorkRequest{Msg: &pb.WorkRequest_Heartbeat{Heartbeat: &pb.Heartbeat{}}})
	h.advance(4 * time.Second)
	if _, cancels, _ := recv(c); len(cancels) != 0 {
		t.Fatalf("expired early: %v", cancels)
	}
	h.advance(time.Second)
	if _, cancels, _ := recv(c); len(cancels) != 1 || cancels[0] != as[1].GetLeaseId() {
		t.Fatalf("at the TTL of the silent lease: cancels %v", cancels)
	}
	h.advance(5 * time.Second)
	_, cancels, _ := recv(c)
	if len(cancels) != 1 || cancels[0] != as[0].GetLeaseId() || h.batch("b").counts[stateQueued] != 4 {
		t.Fatalf("cancels %v counts %v", cancels, h.batch("b").counts)
	}
	// The expired attempts' late results are dropped (and acked).
	h.send(c, eventReq(as[0], 2, completedEv(as[0])))
	if _, _, acks := recv(c); len(acks) != 1 || h.batch("b").counts[stateSucceeded] != 0 {
		t.Fatalf("stale result applied: %v", h.batch("b").counts)
	}
	d := h.connect("d", 3)
	as, _, _ = recv(d)
	if len(as) != 3 {
		t.Fatalf("%d assigns", len(as))
	}
	h.send(d, eventReq(as[0], 1, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{Url: as[0].GetUrl()}}}))
	h.send(d, &pb.WorkRequest{Msg: &pb.WorkRequest_Draining{Draining: &pb.Draining{Reason: "test"}}})
	_, cancels, _ = recv(d)
	if len(cancels) != 2 || h.batch("b").counts[stateDownloading] != 1 {
		t.Fatalf("draining: cancels %v counts %v", cancels, h.batch("b").counts)
	}
	h.send(d, creditsReq(5))
	if as, _, _ := recv(d); len(as) != 0 {
		t.Fatal("work assigned to a draining fetcher")
	}
	// Duplicate and stale-attempt events are dropped.
	h.send(d, eventReq(as[0], 1, completedEv(as[0])))
	bad := &pb.Assign{LeaseId: as[0].GetLeaseId(), Attempt: as[0].GetAttempt() + 1, BatchId: "b", PaperId: as[0].GetPaperId()}
	h.send(d, eventReq(bad, 2, completedEv(bad)))
	if h.batch("b").counts[stateSucceeded] != 0 {
		t.Fatalf("stale or duplicate event applied: %v", h.batch("b").counts)
	}
	h.send(d, eventReq(as[0], 2, completedEv(as[0])))
	if h.batch("b").counts[stateSucceeded] != 1 {
		t.Fatalf("valid event not applied: %v", h.batch("b").counts)
	}
}

func TestFullSendBufferBreaksStream(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.PerHostConcurrency = 10
	})
	h.submit("b", oneHost("p", 5))
	c := newFetcherConn(2)
	r := &helloMsg{c: c, hello: &pb.Hello{FetcherId: "slow", Slots: 5}, reply: make(chan error, 1)}
	h.apply(r)
	select {
	case <-c.killed:
	default:
		t.Fatal("stream with a full buffer not broken")
	}
	if !c.closed || len(c.leases) != 0 || h.batch("b").counts[stateQueued] != 5 || h.e.credits != 0 {
		t.Fatalf("closed %v leases %d counts %v credits %d", c.closed, len(c.leases), h.batch("b").counts, h.e.credits)
	}
	f := h.connect("fast", 5)
	if as, _, _ := recv(f); len(as) != 5 {
		t.Fatalf("re-assigned %d", len(as))
	}
}

// TestIndexCollisionsSurviveRestart forges a hash collision of the per-batch index in the
// store and checks both papers stay reachable after a reload.
func TestIndexCollisionsSurviveRestart(t *testing.T) {
	h := newEngHarness(t, nil)
	h.submit("b", oneHost("p", 3))
	err := h.st.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(bucketPapers))
		var r0, r1 storedPaper
		if err := r0.unmarshalFixed(bk.Get(key32(0))); err != nil {
			return err
		}
		if err := r1.unmarshalFixed(bk.Get(key32(1))); err != nil {
			return err
		}
		r1.idHash = r0.idHash
		return bk.Put(key32(1), r1.marshalFixed(nil))
	})
	if err != nil {
		t.Fatal(err)
	}
	h.restart()
	for i, id := range []string{"p0", "p1", "p2"} {
		r := &lookupReq{batchID: "b", paperID: id, reply: make(chan lookupResult, 1)}
		h.apply(r)
		res := <-r.reply
		if res.err != nil || res.idx != uint32(i) {
			t.Fatalf("lookup %s: %+v", id, res)
		}
	}
	// A new chunk with a colliding id is still a duplicate.
	pp, sum, err := preparePapers("papers", oneHost("p", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.e.addPapers(h.batch("b"), 1, pp, sum, h.clk.Now()); !errors.Is(err, errInvalid) {
		t.Fatalf("duplicate id accepted: %v", err)
	}
}
