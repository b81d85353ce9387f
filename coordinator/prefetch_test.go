package coordinator

import (
	"fmt"
	"math"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func prefetchPapers(n int, host string) []*pb.PaperSpec {
	var out []*pb.PaperSpec
	for i := 0; i < n; i++ {
		out = append(out, &pb.PaperSpec{PaperId: fmt.Sprintf("p%d", i), Urls: []string{fmt.Sprintf("https://%s/%d.pdf", host, i)}})
	}
	return out
}

// prefetchSetup connects a fetcher with 1 slot and a prefetch window to a coordinator without
// per-host delay, submits batch "b" of n papers of one host, and returns the Assigns it got.
func prefetchSetup(t *testing.T, conc, prefetch, n int) (*engHarness, *fetcherConn, []*pb.Assign) {
	t.Helper()
	h := newMemEngHarness(t, func(c *Config) { c.PerHostDelay = 0; c.PerHostConcurrency = conc })
	t.Cleanup(h.close)
	c := h.connectPrefetch("f", 1, prefetch)
	if res := h.submit("b", prefetchPapers(n, "a.example")); res.err != nil {
		t.Fatal(res.err)
	}
	as, _, _ := recv(c)
	if len(as) != 2 || as[0].GetAfterLeaseId() != "" || as[1].GetAfterLeaseId() != as[0].GetLeaseId() {
		t.Fatalf("want a lease and its successor, got %v", as)
	}
	return h, c, as
}

// successorCount reads prefetched_leases_total{outcome}.
func successorCount(t *testing.T, h *engHarness, outcome string) float64 {
	t.Helper()
	var m dto.Metric
	if err := h.e.m.successors.WithLabelValues(outcome).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func receivedEv() *pb.DownloadEvent {
	return &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 10, Total: 10, BodyReceived: true}}}
}

func startedEv(a *pb.Assign) *pb.DownloadEvent {
	return &pb.DownloadEvent{Kind: &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{Url: a.GetUrl()}}}
}

// A fetcher with a prefetch window gets a successor of its running download, without
// credit; the successor takes the host slot of its predecessor when the predecessor's body is
// in (the host's count does not move), and the next successor follows it.
func TestPrefetchSuccessorTakesHostSlot(t *testing.T) {
	h, c, as := prefetchSetup(t, 1, 1, 4)
	host := h.e.hosts[h.e.hostByName["a.example"]]
	if host.active != 1 || c.waiting != 1 || c.credits != 0 {
		t.Fatalf("active %d, waiting %d, credits %d", host.active, c.waiting, c.credits)
	}
	// The waiting successor is DOWNLOADING, but not a running download yet.
	if _, active := h.e.activeOf(h.batch("b"), true); len(active) != 1 || active[0].GetPaperId() != as[0].GetPaperId() {
		t.Fatalf("active downloads %v", active)
	}
	// The predecessor's body is in: the successor holds the host slot (the limit is 1), and a
	// new successor follows it.
	h.send(c, eventReq(as[0], 1, receivedEv()))
	if host.active != 1 || c.waiting != 1 || c.credits != 0 {
		t.Fatalf("after body_received: active %d, waiting %d, credits %d", host.active, c.waiting, c.credits)
	}
	if n := successorCount(t, h, "slot_taken"); n != 1 {
		t.Fatalf("prefetched_leases_total{outcome=slot_taken} = %v", n)
	}
	as2, _, _ := recv(c)
	if len(as2) != 1 || as2[0].GetAfterLeaseId() != as[1].GetLeaseId() {
		t.Fatalf("want the successor of %s, got %v", as[1].GetLeaseId(), as2)
	}
	h.send(c, eventReq(as[1], 1, startedEv(as[1])))
	if _, active := h.e.activeOf(h.batch("b"), true); len(active) != 2 {
		t.Fatalf("active downloads once the successor started: %v", active)
	}
	h.send(c, eventReq(as[0], 2, completedEv(as[0])))
	// The successor runs on its own now: its start deadline runs from its predecessor's end.
	l := h.e.leases[h.e.byBatch[batchKey(hashString("p1"), h.batch("b").idx)]]
	if l.pred != nil || !l.counted || !l.readyAt.Equal(h.clk.Now()) {
		t.Fatalf("successor after its predecessor ended: %+v", l)
	}
	if got := h.paperState("b", "p0"); got != pb.PaperState_PAPER_STATE_SUCCEEDED {
		t.Fatalf("p0 %v", got)
	}
}

