package coordinator

import (
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Folded messages (step 8 of the Work protocol): a fetcher that asks gets a Welcome first;
// a started event folded into a later one counts as that started event; credits folded into
// an event count exactly like a Credits message.

// connectFolding connects fetcher id asking to fold, and returns the Welcome it got first.
func (h *engHarness) connectFolding(id string, slots, prefetch int) (*fetcherConn, *pb.Welcome) {
	h.t.Helper()
	c := h.connectHello(&pb.Hello{FetcherId: id, BootId: "b", Slots: int32(slots), Prefetch: int32(prefetch), FoldEvents: true})
	select {
	case m := <-c.out:
		if m.GetWelcome() == nil {
			h.t.Fatalf("first message %v, want a Welcome", m)
		}
		return c, m.GetWelcome()
	default:
		h.t.Fatal("no Welcome")
		return nil, nil
	}
}

// foldedStart marks ev as carrying its lease's started event.
func foldedStart(ev *pb.DownloadEvent) *pb.DownloadEvent {
	ev.FoldedStart = true
	return ev
}

// withCredits folds n credits into r.
func withCredits(r *pb.WorkRequest, n int32) *pb.WorkRequest {
	r.FoldedCredits = n
	return r
}

// A Welcome answers only a Hello that asks for it, before anything else, and says how long
// started events may be held: a tenth of the start timeout, at most a second.
func TestWelcomeOnlyWhenAsked(t *testing.T) {
	for _, tc := range []struct {
		start, hold time.Duration
	}{{30 * time.Second, time.Second}, {5 * time.Second, 500 * time.Millisecond}} {
		h := newMemEngHarness(t, func(c *Config) { c.StartTimeout = tc.start })
		h.submit("b", oneHost("p", 2))
		c, w := h.connectFolding("f", 2, 0)
		if !w.GetFoldEvents() || w.GetStartHold().AsDuration() != tc.hold {
			t.Fatalf("start timeout %v: welcome %v, want folding with a hold of %v", tc.start, w, tc.hold)
		}
		if as, _, _ := recv(c); len(as) == 0 {
			t.Fatal("no Assign after the Welcome")
		}
		old := h.connect("old", 2)
		for len(old.out) > 0 {
			if m := <-old.out; m.GetWelcome() != nil {
				t.Fatal("a Welcome for a fetcher that did not ask (an older fetcher)")
			}
		}
		h.close()
	}
}

// An event with folded_start counts as the lease's started event: the lease is not reclaimed
// for want of a started event (it is, without the fold).
func TestFoldedStartCountsAsStarted(t *testing.T) {
	for _, fold := range []bool{true, false} {
		h := newMemEngHarness(t, func(c *Config) {
			c.PerHostConcurrency, c.StartTimeout, c.LeaseTTL = 1, 10*time.Second, time.Hour
		})
		h.submit("b", oneHost("p", 2))
		c, _ := h.connectFolding("f", 4, 0)
		as, _, _ := recv(c)
		if len(as) != 1 {
			t.Fatalf("%d assigns, want 1", len(as))
		}
		ev := &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 10}}}
		if fold {
			ev = foldedStart(ev)
		}
		h.send(c, eventReq(as[0], 2, ev)) // sequence 1 was the folded started event's
		h.advance(20 * time.Second)
		_, cancels, _ := recv(c)
		if reclaimed := len(cancels) > 0 || c.closed; reclaimed == fold {
			t.Fatalf("folded start %v: reclaimed %v (cancels %v)", fold, reclaimed, cancels)
		}
		h.close()
	}
}

