package roguetest

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/paperfetch/paperfetch/coordinator"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

const reclaims = "paperfetch_coordinator_lease_reclaims_total"

// Attack 5, blackhole: a fetcher with 10,000 slots heartbeats but never reports. StartTimeout
// (30s, on the fake clock) after the Assign its stream is closed and its leases go to an honest
// fetcher.
func TestBlackholeLeasesAreReclaimed(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *coordinator.Config) { c.PerHostConcurrency = 8 }})
	e.submit("b", 8, "h.example")
	hole := openStream(t, e.gw, hello("blackhole", 10_000))
	hole.waitAssigns(8)
	for range 3 {
		hole.send(heartbeat())
		e.clk.Advance(10 * time.Second)
	}
	// A fetcher that does not start what it was assigned is broken: its stream is closed and
	// its leases re-queued.
	wantCode(t, "blackhole", hole.waitEnd(), codes.FailedPrecondition)
	if n := e.counter(reclaims, "cause", "not_started"); n < 1 {
		t.Fatalf("%v leases reclaimed as not started", n)
	}
	honest := openStream(t, e.gw, hello("honest", 8))
	honest.waitAssigns(8)
}

// Attack 5, chatty: a fetcher reports its leases started and then fakes progress every 10s
// forever. Each lease is renewed by its own events, but the coordinator enforces the download
// timeout it sent in the Assign plus the documented grace (1m): at 2m + 1m its stream is
// closed and its leases go to an honest fetcher.
func TestChattyFetcherCannotHoldLeasesPastTheDeadline(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *coordinator.Config) {
		c.PerHostConcurrency = 8
		c.Limits = &pb.DownloadLimits{Timeout: durationpb.New(2 * time.Minute)}
	}})
	e.submit("b", 4, "h.example")
	r := openStream(t, e.gw, hello("chatty", 4))
	leases := r.waitAssigns(4)
	for _, a := range leases {
		if a.GetLimits().GetTimeout().AsDuration() != 2*time.Minute {
			t.Fatalf("Assign limits %v", a.GetLimits())
		}
		r.event(a, started(a))
	}
	e.chatPastDeadline(r, "chatty", leases, 3*time.Minute)
	if n := e.counter(reclaims, "cause", "deadline"); n < 1 {
		t.Fatalf("%v leases reclaimed at the deadline", n)
	}
	honest := openStream(t, e.gw, hello("honest", 4))
	honest.waitAssigns(4)
}

// chatPastDeadline fakes progress of leases on r every 10s (fake clock) until deadline, checking
// that nothing is cancelled before, and then that r's stream is closed (FAILED_PRECONDITION).
func (e *env) chatPastDeadline(r *rogue, name string, leases []*pb.Assign, deadline time.Duration) {
	e.t.Helper()
	for elapsed := time.Duration(0); elapsed < deadline-10*time.Second; elapsed += 10 * time.Second {
		for _, a := range leases {
			e.progressBarrier(r, a, int64(elapsed)+2)
		}
		if n := r.cancelCount(); n > 0 {
			e.t.Fatalf("%d leases cancelled after %s, before the deadline", n, elapsed)
		}
		e.clk.Advance(10 * time.Second)
	}
	e.clk.Advance(10 * time.Second)
	wantCode(e.t, name, r.waitEnd(), codes.FailedPrecondition)
}

// A lease is renewed by its own events only: a fetcher that reports one lease and heartbeats
// loses its other, silent lease after LeaseTTL.
func TestHeartbeatsDoNotRenewSilentLeases(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *coordinator.Config) { c.PerHostConcurrency = 8; c.LeaseTTL = 40 * time.Second }})
	e.submit("b", 2, "h.example")
	r := openStream(t, e.gw, hello("half", 2))
	leases := r.waitAssigns(2)
	r.event(leases[0], started(leases[0]))
	r.event(leases[1], started(leases[1]))
	e.progressBarrier(r, leases[1], 1)
	for i := range 5 {
		r.send(heartbeat())
		e.progressBarrier(r, leases[0], int64(i)+1)
		e.clk.Advance(10 * time.Second)
	}
	r.waitUntil("a cancel", func() bool { return len(r.cancels) >= 1 })
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cancels) != 1 || r.cancels[0].GetLeaseId() != leases[1].GetLeaseId() {
		t.Fatalf("cancels %v, want only the silent lease %s", r.cancels, leases[1].GetLeaseId())
	}
}

// Attack 5, prefetch hoarding: a fetcher announces the largest prefetch window, starts its
// two downloads and fakes progress forever (one of them claims its body received), and never
// starts the successors it was sent (all four other papers: chains of successors). A waiting successor has no deadline of its own, but its
// predecessor has: at the predecessors' hard deadline (2m + 1m grace) the stream is closed and
// every lease, successors included, goes to an honest fetcher; nothing is held for longer.
func TestPrefetchHoarderCannotHoldSuccessors(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *coordinator.Config) {
		c.PerHostConcurrency = 2
		c.Limits = &pb.DownloadLimits{Timeout: durationpb.New(2 * time.Minute)}
	}})
	e.submit("b", 6, "h.example")
	first := hello("hoarder", 2)
	first.GetHello().Prefetch = validate.MaxFetcherPrefetch
	r := openStream(t, e.gw, first)
	leases := r.waitAssigns(6) // 2 leases, then 4 successors in chains (a successor may be followed)
	var preds, succs []*pb.Assign
	for _, a := range leases {
		if a.GetAfterLeaseId() == "" {
			preds = append(preds, a)
		} else {
			succs = append(succs, a)
		}
	}
	if len(preds) != 2 || len(succs) != 4 {
		t.Fatalf("want 2 leases and 4 successors, got %v", leases)
	}
	for _, a := range preds {
		r.event(a, started(a))
	}
	r.event(preds[0], &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 1, Total: 1, BodyReceived: true}}})
	e.chatPastDeadline(r, "hoarder", preds, 3*time.Minute)
	honest := openStream(t, e.gw, hello("honest", 6))
	for done := 0; done < 6; {
		got := honest.waitAssigns(done + 1)
		for _, a := range got[done:] {
			if a.GetAfterLeaseId() != "" {
				t.Fatalf("a fetcher without a prefetch window got a successor: %v", a)
			}
			honest.event(a, started(a))
			honest.event(a, completed(e.storeBlob([]byte("%PDF-1.7 "+a.GetPaperId()), a.GetUrl())))
			honest.send(&pb.WorkRequest{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: 1}}})
			done++
		}
	}
	waitFor(t, "the batch to complete", func() bool { return e.batch("b").GetState() == pb.BatchState_BATCH_STATE_COMPLETED })
}