// A predecessor that fails before its body is in voids its successor: re-queued (with a
// Cancel) without counting a failure; the fetcher's hand-back of it is acknowledged.
func TestPrefetchSuccessorVoidWhenPredecessorFails(t *testing.T) {
	h, c, as := prefetchSetup(t, 1, 1, 2)
	h.send(c, eventReq(as[0], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_TIMEOUT, 0, 0)))
	_, cancels, acks := recv(c)
	if len(cancels) != 1 || cancels[0] != as[1].GetLeaseId() || len(acks) != 1 {
		t.Fatalf("want a Cancel of the successor and the failure's Ack, got %v, %v", cancels, acks)
	}
	idx := h.e.byBatch[batchKey(hashString("p1"), h.batch("b").idx)]
	p := h.e.papers[idx]
	if p.state != stateQueued || p.failures != 0 || h.e.leases[idx] != nil || c.waiting != 0 {
		t.Fatalf("successor's paper: %+v, lease %v, waiting %d", p, h.e.leases[idx], c.waiting)
	}
	if n := successorCount(t, h, "handed_back"); n != 1 {
		t.Fatalf("prefetched_leases_total{outcome=handed_back} = %v", n)
	}
	h.send(c, eventReq(as[1], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0, 0)))
	if _, _, acks := recv(c); len(acks) != 1 || acks[0] != as[1].GetLeaseId() {
		t.Fatalf("acks %v", acks)
	}
	// The fetcher returns the slot's credit: p1 is leased again (attempt 2: lease ids are
	// never reused).
	h.send(c, creditsReq(1))
	as, _, _ = recv(c)
	if len(as) == 0 || as[0].GetPaperId() != "p1" && as[0].GetPaperId() != "p0" {
		t.Fatalf("after the credit: %v", as)
	}
}

// A waiting successor has no deadline of its own, and the fetcher's hand-back of a
// waiting successor re-queues it without a failure; a draining fetcher's successors are
// re-queued at once.
func TestPrefetchHandBackAndDrain(t *testing.T) {
	h, c, as := prefetchSetup(t, 2, 1, 4)
	paper := func(a *pb.Assign) memPaper {
		return h.e.papers[h.e.byBatch[batchKey(hashString(a.GetPaperId()), h.batch("b").idx)]]
	}
	h.send(c, eventReq(as[0], 1, startedEv(as[0])))
	// Well within the predecessor's deadlines, past the start timeout counted from the Assign:
	// the waiting successor is not reclaimed.
	for i := 0; i < 4; i++ {
		h.advance(h.e.cfg.StartTimeout / 2)
		h.send(c, eventReq(as[0], int64(2+i), &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 1}}}))
	}
	if c.closed || paper(as[1]).state != stateDownloading {
		t.Fatal("the waiting successor was reclaimed")
	}
	// The fetcher hands it back: re-queued without a failure, and the window is refilled.
	h.send(c, eventReq(as[1], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0, 0)))
	next, _, acks := recv(c)
	if p := paper(as[1]); p.failures != 0 || len(acks) != 1 || len(next) != 1 || next[0].GetAfterLeaseId() != as[0].GetLeaseId() || c.waiting != 1 {
		t.Fatalf("after the hand-back: paper %+v, acks %v, assigns %v, waiting %d", p, acks, next, c.waiting)
	}
	h.send(c, &pb.WorkRequest{Msg: &pb.WorkRequest_Draining{Draining: &pb.Draining{}}})
	_, cancels, _ := recv(c)
	if len(cancels) != 1 || cancels[0] != next[0].GetLeaseId() || c.waiting != 0 {
		t.Fatalf("draining: cancels %v, waiting %d", cancels, c.waiting)
	}
	if p := paper(next[0]); p.state != stateQueued || p.failures != 0 {
		t.Fatalf("successor's paper after draining: %+v", p)
	}
}

