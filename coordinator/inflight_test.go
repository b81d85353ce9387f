package coordinator

import (
	"fmt"
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Single flight (inflight.go): a paper whose cache key is being downloaded by another lease
// waits for that lease instead of downloading the same thing at the same time.

const sharedURL = "https://h.example/shared.pdf"

// assignedURLs returns how many of as were assigned each URL.
func assignedURLs(as []*pb.Assign) map[string]int {
	n := map[string]int{}
	for _, a := range as {
		n[a.GetUrl()]++
	}
	return n
}

// leasesShareNoKey returns an error when two live leases share a cache key: a paper id, or
// the URL a download was assigned.
func leasesShareNoKey(e *engine) error {
	seen := map[string]string{}
	for _, l := range e.leases {
		keys := []string{"id " + l.paperID}
		if l.resolve == nil {
			keys = append(keys, "url "+l.url)
		}
		for _, k := range keys {
			if other, dup := seen[k]; dup {
				return fmt.Errorf("leases %s and %s both hold %s", other, l.name(), k)
			}
			seen[k] = l.name()
		}
	}
	return nil
}

// singleFlightConsistent checks the single-flight bookkeeping between iterations: held counts
// exactly the live leases' keys and the DOI keys owned by live planned papers (one each), and every parked paper waits for a held key or was released.
func singleFlightConsistent(e *engine) error {
	if len(e.letGo) != 0 {
		return fmt.Errorf("%d keys not let go after the flush", len(e.letGo))
	}
	want := map[uint64]int32{}
	for _, l := range e.leases {
		if l.keys != leaseKeys(l) {
			return fmt.Errorf("lease %s holds keys %v, want %v", l.name(), l.keys, leaseKeys(l))
		}
		for _, k := range l.keys {
			if k != 0 {
				want[k]++
			}
		}
	}
	owners := map[uint64]bool{}
	for idx, k := range e.doiOwner {
		if p := &e.papers[idx]; p.flags&flagPlanned == 0 || p.state == 0 || terminal(p.state) {
			return fmt.Errorf("paper %d in state %d owns a DOI key", idx, p.state)
		}
		if owners[k] {
			return fmt.Errorf("two papers own DOI key %x", k)
		}
		owners[k] = true
		want[k]++
	}
	if len(want) != len(e.held) {
		return fmt.Errorf("held %v, the leases hold %v", e.held, want)
	}
	for k, n := range want {
		if e.held[k] != n {
			return fmt.Errorf("held %v, the leases hold %v", e.held, want)
		}
	}
	released := map[uint32]bool{}
	for _, idx := range e.released {
		released[idx] = true
	}
	waiting := 0
	for k, w := range e.waiters {
		if e.held[k] == 0 {
			return fmt.Errorf("papers %v wait for a key nobody holds", w)
		}
		waiting += len(w)
	}
	for idx, k := range e.parked {
		if s := e.papers[idx].state; s != stateQueued && s != stateCancelled {
			return fmt.Errorf("parked paper %d in state %d", idx, s)
		}
		if _, owner := e.doiOwner[idx]; owner && owners[k] {
			// An owner waits only for a lease, which ends: no two papers wait for each other.
			return fmt.Errorf("paper %d owns a DOI and waits for a DOI", idx)
		}
		if e.held[k] == 0 && !released[idx] {
			return fmt.Errorf("paper %d parked on a key nobody holds, not released", idx)
		}
	}
	if waiting+len(e.released) < len(e.parked) {
		return fmt.Errorf("%d parked papers, %d waiting or released", len(e.parked), waiting+len(e.released))
	}
	return nil
}

// checkNoSharedKeys fails when two live leases share a cache key.
func checkNoSharedKeys(t *testing.T, e *engine) {
	t.Helper()
	if err := leasesShareNoKey(e); err != nil {
		t.Fatal(err)
	}
	if err := singleFlightConsistent(e); err != nil {
		t.Fatal(err)
	}
}

func TestSingleFlightSameURLInOneBatch(t *testing.T) {
	h := newEngHarness(t, func(c *Config) { c.PerHostConcurrency = 4 })
	h.submit("b", []*pb.PaperSpec{
		{PaperId: "p1", Urls: []string{sharedURL}},
		{PaperId: "p2", Urls: []string{sharedURL}},
		{PaperId: "p3", Urls: []string{"https://other.example/x.pdf", sharedURL}},
	})
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if n := assignedURLs(as); n[sharedURL] != 1 || len(as) != 1 {
		t.Fatalf("assigned %v, want the shared URL once and nothing else", n)
	}
	checkNoSharedKeys(t, h.e)
	if s := h.paperState("b", "p2"); s != pb.PaperState_PAPER_STATE_QUEUED {
		t.Fatalf("p2 is %v while it waits, want QUEUED", s)
	}
	h.send(c, eventReq(as[0], 1, completedEv(as[0])))
	h.step() // the waiters look up the cache once the success is committed
	if more, _, _ := recv(c); len(more) != 0 {
		t.Fatalf("assigned after the shared download completed: %v", assignedURLs(more))
	}
	b := h.batch("b")
	if b.counts[stateSucceeded] != 3 || b.cached != 2 {
		t.Fatalf("counts %v cached %d, want 3 succeeded (2 cached)", b.counts, b.cached)
	}
	if len(h.e.held) != 0 || len(h.e.parked) != 0 || len(h.e.waiters) != 0 || len(h.e.released) != 0 {
		t.Fatalf("single-flight state left: held %v parked %v waiters %v", h.e.held, h.e.parked, h.e.waiters)
	}
	for _, id := range []string{"p2", "p3"} {
		if p := &h.e.papers[h.e.byBatch[batchKey(hashString(id), b.idx)]]; p.attempts != 0 || p.flags&flagCached == 0 {
			t.Errorf("%s: attempts %d flags %b, want a cache hit without an attempt", id, p.attempts, p.flags)
		}
	}
}

// The cancelled batch's download still runs when the same papers are submitted again: they
// wait for it, and take its result when it succeeds (except a paper expecting other content).
func TestSingleFlightCancelThenResubmit(t *testing.T) {
	h := newEngHarness(t, func(c *Config) { c.PerHostConcurrency = 4 })
	h.submit("old", []*pb.PaperSpec{{PaperId: "x", Urls: []string{sharedURL}}})
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 1 {
		t.Fatalf("%d assigns", len(as))
	}
	cr := &cancelBatchReq{id: "old", reason: "superseded", reply: make(chan batchResult, 1)}
	h.apply(cr)
	if res := <-cr.reply; res.err != nil {
		t.Fatal(res.err)
	}
	if _, cancels, _ := recv(c); len(cancels) != 1 {
		t.Fatalf("%d cancels", len(cancels))
	}
	h.submit("new", []*pb.PaperSpec{
		{PaperId: "x", Urls: []string{"https://elsewhere.example/x.pdf"}}, // same id
		{PaperId: "y", Urls: []string{sharedURL}},                         // same URL
		{PaperId: "z", Urls: []string{sharedURL}, ExpectedSha256: fakeSHA("not x")},
	})
	if more, _, _ := recv(c); len(more) != 0 {
		t.Fatalf("assigned while the cancelled batch's download runs: %v", assignedURLs(more))
	}
	checkNoSharedKeys(t, h.e)
	// The fetcher finished before it saw the Cancel: the download is kept.
	h.send(c, eventReq(as[0], 1, completedEv(as[0])))
	h.step()
	more, _, _ := recv(c)
	if len(more) != 1 || more[0].GetPaperId() != "z" {
		t.Fatalf("assigns after the completion: %v, want z only (it expects other content)", more)
	}
	b := h.batch("new")
	if b.counts[stateSucceeded] != 2 || b.cached != 2 || b.counts[stateDownloading] != 1 {
		t.Fatalf("counts %v cached %d, want x and y cached, z downloading", b.counts, b.cached)
	}
	if more[0].GetAttempt() != 1 {
		t.Fatalf("z's attempt %d: waiting counted an attempt", more[0].GetAttempt())
	}
}

// A lease that ends without a success (aborted by a Cancel, lost with its stream, reclaimed)
// lets its waiters go: one of them downloads, the others wait for it.
func TestSingleFlightAfterFailures(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.PerHostConcurrency = 4
		c.LeaseTTL = 10 * time.Second
	})
	h.submit("old", []*pb.PaperSpec{{PaperId: "x", Urls: []string{sharedURL}}})
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	cr := &cancelBatchReq{id: "old", reason: "superseded", reply: make(chan batchResult, 1)}
	h.apply(cr)
	<-cr.reply
	h.submit("new", []*pb.PaperSpec{{PaperId: "y", Urls: []string{sharedURL}}, {PaperId: "w", Urls: []string{sharedURL}}})
	// The fetcher aborts the cancelled download.
	h.send(c, eventReq(as[0], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0, 0)))
	h.step()
	as, _, _ = recv(c)
	if len(as) != 1 || as[0].GetUrl() != sharedURL || as[0].GetAttempt() != 1 {
		t.Fatalf("after the abort: %v, want one of y, w on its first attempt", as)
	}
	checkNoSharedKeys(t, h.e)
	// Its stream breaks: the lost paper and the waiter compete again, one downloads.
	h.apply(&goneMsg{c: c})
	c2 := h.connect("g", 10)
	h.step()
	as, _, _ = recv(c2)
	if len(as) != 1 || as[0].GetUrl() != sharedURL {
		t.Fatalf("after the stream broke: %v, want one download of the shared URL", as)
	}
	checkNoSharedKeys(t, h.e)
	// Its lease expires: reclaimed, and again exactly one download.
	h.advance(11 * time.Second)
	h.step()
	as, cancels, _ := recv(c2)
	if len(cancels) != 1 || len(as) != 1 || as[0].GetUrl() != sharedURL {
		t.Fatalf("after the lease expired: cancels %v assigns %v", cancels, as)
	}
	checkNoSharedKeys(t, h.e)
	h.send(c2, eventReq(as[0], 1, completedEv(as[0])))
	h.step()
	b := h.batch("new")
	if b.counts[stateSucceeded] != 2 || b.cached != 1 {
		t.Fatalf("counts %v cached %d, want both succeeded, one cached", b.counts, b.cached)
	}
}

