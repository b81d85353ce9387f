package coordinator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Single flight by DOI: two papers with the same DOI (other ids, other spellings) resolve and
// download it once; the second takes the first's PDF from the cache.

const (
	oaBase    = "https://oa.example"
	flightDOI = "10.1000/Shared.1"
)

// doiHarness is an engine whose API hosts have no spacing (only single flight may hold a
// paper back), adjusted by mutate.
func doiHarness(t *testing.T, mutate ...func(*Config)) *engHarness {
	t.Helper()
	return newEngHarness(t, func(c *Config) {
		c.PerHostConcurrency = 4
		c.Resolve = ResolveConfig{OpenAlexBase: oaBase, Email: "me@example.org"}
		c.HostOverrides = map[string]HostLimits{"oa.example": {Delay: new(time.Duration(0)), Concurrency: new(4)},
			"doi.org": {Delay: new(time.Duration(0)), Concurrency: new(4)}, "api.unpaywall.org": {Delay: new(time.Duration(0)), Concurrency: new(4)}}
		for _, m := range mutate {
			m(c)
		}
	})
}

func resolvedEv(urls ...string) *pb.DownloadEvent {
	return &pb.DownloadEvent{Kind: &pb.DownloadEvent_Resolved{Resolved: &pb.ResolveResult{CandidateUrls: urls}}}
}

func TestSingleFlightSameDOIInOneBatch(t *testing.T) {
	h := doiHarness(t)
	h.submit("b", []*pb.PaperSpec{
		{PaperId: "smith2020", Doi: flightDOI},
		{PaperId: "ABCD1234", Doi: "https://doi.org/10.1000/SHARED.1"},
	})
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 1 || as[0].GetResolve().GetRoute() != pb.ResolveRoute_RESOLVE_ROUTE_OPENALEX {
		t.Fatalf("assigns %v, want one OpenAlex step for the shared DOI", as)
	}
	if c := as[0].GetResolve().GetContact(); c != "me@example.org" {
		t.Fatalf("resolution step's contact %q, want the coordinator's --email", c)
	}
	first := as[0].GetPaperId()
	h.send(c, eventReq(as[0], 1, resolvedEv("https://repo.example/shared.pdf")))
	h.step()
	as, _, _ = recv(c)
	if len(as) != 1 || as[0].GetPaperId() != first || as[0].GetUrl() != "https://repo.example/shared.pdf" {
		t.Fatalf("assigns after the resolution %v, want %s's download of the candidate only", as, first)
	}
	checkNoSharedKeys(t, h.e)
	h.advance(time.Second)
	h.step()
	if more, _, _ := recv(c); len(more) != 0 {
		t.Fatalf("the twin was assigned while the DOI's plan runs: %v", more)
	}
	h.send(c, eventReq(as[0], 2, completedEv(as[0])))
	h.step()
	if more, _, _ := recv(c); len(more) != 0 {
		t.Fatalf("assigned after the DOI's download completed: %v", more)
	}
	b := h.batch("b")
	if b.counts[stateSucceeded] != 2 || b.cached != 1 {
		t.Fatalf("counts %v cached %d, want 2 succeeded (1 cached)", b.counts, b.cached)
	}
	if len(h.e.held) != 0 || len(h.e.parked) != 0 || len(h.e.waiters) != 0 {
		t.Fatalf("single-flight state left: held %v parked %v waiters %v", h.e.held, h.e.parked, h.e.waiters)
	}
}

// A paper of another batch waits for the DOI's plan too, also across a restart between two
// of its steps; when the owner fails, the waiter runs its own plan.
func TestSingleFlightDOIAcrossBatchesAndRestart(t *testing.T) {
	h := doiHarness(t)
	h.submit("a", []*pb.PaperSpec{{PaperId: "x", Doi: flightDOI}})
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 1 {
		t.Fatalf("%d assigns", len(as))
	}
	// OpenAlex knows no PDF: the next step (Unpaywall) is queued, not yet leased.
	h.send(c, eventReq(as[0], 1, resolvedEv()))
	h.step()
	h.submit("b", []*pb.PaperSpec{{PaperId: "y", Doi: "doi:" + flightDOI}})
	as, _, _ = recv(c)
	if len(as) != 1 || as[0].GetPaperId() != "x" || as[0].GetResolve().GetRoute() != pb.ResolveRoute_RESOLVE_ROUTE_UNPAYWALL {
		t.Fatalf("assigns %v, want x's Unpaywall step only", as)
	}
	checkNoSharedKeys(t, h.e)
	h.restart()
	c = h.connect("f", 10, &pb.InFlightLease{LeaseId: as[0].GetLeaseId()})
	h.step()
	if more, _, _ := recv(c); len(more) != 0 {
		t.Fatalf("assigned after the restart while x's plan runs: %v", more)
	}
	checkNoSharedKeys(t, h.e)
	// Unpaywall, the landing page and the CSL step find nothing: x fails, y runs its own plan.
	seq := int64(2)
	for range 3 {
		h.send(c, eventReq(as[0], seq, resolvedEv()))
		seq++
		h.step()
		as, _, _ = recv(c)
		if len(as) != 1 {
			t.Fatalf("assigns %v, want one", as)
		}
		if as[0].GetPaperId() == "y" {
			break
		}
	}
	if s := h.paperState("a", "x"); s != pb.PaperState_PAPER_STATE_FAILED {
		t.Fatalf("x is %v", s)
	}
	if as[0].GetPaperId() != "y" || as[0].GetResolve().GetRoute() != pb.ResolveRoute_RESOLVE_ROUTE_OPENALEX || as[0].GetAttempt() != 1 {
		t.Fatalf("after x failed: %v, want y's first step", as)
	}
	checkNoSharedKeys(t, h.e)
}