// A folded start is accounted exactly like a separate started event: a successor that starts
// before its predecessor's body_received holds a host slot of its own, and a started
// successor that fails ABORTED is a failed attempt, not a hand-back (only a successor that
// never started is handed back).
func TestFoldedStartOfSuccessor(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(h *engHarness, c *fetcherConn, as []*pb.Assign)
	}{
		{"separate", func(h *engHarness, c *fetcherConn, as []*pb.Assign) {
			h.send(c, eventReq(as[1], 1, startedEv(as[1])))
			h.send(c, eventReq(as[1], 2, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 1}}}))
		}},
		{"folded", func(h *engHarness, c *fetcherConn, as []*pb.Assign) {
			h.send(c, eventReq(as[1], 2, foldedStart(&pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 1}}})))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, c, as := prefetchSetup(t, 2, 1, 4)
			host := h.e.hosts[h.e.hostByName["a.example"]]
			// The successor starts early (a fetcher breaking the protocol): it runs on its own.
			tc.send(h, c, as)
			if host.active != 2 || h.e.leases[uint32FromLease(t, h, as[1], "f")].pred != nil {
				t.Fatalf("successor started early: host active %d, want 2 (it holds a slot of its own)", host.active)
			}
			h.send(c, eventReq(as[1], 3, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0, 0)))
			if n := abortedCount(t, h); n != 1 {
				t.Fatalf("a started successor that failed ABORTED: %v aborted attempts, want 1 (not a hand-back)", n)
			}
			if host.active != 1 {
				t.Fatalf("after its failure: host active %d, want 1", host.active)
			}
		})
	}
	// Without a start, separate or folded, an ABORTED successor is a hand-back.
	h, c, as := prefetchSetup(t, 2, 1, 4)
	h.send(c, eventReq(as[1], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0, 0)))
	if n, a := successorCount(t, h, "handed_back"), abortedCount(t, h); n != 1 || a != 0 {
		t.Fatalf("a successor that never started: %v handed back, %v aborted attempts; want 1, 0", n, a)
	}
}