// A successor released when the scan reclaims its predecessor is scanned later too: it gets
// its own deadlines and is reclaimed when its fetcher goes silent, whatever the order in which
// the scan met the two (map order: 20 runs, each met the successor first with probability 1/2).
func TestPrefetchReleasedSuccessorKeepsDeadlines(t *testing.T) {
	for run := 0; run < 20; run++ {
		h, c, as := prefetchSetup(t, 1, 1, 2)
		h.send(c, eventReq(as[0], 1, receivedEv())) // the successor takes the host slot
		h.send(c, eventReq(as[1], 1, startedEv(as[1])))
		// The fetcher goes silent: the predecessor expires, then its successor.
		for i := 0; i < 4; i++ {
			h.advance(h.e.cfg.LeaseTTL)
		}
		for _, a := range as {
			if l := h.e.leases[h.e.byBatch[batchKey(hashString(a.GetPaperId()), h.batch("b").idx)]]; l != nil && l.id == a.GetLeaseId() {
				t.Fatalf("run %d: lease %s still held by the silent fetcher after %s", run, l.id, 4*h.e.cfg.LeaseTTL)
			}
		}
	}
}

// A successor does not take its predecessor's host slot when the host may not start another
// request then: after a 429 halved the limit below the exchanges still running, it is
// cancelled and re-queued (no failure counted), and the host's count stays within the limit.
func TestPrefetchSuccessorCancelledWhenLimitShrank(t *testing.T) {
	h := newMemEngHarness(t, func(c *Config) { c.PerHostDelay = 0; c.PerHostConcurrency = 3 })
	defer h.close()
	c := h.connectPrefetch("f", 3, 1)
	if res := h.submit("b", prefetchPapers(6, "a.example")); res.err != nil {
		t.Fatal(res.err)
	}
	as, _, _ := recv(c)
	if len(as) != 4 || as[3].GetAfterLeaseId() != as[0].GetLeaseId() {
		t.Fatalf("want 3 leases and a successor of the first, got %v", as)
	}
	h.send(c, eventReq(as[2], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_RATE_LIMITED, 429, 0)))
	host := h.e.hosts[h.e.hostByName["a.example"]]
	if host.limit != 1 || host.active != 2 {
		t.Fatalf("after the 429: limit %d, active %d", host.limit, host.active)
	}
	recv(c)
	h.send(c, eventReq(as[0], 1, receivedEv()))
	_, cancels, _ := recv(c)
	if len(cancels) != 1 || cancels[0] != as[3].GetLeaseId() || host.active != 1 {
		t.Fatalf("cancels %v, active %d: want the successor cancelled, 1 exchange counted", cancels, host.active)
	}
	if p := h.e.papers[h.e.byBatch[batchKey(hashString(as[3].GetPaperId()), h.batch("b").idx)]]; p.state != stateQueued || p.failures != 0 {
		t.Fatalf("the successor's paper: %+v", p)
	}
}

// The prefetch windows are not filled by scanning every running lease in every iteration:
// while no host of a candidate has queued papers (here the only queued papers are on a host
// with a per-host delay, which gets no successors), iterations do not look at the candidates
// again; a paper queued for a candidate's host gets its successor in the next iteration.
func TestPrefetchScansOnlyAfterAQueueGrows(t *testing.T) {
	const running = 150
	h := newMemEngHarness(t, func(c *Config) {
		c.PerHostDelay = 0
		c.PerHostConcurrency = 1000
		c.HostOverrides = map[string]HostLimits{"slow.example": {Delay: new(time.Hour)}}
	})
	t.Cleanup(h.close)
	c := h.connectPrefetch("f", running+1, 4) // no credit left: more work goes to the window
	papers := prefetchPapers(running, "a.example")
	for i := range 5 {
		papers = append(papers, &pb.PaperSpec{PaperId: fmt.Sprintf("s%d", i), Urls: []string{fmt.Sprintf("https://slow.example/%d.pdf", i)}})
	}
	if res := h.submit("b", papers); res.err != nil {
		t.Fatal(res.err)
	}
	as, _, _ := recv(c)
	if len(as) != running+1 || c.waiting != 0 {
		t.Fatalf("%d assigns, %d waiting; want %d running leases and no successor", len(as), c.waiting, running+1)
	}
	seen := h.e.candidatesSeen
	for range 100 {
		h.step()
	}
	if n := h.e.candidatesSeen - seen; n > running {
		t.Fatalf("100 idle iterations examined %d prefetch candidates (%d running leases)", n, running)
	}
	// A paper for the running leases' host: it becomes a successor at once.
	if res := h.submit("c", []*pb.PaperSpec{{PaperId: "new", Urls: []string{"https://a.example/new.pdf"}}}); res.err != nil {
		t.Fatal(res.err)
	}
	as, _, _ = recv(c)
	if len(as) != 1 || as[0].GetAfterLeaseId() == "" || c.waiting != 1 {
		t.Fatalf("after a paper was queued: %v, %d waiting; want one successor", as, c.waiting)
	}
}