// After a restart the reloaded leases hold their keys again: a paper sharing one waits for the
// re-announced lease.
func TestSingleFlightAfterRestart(t *testing.T) {
	h := newEngHarness(t, func(c *Config) { c.PerHostConcurrency = 4 })
	h.submit("a", []*pb.PaperSpec{{PaperId: "x", Urls: []string{sharedURL}}, {PaperId: "y", Urls: []string{sharedURL}}})
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 1 {
		t.Fatalf("%d assigns", len(as))
	}
	h.restart()
	c = h.connect("f", 10, &pb.InFlightLease{LeaseId: as[0].GetLeaseId()})
	h.step()
	if more, _, _ := recv(c); len(more) != 0 {
		t.Fatalf("assigned beside the re-announced lease: %v", assignedURLs(more))
	}
	h.send(c, eventReq(as[0], 2, completedEv(as[0])))
	h.step()
	if b := h.batch("a"); b.counts[stateSucceeded] != 2 || b.cached != 1 {
		t.Fatalf("counts %v cached %d", b.counts, b.cached)
	}
}

// A batch cancelled with finish_running (what `paperfetch get` does to the run it replaces)
// cancels its queued papers at once but lets its running downloads finish: a paper of the new
// batch waiting for one of them takes its result instead of downloading it again.
func TestCancelFinishRunningFeedsWaiters(t *testing.T) {
	h := newEngHarness(t, func(c *Config) { c.PerHostConcurrency = 1 })
	h.submit("old", []*pb.PaperSpec{
		{PaperId: "x", Urls: []string{sharedURL}},
		{PaperId: "q", Urls: []string{"https://h.example/q.pdf"}}, // queued behind x (concurrency 1)
	})
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 1 || as[0].GetUrl() != sharedURL {
		t.Fatalf("assigns %v", as)
	}
	cr := &cancelBatchReq{id: "old", reason: "superseded", finishRunning: true, reply: make(chan batchResult, 1)}
	h.apply(cr)
	if res := <-cr.reply; res.err != nil {
		t.Fatal(res.err)
	}
	if _, cancels, _ := recv(c); len(cancels) != 0 {
		t.Fatalf("cancels %v: a running download was aborted", cancels)
	}
	old := h.batch("old")
	if old.state != pb.BatchState_BATCH_STATE_CANCELLED || old.counts[stateCancelled] != 1 || old.counts[stateDownloading] != 1 {
		t.Fatalf("old batch %v counts %v, want CANCELLED with q cancelled, x running", old.state, old.counts)
	}
	h.submit("new", []*pb.PaperSpec{{PaperId: "y", Urls: []string{sharedURL}}})
	if more, _, _ := recv(c); len(more) != 0 {
		t.Fatalf("assigned while the old download runs: %v", assignedURLs(more))
	}
	h.send(c, eventReq(as[0], 1, completedEv(as[0])))
	h.step()
	if s := h.paperState("old", "x"); s != pb.PaperState_PAPER_STATE_SUCCEEDED {
		t.Fatalf("x is %v after its completion, want SUCCEEDED", s)
	}
	if nb := h.batch("new"); nb.counts[stateSucceeded] != 1 || nb.cached != 1 {
		t.Fatalf("new batch counts %v cached %d, want y cached", nb.counts, nb.cached)
	}
	if !old.settled() {
		t.Fatalf("old batch not settled: %v", old.counts)
	}
}