// abortedCount reads attempt_failures_total{reason="aborted"}.
func abortedCount(t *testing.T, h *engHarness) float64 {
	t.Helper()
	var m dto.Metric
	if err := h.e.m.failures.WithLabelValues("aborted").Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// Credits folded into an event count once, like a Credits message after it, whatever became
// of the event (a stale or duplicate event, or one for another stream's lease, still returns
// the sender's credits and only the sender's), within the same bound (maxCredits); negative
// ones and those of a closed stream count nothing.
func TestFoldedCreditsAccounted(t *testing.T) {
	h := newMemEngHarness(t, func(c *Config) { c.PerHostConcurrency = 100 })
	h.submit("b", oneHost("p", 20))
	c, _ := h.connectFolding("f", 1, 0)
	other := h.connect("g", 1)
	as, _, _ := recv(c)
	ao, _, _ := recv(other)
	if len(as) != 1 || len(ao) != 1 || c.credits != 0 {
		t.Fatalf("assigns %d and %d, credits %d", len(as), len(ao), c.credits)
	}
	check := func(what string, want int) {
		t.Helper()
		if c.credits != want {
			t.Fatalf("%s: credits %d, want %d", what, c.credits, want)
		}
		sum := 0
		for _, x := range h.e.conns {
			if h.e.eligibleConn(x) {
				sum += x.credits
			}
		}
		if sum != h.e.credits {
			t.Fatalf("%s: engine credits %d, conns hold %d", what, h.e.credits, sum)
		}
	}
	// The body is in: the slot's credit comes with body_received, and is spent at once.
	h.send(c, withCredits(eventReq(as[0], 2, foldedStart(receivedEv())), 1))
	next, _, _ := recv(c)
	if len(next) != 1 {
		t.Fatalf("after body_received with a folded credit: %d assigns, want 1", len(next))
	}
	check("credit spent", 0)
	// A duplicate (stale sequence) still returns its credit.
	h.send(c, withCredits(eventReq(as[0], 2, receivedEv()), 1))
	more, _, _ := recv(c)
	if len(more) != 1 {
		t.Fatalf("after a duplicate with a folded credit: %d assigns, want 1", len(more))
	}
	// An event of another stream's lease: refused, the credits are the sender's.
	withoutSchedule := func(r *pb.WorkRequest) {
		h.e.onRequest(c, r, h.clk.Now()) // straight to the engine: no scheduling spends the credits
	}
	otherBefore := other.credits
	withoutSchedule(withCredits(eventReq(ao[0], 9, completedEv(ao[0])), 3))
	check("foreign event", 3)
	if other.credits != otherBefore || h.e.leases[uint32FromLease(t, h, ao[0], "g")].conn != other {
		t.Fatal("a foreign event moved the other stream's credits or lease")
	}
	// Hostile values: negative ones count nothing, huge ones stop at maxCredits.
	withoutSchedule(withCredits(eventReq(as[0], 10, receivedEv()), -5))
	check("negative", 3)
	for range 3 {
		withoutSchedule(withCredits(eventReq(as[0], 11, receivedEv()), 10_000))
	}
	check("huge", maxCredits)
	// A closed stream's credits are gone with it.
	h.e.dropConn(c, "test", h.clk.Now())
	withoutSchedule(withCredits(eventReq(as[0], 12, receivedEv()), 1))
	check("closed", maxCredits)
}

// An older fetcher (no fold_events) gets no Welcome and keeps working with separate started
// events and Credits.
func TestOlderFetcherSeparateCredits(t *testing.T) {
	h := newMemEngHarness(t, func(c *Config) { c.PerHostConcurrency = 100 })
	h.submit("b", oneHost("p", 3))
	c := h.connect("old", 1)
	as, _, _ := recv(c)
	if len(as) != 1 || c.credits != 0 {
		t.Fatalf("%d assigns, credits %d", len(as), c.credits)
	}
	h.send(c, eventReq(as[0], 1, startedEv(as[0])))
	h.send(c, eventReq(as[0], 2, receivedEv()))
	if more, _, _ := recv(c); len(more) != 0 {
		t.Fatalf("assigned without credit: %v", more)
	}
	h.send(c, creditsReq(1))
	next, _, _ := recv(c)
	if len(next) != 1 {
		t.Fatalf("after Credits: %d assigns, want 1", len(next))
	}
	h.send(c, eventReq(as[0], 3, completedEv(as[0])))
	if _, _, acks := recv(c); len(acks) != 1 {
		t.Fatalf("acks %v", acks)
	}
	if h.paperState("b", as[0].GetPaperId()) != pb.PaperState_PAPER_STATE_SUCCEEDED {
		t.Fatal("not succeeded")
	}
}

// TestEventLeaseIDsChecked: the loop skips the MAC of an event's lease id when it is the live
// lease's own id on the stream holding it (checkEvent); an id naming that lease with another
// MAC, on that very stream, is still refused (counted foreign, the lease untouched), and the
// exact id completes the paper.
func TestEventLeaseIDsChecked(t *testing.T) {
	h := newMemEngHarness(t, nil)
	h.submit("b", oneHost("p", 1))
	c := h.connect("f", 1)
	as, _, _ := recv(c)
	if len(as) != 1 {
		t.Fatalf("%d assigns", len(as))
	}
	id := as[0].GetLeaseId()
	forged := id[:len(id)-1] + map[bool]string{true: "0", false: "1"}[id[len(id)-1] != '0']
	ev := eventReq(as[0], 1, completedEv(as[0]))
	ev.GetEvent().LeaseId = forged
	h.send(c, ev)
	var m dto.Metric
	if err := h.e.m.droppedEvents.WithLabelValues("foreign").Write(&m); err != nil {
		t.Fatal(err)
	}
	if n := m.GetCounter().GetValue(); n != 1 {
		t.Fatalf("an id with another MAC: %v foreign events, want 1", n)
	}
	if st := h.paperState("b", "p0"); st != pb.PaperState_PAPER_STATE_DOWNLOADING {
		t.Fatalf("after an id with another MAC: %v", st)
	}
	h.send(c, eventReq(as[0], 1, completedEv(as[0])))
	if st := h.paperState("b", "p0"); st != pb.PaperState_PAPER_STATE_SUCCEEDED {
		t.Fatalf("after the lease's own id: %v", st)
	}
}