// Hand-backs count no failure and escape the lost-lease cap, but a fetcher that hands every
// successor back cannot make a paper's 16-bit attempt counter wrap around (to attempt 0, then
// lease ids reused): the paper fails first.
func TestPrefetchHandBacksDoNotWrapAttempts(t *testing.T) {
	h, c, as := prefetchSetup(t, 1, 1, 2)
	idx := h.e.byBatch[batchKey(hashString(as[1].GetPaperId()), h.batch("b").idx)]
	h.e.papers[idx].attempts = math.MaxUint16 - 2 // as after many hand-backs
	succ := as[1]
	for i := 0; ; i++ {
		h.send(c, eventReq(succ, 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0, 0)))
		if st := h.paperState("b", succ.GetPaperId()); st == pb.PaperState_PAPER_STATE_FAILED {
			break
		}
		next, _, _ := recv(c)
		if len(next) != 1 || next[0].GetPaperId() != succ.GetPaperId() || i > 3 {
			t.Fatalf("hand-back %d: %v (attempts %d), want the paper failed or leased again", i, next, h.e.papers[idx].attempts)
		}
		if next[0].GetAttempt() <= succ.GetAttempt() {
			t.Fatalf("attempt %d after attempt %d", next[0].GetAttempt(), succ.GetAttempt())
		}
		succ = next[0]
	}
	if p := h.e.papers[idx]; pb.FailureReason(p.reason) != pb.FailureReason_FAILURE_REASON_ATTEMPTS_EXHAUSTED || p.attempts == 0 {
		t.Fatalf("paper %+v, want failed attempts_exhausted", p)
	}
}

// A window larger than the running downloads is filled with chains, breadth-first: a
// successor of each running lease, then a successor of each waiting successor. A link of the
// chain takes its predecessor's host slot when that one's body is in, and a predecessor that
// fails before its body is in voids the whole chain behind it (each re-queued, no failure).
func TestPrefetchChainsFillTheWindow(t *testing.T) {
	h := newMemEngHarness(t, func(c *Config) { c.PerHostDelay = 0; c.PerHostConcurrency = 2 })
	t.Cleanup(h.close)
	c := h.connectPrefetch("f", 2, 4)
	if res := h.submit("b", prefetchPapers(10, "a.example")); res.err != nil {
		t.Fatal(res.err)
	}
	as, _, _ := recv(c)
	if len(as) != 6 {
		t.Fatalf("%d assigns, want 2 running leases and 4 successors: %v", len(as), as)
	}
	byID := map[string]*pb.Assign{}
	for _, a := range as {
		byID[a.GetLeaseId()] = a
	}
	// Breadth-first: the successors of the two running leases come before theirs.
	run0, run1 := as[0], as[1]
	if run0.GetAfterLeaseId() != "" || run1.GetAfterLeaseId() != "" ||
		as[2].GetAfterLeaseId() != run0.GetLeaseId() || as[3].GetAfterLeaseId() != run1.GetLeaseId() ||
		as[4].GetAfterLeaseId() != as[2].GetLeaseId() || as[5].GetAfterLeaseId() != as[3].GetLeaseId() {
		for _, a := range as {
			t.Logf("%s after %q", a.GetLeaseId(), a.GetAfterLeaseId())
		}
		t.Fatal("want two chains of two successors")
	}
	host := h.e.hosts[h.e.hostByName["a.example"]]
	if host.active != 2 || c.waiting != 4 || c.credits != 0 {
		t.Fatalf("active %d, waiting %d, credits %d", host.active, c.waiting, c.credits)
	}
	// run0's body is in: its successor takes its host slot, the next link still waits, and the
	// window's free place gets a successor at the end of a chain.
	h.send(c, eventReq(run0, 1, receivedEv()))
	if host.active != 2 || c.waiting != 4 {
		t.Fatalf("after run0's body: active %d, waiting %d", host.active, c.waiting)
	}
	more, _, _ := recv(c)
	if len(more) != 1 || more[0].GetAfterLeaseId() != as[4].GetLeaseId() && more[0].GetAfterLeaseId() != as[5].GetLeaseId() {
		t.Fatalf("after run0's body: %v, want a successor at the end of a chain", more)
	}
	h.send(c, eventReq(as[2], 1, startedEv(as[2])))
	h.send(c, eventReq(as[2], 2, receivedEv()))
	if l := h.e.leases[h.e.byBatch[batchKey(hashString(as[4].GetPaperId()), h.batch("b").idx)]]; !l.counted || host.active != 2 {
		t.Fatalf("the second link after its predecessor's body: counted %v, active %d", l.counted, host.active)
	}
	recv(c)
	// run1 fails before its body is in: as[3] and as[5] (and what follows as[5]) are void.
	h.send(c, eventReq(run1, 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_TIMEOUT, 0, 0)))
	_, cancels, _ := recv(c)
	want := map[string]bool{as[3].GetLeaseId(): true, as[5].GetLeaseId(): true}
	for _, id := range cancels {
		delete(want, id)
	}
	if len(want) != 0 {
		t.Fatalf("cancels %v, want the chain behind run1 (%s, %s)", cancels, as[3].GetLeaseId(), as[5].GetLeaseId())
	}
	for _, a := range []*pb.Assign{as[3], as[5]} {
		idx := h.e.byBatch[batchKey(hashString(a.GetPaperId()), h.batch("b").idx)]
		if p, l := h.e.papers[idx], h.e.leases[idx]; p.failures != 0 || l != nil && l.id == a.GetLeaseId() {
			t.Fatalf("voided successor %s: %+v, still leased: %v", a.GetLeaseId(), p, l != nil && l.id == a.GetLeaseId())
		}
	}
	if host.active != 1 {
		t.Fatalf("active %d after run1 failed, want 1 (the second link of run0's chain)", host.active)
	}
}