// A waiter takes the finished download's PDF only under the cache rules, checked when it is
// taken up: not when the blob was found damaged, nor when the batch that downloaded it was
// deleted meanwhile.
func TestSingleFlightWaiterFollowsCacheRules(t *testing.T) {
	for name, meanwhile := range map[string]func(h *engHarness, a *pb.Assign){
		"damaged": func(h *engHarness, a *pb.Assign) {
			h.apply(&blobDamagedMsg{key: completedEv(a).GetCompleted().GetBlobKey()})
		},
		"deleted": func(h *engHarness, _ *pb.Assign) {
			r := &deleteReq{id: "a", reply: make(chan deleteResult, 1)}
			h.apply(r)
			if res := <-r.reply; res.err != nil {
				t.Fatal(res.err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newEngHarness(t, func(c *Config) { c.PerHostConcurrency = 4 })
			h.submit("a", []*pb.PaperSpec{{PaperId: "x", Urls: []string{sharedURL}}})
			h.submit("b", []*pb.PaperSpec{{PaperId: "y", Urls: []string{sharedURL}}})
			c := h.connect("f", 10)
			as, _, _ := recv(c)
			if len(as) != 1 {
				t.Fatalf("%d assigns", len(as))
			}
			h.send(c, eventReq(as[0], 1, completedEv(as[0])))
			meanwhile(h, as[0]) // before y is taken up (the iteration after the completion's commit)
			more, _, _ := recv(c)
			if len(more) != 1 || more[0].GetPaperId() != "y" || more[0].GetAttempt() != 1 {
				t.Fatalf("assigns %v, want y downloaded on its first attempt", more)
			}
			if b := h.batch("b"); b.cached != 0 {
				t.Fatalf("y is a cache hit of an unusable blob")
			}
		})
	}
}