// Two papers of one DOI that both started their plans (a store written before DOIs were a
// single-flight key) are reloaded with one owner: the other waits for it, neither waits for
// the other.
func TestSingleFlightDOIReloadOneOwner(t *testing.T) {
	h := doiHarness(t)
	h.submit("a", []*pb.PaperSpec{{PaperId: "x", Doi: flightDOI}, {PaperId: "y", Doi: flightDOI}})
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 1 {
		t.Fatalf("%d assigns", len(as))
	}
	// Forget the owner, as the code before single flight by DOI did: the twin starts too.
	for idx, k := range h.e.doiOwner {
		delete(h.e.doiOwner, idx)
		delete(h.e.held, k)
	}
	h.e.released = append(h.e.released, h.e.waiters[doiKey(&pb.PaperSpec{Doi: flightDOI})]...)
	delete(h.e.waiters, doiKey(&pb.PaperSpec{Doi: flightDOI}))
	h.advance(time.Second)
	h.step()
	more, _, _ := recv(c)
	if len(more) != 1 {
		t.Fatalf("the twin was not started: %v", more)
	}
	h.restart()
	c = h.connect("f", 10) // both resolution steps are lost with the old fetcher
	h.advance(h.cfg.ReconnectGrace + time.Second)
	h.step()
	as, _, _ = recv(c)
	if len(as) != 1 {
		t.Fatalf("after the reload %d assigns %v, want the owner's step only", len(as), as)
	}
	checkNoSharedKeys(t, h.e)
	h.send(c, eventReq(as[0], 1, resolvedEv("https://repo.example/shared.pdf")))
	h.step()
	as, _, _ = recv(c)
	if len(as) != 1 || as[0].GetUrl() != "https://repo.example/shared.pdf" {
		t.Fatalf("assigns %v", as)
	}
	h.send(c, eventReq(as[0], 2, completedEv(as[0])))
	h.step()
	if b := h.batch("a"); b.counts[stateSucceeded] != 2 || b.cached != 1 {
		t.Fatalf("counts %v cached %d", b.counts, b.cached)
	}
}

// The API hosts get their politeness defaults: OpenAlex's requests start 150 ms apart, at most
// 4 at a time, and a 429 with Retry-After pauses the host (the step is tried again after it).
func TestAPIHostPoliteness(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.PerHostConcurrency = 8
		c.Resolve = ResolveConfig{OpenAlexBase: oaBase, Email: "me@example.org"}
	})
	var specs []*pb.PaperSpec
	for i := range 6 {
		specs = append(specs, &pb.PaperSpec{PaperId: fmt.Sprintf("p%d", i), Doi: fmt.Sprintf("10.1000/p%d", i)})
	}
	h.submit("b", specs)
	c := h.connect("f", 20)
	var leases []*pb.Assign
	take := func(want int, what string) {
		t.Helper()
		all, _, _ := recv(c)
		var as []*pb.Assign
		for _, a := range all {
			if strings.HasPrefix(a.GetUrl(), oaBase+"/") {
				as = append(as, a)
			}
		}
		if len(as) != want {
			t.Fatalf("%s: %d OpenAlex assigns %v, want %d", what, len(as), as, want)
		}
		leases = append(leases, as...)
	}
	take(1, "at once")
	for i := 1; i < 4; i++ {
		h.advance(149 * time.Millisecond)
		h.step()
		take(0, "149 ms after the last start")
		h.advance(time.Millisecond)
		h.step()
		take(1, "150 ms after the last start")
	}
	h.advance(time.Second)
	h.step()
	take(0, "with 4 requests running")
	// The first answers 429, Retry-After 2s: the host pauses (its paper goes on with its next
	// route, Unpaywall, on another host; the OpenAlex step is not retired).
	h.send(c, eventReq(leases[0], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_RATE_LIMITED, 429, 2*time.Second)))
	h.step()
	// The other three answer: their slots are free, but the host is paused.
	for i, l := range leases[1:4] {
		h.send(c, eventReq(l, int64(i+1), resolvedEv()))
	}
	h.step()
	take(0, "during the pause")
	h.advance(1900 * time.Millisecond)
	h.step()
	take(0, "during the pause")
	h.advance(200 * time.Millisecond)
	h.step()
	take(1, "after the pause")
}