// A chain grows by one link per pass over the candidates; the passes after the first look
// only at the successors the previous pass leased, not again at every running lease of the
// stream (here 100 leases of a host without queued papers, examined once, not once per link).
func TestPrefetchChainPassesScanOnlyNewLinks(t *testing.T) {
	const others, window = 100, 50
	h := newMemEngHarness(t, func(c *Config) {
		c.PerHostDelay = 0
		c.PerHostConcurrency = 1000
		c.HostOverrides = map[string]HostLimits{"a.example": {Concurrency: new(1)}}
	})
	t.Cleanup(h.close)
	c := h.connectPrefetch("f", others+1, window)
	papers := prefetchPapers(others, "x.example")
	for i := range window + 1 {
		papers = append(papers, &pb.PaperSpec{PaperId: fmt.Sprintf("a%d", i), Urls: []string{fmt.Sprintf("https://a.example/%d.pdf", i)}})
	}
	seen := h.e.candidatesSeen
	if res := h.submit("b", papers); res.err != nil {
		t.Fatal(res.err)
	}
	as, _, _ := recv(c)
	if len(as) != others+1+window || c.waiting != window {
		t.Fatalf("%d assigns, %d waiting; want %d leases and a chain of %d successors", len(as), c.waiting, others+1, window)
	}
	if n := h.e.candidatesSeen - seen; n > 2*(others+window) {
		t.Fatalf("a chain of %d links examined %d prefetch candidates (%d running leases)", window, n, others+1)
	}
}

// stealSetup connects fetcher "a" (2 slots, window 2) to a coordinator without per-host delay
// (concurrency conc), submits n papers of one host (2 running on a, 2 successors waiting
// behind them), then connects fetcher "idle" with idleSlots credits and nothing left queued.
// Nothing is reclaimed before the successors waited reclaimAfter (their predecessors may be
// about to end); then the clock has moved on by reclaimAfter.
func stealSetup(t *testing.T, conc, n, idleSlots int) (h *engHarness, a, idle *fetcherConn, as []*pb.Assign) {
	t.Helper()
	h = newMemEngHarness(t, func(c *Config) { c.PerHostDelay = 0; c.PerHostConcurrency = conc })
	t.Cleanup(h.close)
	a = h.connectPrefetch("a", 2, 2)
	if res := h.submit("b", prefetchPapers(n, "a.example")); res.err != nil {
		t.Fatal(res.err)
	}
	as, _, _ = recv(a)
	if len(as) != 4 || as[2].GetAfterLeaseId() != as[0].GetLeaseId() || as[3].GetAfterLeaseId() != as[1].GetLeaseId() {
		t.Fatalf("want 2 leases and a successor of each, got %v", as)
	}
	idle = h.connectPrefetch("idle", idleSlots, 2)
	h.advance(reclaimAfter - time.Millisecond)
	if _, cancels, _ := recv(a); len(cancels) != 0 {
		t.Fatalf("cancels %v before the successors waited %v", cancels, reclaimAfter)
	}
	// Below its host's limit (2 running), the loop wakes up when they come of age.
	if w := h.e.nextWake(); conc > 2 && (w.IsZero() || w.After(h.clk.Now().Add(time.Millisecond))) {
		t.Fatalf("the loop next wakes up at %v, want by %v (the successors come of age)", w, h.clk.Now().Add(time.Millisecond))
	}
	h.advance(time.Millisecond)
	return h, a, idle, as
}