// Every route is tried before a DOI is given up: when transient failures (a repository timing
// out, 503s) use up a DOI paper's attempts, the step that failed is retired rather than the
// paper, while a route has not been tried; the paper then fails as attempts_exhausted, its
// message listing what each route gave.
func TestEveryRouteTriedBeforeAttemptsRunOut(t *testing.T) {
	h := doiHarness(t, func(c *Config) { c.MaxAttempts = 2 })
	h.submit("b", []*pb.PaperSpec{{PaperId: "x", Doi: flightDOI}})
	c := h.connect("f", 10)
	seq := int64(0)
	next := func() *pb.Assign {
		t.Helper()
		for range 10 {
			as, _, _ := recv(c)
			if len(as) == 1 {
				return as[0]
			}
			if len(as) > 1 {
				t.Fatalf("assigns %v", as)
			}
			h.advance(time.Minute) // a retry's backoff
			h.step()
		}
		t.Fatalf("nothing assigned; paper %v", h.paperState("b", "x"))
		return nil
	}
	send := func(a *pb.Assign, ev *pb.DownloadEvent) {
		seq++
		h.send(c, eventReq(a, seq, ev))
		h.step()
	}
	timeout := func() *pb.DownloadEvent {
		return failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_TIMEOUT, 0, 0)
	}
	a := next()
	if a.GetResolve().GetRoute() != pb.ResolveRoute_RESOLVE_ROUTE_OPENALEX {
		t.Fatalf("first step %v", a)
	}
	// OpenAlex lists three copies on a repository that times out.
	send(a, resolvedEv("https://repo.example/1.pdf", "https://repo.example/2.pdf", "https://repo.example/3.pdf"))
	routes := map[pb.ResolveRoute]bool{}
	for range 12 {
		if s := h.paperState("b", "x"); s == pb.PaperState_PAPER_STATE_FAILED {
			break
		}
		a = next()
		if r := a.GetResolve().GetRoute(); r != pb.ResolveRoute_RESOLVE_ROUTE_UNSPECIFIED {
			routes[r] = true
			send(a, resolvedEv()) // the other routes find nothing
			continue
		}
		send(a, timeout())
	}
	for _, r := range []pb.ResolveRoute{pb.ResolveRoute_RESOLVE_ROUTE_UNPAYWALL, pb.ResolveRoute_RESOLVE_ROUTE_LANDING_PAGE, pb.ResolveRoute_RESOLVE_ROUTE_CSL_LINK} {
		if !routes[r] {
			t.Errorf("route %v never tried before the paper was given up", r)
		}
	}
	idx := h.e.byBatch[batchKey(hashString("x"), h.batch("b").idx)]
	p := &h.e.papers[idx]
	if p.state != stateFailed || pb.FailureReason(p.reason) != pb.FailureReason_FAILURE_REASON_ATTEMPTS_EXHAUSTED {
		t.Fatalf("paper %d reason %v, want failed attempts_exhausted", p.state, pb.FailureReason(p.reason))
	}
	if p.attempts > 2+6 {
		t.Errorf("%d attempts: a retired step was tried again", p.attempts)
	}
}