func abortedEv() *pb.DownloadEvent {
	return failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0, 0)
}

// A stream with credits it cannot use (nothing queued) takes back the waiting successors of
// another stream whose predecessors' bodies are not in (slow downloads): they are cancelled,
// and once the fetcher hands them back (ABORTED) re-queued without a failure and leased to
// the idle stream; each paper ends in exactly one terminal state.
func TestPrefetchIdleStreamReclaimsWaitingSuccessors(t *testing.T) {
	h, a, idle, as := stealSetup(t, 4, 4, 2)
	_, cancels, _ := recv(a)
	if len(cancels) != 2 || !(cancels[0] == as[2].GetLeaseId() && cancels[1] == as[3].GetLeaseId() ||
		cancels[0] == as[3].GetLeaseId() && cancels[1] == as[2].GetLeaseId()) {
		t.Fatalf("cancels %v, want the two waiting successors %s, %s", cancels, as[2].GetLeaseId(), as[3].GetLeaseId())
	}
	if got, _, _ := recv(idle); len(got) != 0 {
		t.Fatalf("the idle stream got %v before the hand-backs", got)
	}
	// The fetcher voids them (step 3): re-queued, no failure, leased to the idle stream.
	h.send(a, eventReq(as[2], 1, abortedEv()))
	h.send(a, eventReq(as[3], 1, abortedEv()))
	if _, _, acks := recv(a); len(acks) != 2 {
		t.Fatalf("acks %v, want the two hand-backs acknowledged", acks)
	}
	got, _, _ := recv(idle)
	if len(got) != 2 {
		t.Fatalf("the idle stream got %v, want the two reclaimed papers", got)
	}
	host := h.e.hosts[h.e.hostByName["a.example"]]
	if host.active != 4 || a.waiting != 0 || idle.credits != 0 {
		t.Fatalf("active %d, a.waiting %d, idle credits %d", host.active, a.waiting, idle.credits)
	}
	for i, g := range got {
		if g.GetAfterLeaseId() != "" || g.GetPaperId() != as[2].GetPaperId() && g.GetPaperId() != as[3].GetPaperId() {
			t.Fatalf("assign %d: %v", i, g)
		}
		h.send(idle, eventReq(g, 1, completedEv(g)))
		idx := h.e.byBatch[batchKey(hashString(g.GetPaperId()), h.batch("b").idx)]
		if p := h.e.papers[idx]; p.state != stateSucceeded || p.failures != 0 {
			t.Fatalf("paper %s: %+v", g.GetPaperId(), p)
		}
	}
	// A late event of a reclaimed lease is stale: the paper stays SUCCEEDED.
	h.send(a, eventReq(as[2], 2, completedEv(as[2])))
	if st := h.paperState("b", as[2].GetPaperId()); st != pb.PaperState_PAPER_STATE_SUCCEEDED {
		t.Fatalf("after a stale event: %v", st)
	}
}