// The landing page a DOI redirects to is requested in a step of its own, under the publisher
// host's politeness: the resolver's step (stay_on_host) reports the redirect, the coordinator
// leases the page on the publisher's host; a 404 there is the page's, not an unknown DOI.
func TestLandingPageForwardIsItsOwnStep(t *testing.T) {
	h := doiHarness(t, func(c *Config) {
		c.Resolve = ResolveConfig{OpenAlexBase: oaBase} // no e-mail: no Unpaywall step
		c.HostOverrides["pub.example"] = HostLimits{Delay: new(5 * time.Second), Concurrency: new(1)}
	})
	h.submit("b", []*pb.PaperSpec{{PaperId: "x", Doi: flightDOI}, {PaperId: "y", Doi: "10.1000/other"}})
	c := h.connect("f", 10)
	seq := map[string]int64{}
	send := func(a *pb.Assign, ev *pb.DownloadEvent) {
		seq[a.GetPaperId()]++
		h.send(c, eventReq(a, seq[a.GetPaperId()], ev))
		h.step()
	}
	landing := map[string]*pb.Assign{}
	for range 4 {
		as, _, _ := recv(c)
		for _, a := range as {
			switch r := a.GetResolve(); {
			case r.GetRoute() == pb.ResolveRoute_RESOLVE_ROUTE_OPENALEX:
				send(a, resolvedEv())
			case r.GetRoute() == pb.ResolveRoute_RESOLVE_ROUTE_LANDING_PAGE && strings.HasPrefix(a.GetUrl(), "https://doi.org/"):
				if !r.GetStayOnHost() {
					t.Fatalf("the resolver's step does not ask to stay on its host: %v", a)
				}
				send(a, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Resolved{Resolved: &pb.ResolveResult{
					ForwardUrl: "https://pub.example/article/" + a.GetPaperId(), Note: "forwards to pub.example"}}})
			case r.GetRoute() == pb.ResolveRoute_RESOLVE_ROUTE_LANDING_PAGE:
				landing[a.GetPaperId()] = a
			}
		}
		h.advance(time.Second)
		h.step()
	}
	a := landing["x"]
	if a == nil || a.GetUrl() != "https://pub.example/article/x" || !a.GetResolve().GetStayOnHost() {
		t.Fatalf("landing page steps %v, want x's on pub.example", landing)
	}
	if len(landing) != 1 {
		t.Fatalf("both landing pages leased within the publisher's 5 s: %v", landing)
	}
	// The page is gone (404): not an unknown DOI, and the CSL route is still asked.
	send(a, failedEv(pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_NOT_FOUND, 404, 0))
	as, _, _ := recv(c)
	csl := false
	for _, a := range as {
		csl = csl || a.GetPaperId() == "x" && a.GetResolve().GetRoute() == pb.ResolveRoute_RESOLVE_ROUTE_CSL_LINK
	}
	if !csl {
		t.Fatalf("after the publisher's 404: %v, want x's CSL step", as)
	}
}

// A DOI's owner that is cancelled mid-plan lets the DOI go: a waiter of another batch runs its
// own plan, and nothing of the owner's is left in the single-flight state.
func TestSingleFlightDOIOwnerCancelled(t *testing.T) {
	h := doiHarness(t)
	h.submit("a", []*pb.PaperSpec{{PaperId: "x", Doi: flightDOI}})
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 1 || as[0].GetPaperId() != "x" {
		t.Fatalf("assigns %v, want x's first step", as)
	}
	h.submit("b", []*pb.PaperSpec{{PaperId: "y", Doi: flightDOI}})
	if more, _, _ := recv(c); len(more) != 0 {
		t.Fatalf("y assigned while x owns the DOI: %v", more)
	}
	r := &cancelBatchReq{id: "a", reply: make(chan batchResult, 1)}
	h.apply(r)
	if res := <-r.reply; res.err != nil {
		t.Fatal(res.err)
	}
	if _, cancels, _ := recv(c); len(cancels) != 1 || cancels[0] != as[0].GetLeaseId() {
		t.Fatalf("cancels %v, want x's lease", cancels)
	}
	// The fetcher confirms the abort.
	h.send(c, eventReq(as[0], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0, 0)))
	h.step()
	if s := h.paperState("a", "x"); s != pb.PaperState_PAPER_STATE_CANCELLED {
		t.Fatalf("x is %v", s)
	}
	as, _, _ = recv(c)
	if len(as) != 1 || as[0].GetPaperId() != "y" || as[0].GetAttempt() != 1 {
		t.Fatalf("after x was cancelled: %v, want y's first step", as)
	}
	xIdx := h.e.byBatch[batchKey(hashString("x"), h.batch("a").idx)]
	if _, owns := h.e.doiOwner[xIdx]; owns || len(h.e.doiOwner) != 1 || len(h.e.parked) != 0 || len(h.e.waiters) != 0 {
		t.Fatalf("single-flight state: owners %v parked %v waiters %v", h.e.doiOwner, h.e.parked, h.e.waiters)
	}
}

// Only a step sent with stay_on_host may forward: a forward_url in the result of another
// route (an API's JSON) is not followed.
func TestForwardOnlyFromStayOnHostSteps(t *testing.T) {
	h := doiHarness(t)
	h.submit("a", []*pb.PaperSpec{{PaperId: "x", Doi: flightDOI}})
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 1 || as[0].GetResolve().GetRoute() != pb.ResolveRoute_RESOLVE_ROUTE_OPENALEX || as[0].GetResolve().GetStayOnHost() {
		t.Fatalf("assigns %v, want x's OpenAlex step, not staying on its host", as)
	}
	h.send(c, eventReq(as[0], 1, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Resolved{Resolved: &pb.ResolveResult{
		ForwardUrl: "https://elsewhere.example/x"}}}))
	h.step()
	as, _, _ = recv(c)
	if len(as) != 1 || strings.Contains(as[0].GetUrl(), "elsewhere.example") {
		t.Fatalf("after an OpenAlex result with a forward: %v, want the next route, not the forward", as)
	}
}