// The race: the predecessor's body_received crosses the Cancel, and the fetcher had started the
// successor, so the Cancel aborts a running download. The successor counts against its host
// while it runs (it took its predecessor's slot) and its ABORTED failure re-queues it without a
// failure; a successor that completed before the Cancel arrived is simply SUCCEEDED.
func TestPrefetchReclaimRacesBodyReceived(t *testing.T) {
	h, a, idle, as := stealSetup(t, 4, 4, 2)
	if _, cancels, _ := recv(a); len(cancels) != 2 {
		t.Fatalf("cancels %v, want the two waiting successors", cancels)
	}
	host := h.e.hosts[h.e.hostByName["a.example"]]
	for i, p := range []*pb.Assign{as[0], as[1]} {
		h.send(a, eventReq(p, 1, receivedEv()))
		h.send(a, eventReq(as[2+i], 1, startedEv(as[2+i])))
	}
	if host.active != 2 {
		t.Fatalf("active %d: want the two started successors counted", host.active)
	}
	h.send(a, eventReq(as[2], 2, abortedEv())) // aborted by the Cancel
	h.send(a, eventReq(as[3], 2, completedEv(as[3])))
	idx2 := h.e.byBatch[batchKey(hashString(as[2].GetPaperId()), h.batch("b").idx)]
	if p := h.e.papers[idx2]; p.failures != 0 || host.failures != 0 {
		t.Fatalf("the aborted successor counted a failure: paper %+v, host failures %d", p, host.failures)
	}
	if st := h.paperState("b", as[3].GetPaperId()); st != pb.PaperState_PAPER_STATE_SUCCEEDED {
		t.Fatalf("the successor that completed: %v", st)
	}
	got, _, _ := recv(idle)
	if len(got) != 1 || got[0].GetPaperId() != as[2].GetPaperId() {
		t.Fatalf("the idle stream got %v, want %s", got, as[2].GetPaperId())
	}
	if host.active != 1 {
		t.Fatalf("active %d, want 1 (the re-leased paper)", host.active)
	}
	h.send(idle, eventReq(got[0], 1, completedEv(got[0])))
	if p := h.e.papers[idx2]; p.state != stateSucceeded || p.failures != 0 {
		t.Fatalf("re-leased paper %+v", p)
	}
}

// A successor whose predecessor's body is in (it is about to start) is not taken back; only
// as many successors are taken as the idle credits, from the tails of chains.
func TestPrefetchReclaimSparesStartingSuccessors(t *testing.T) {
	h := newMemEngHarness(t, func(c *Config) { c.PerHostDelay = 0; c.PerHostConcurrency = 8 })
	t.Cleanup(h.close)
	a := h.connectPrefetch("a", 2, 4)
	if res := h.submit("b", prefetchPapers(6, "a.example")); res.err != nil {
		t.Fatal(res.err)
	}
	as, _, _ := recv(a)
	if len(as) != 6 {
		t.Fatalf("want 2 leases and 2 chains of 2 successors, got %v", as)
	}
	h.send(a, eventReq(as[0], 1, receivedEv())) // as[2] takes its slot; as[4] waits on as[2]
	h.send(a, eventReq(as[1], 1, receivedEv())) // as[3] takes its slot; as[5] waits on as[3]
	recv(a)
	idle := h.connectPrefetch("idle", 1, 0)
	h.advance(reclaimAfter)
	_, cancels, _ := recv(a)
	if len(cancels) != 1 || cancels[0] != as[4].GetLeaseId() && cancels[0] != as[5].GetLeaseId() {
		t.Fatalf("cancels %v, want one of the successors waiting on a running download (%s, %s)",
			cancels, as[4].GetLeaseId(), as[5].GetLeaseId())
	}
	for _, s := range as[2:4] {
		if l := h.e.leases[h.e.byBatch[batchKey(hashString(s.GetPaperId()), h.batch("b").idx)]]; l == nil || l.id != s.GetLeaseId() || !l.counted {
			t.Fatalf("successor %s, whose predecessor's body is in, was taken", s.GetLeaseId())
		}
	}
	_ = idle
	// Without a credit left, nothing more is taken.
	h.advance(reclaimAfter)
	if _, more, _ := recv(a); len(more) != 0 {
		t.Fatalf("more cancels %v with no idle credit left", more)
	}
}

// A host at its concurrency limit is not stolen from: the idle stream could not start its
// paper now.
func TestPrefetchReclaimRespectsHostLimit(t *testing.T) {
	h, a, idle, _ := stealSetup(t, 2, 4, 2)
	if _, cancels, _ := recv(a); len(cancels) != 0 {
		t.Fatalf("cancels %v for a host at its limit", cancels)
	}
	if got, _, _ := recv(idle); len(got) != 0 {
		t.Fatalf("the idle stream got %v", got)
	}
	_ = h
}
