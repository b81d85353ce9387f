package coordinator

import (
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func bodyReceivedEv(size int64) *pb.DownloadEvent {
	return &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: size, Total: size, BodyReceived: true}}}
}

// Per-host concurrency counts HTTP exchanges in flight: a body_received progress event frees
// the host's slot at once (the next paper of the host is assigned while the first one is
// still being made durable), the paper stays DOWNLOADING until its completed event, and the
// completion does not free the slot a second time.
func TestBodyReceivedFreesTheHostSlot(t *testing.T) {
	h := newEngHarness(t, func(c *Config) { c.PerHostConcurrency = 1 })
	h.submit("b", oneHost("p", 3))
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 1 {
		t.Fatalf("first round: %d assigns, want 1 (concurrency 1)", len(as))
	}
	h.send(c, eventReq(as[0], 1, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{Url: as[0].GetUrl()}}}))
	h.send(c, eventReq(as[0], 2, bodyReceivedEv(100)))
	as2, _, _ := recv(c)
	if len(as2) != 1 {
		t.Fatalf("after body_received: %d assigns, want 1", len(as2))
	}
	if s := h.paperState("b", as[0].GetPaperId()); s != pb.PaperState_PAPER_STATE_DOWNLOADING {
		t.Fatalf("paper with its body received: %v, want DOWNLOADING until completed", s)
	}
	// A duplicate body_received frees nothing more.
	h.send(c, eventReq(as[0], 3, bodyReceivedEv(100)))
	if as, _, _ := recv(c); len(as) != 0 {
		t.Fatalf("a second body_received freed another slot: %d assigns", len(as))
	}
	h.send(c, eventReq(as[0], 4, completedEv(as[0])))
	if as, _, acks := recv(c); len(as) != 0 || len(acks) != 1 {
		t.Fatalf("after the completion of the received paper: %d assigns (want 0: the exchange of %s runs), %d acks", len(as), as2[0].GetPaperId(), len(acks))
	}
	if s := h.paperState("b", as[0].GetPaperId()); s != pb.PaperState_PAPER_STATE_SUCCEEDED {
		t.Fatalf("after completed: %v", s)
	}
	if got := h.e.hosts[0].active; got != 1 {
		t.Fatalf("host active %d, want 1", got)
	}
}

// A fetcher that reconnects re-announces a lease whose body it received with body_received:
// the lease is adopted without its host slot.
func TestReannouncedReceivedLeaseHoldsNoHostSlot(t *testing.T) {
	h := newEngHarness(t, func(c *Config) { c.PerHostConcurrency, c.ReconnectGrace = 1, time.Minute })
	h.submit("b", oneHost("p", 2))
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 1 {
		t.Fatalf("%d assigns", len(as))
	}
	h.restart()
	c2 := h.connect("f", 10, &pb.InFlightLease{LeaseId: as[0].GetLeaseId(), Attempt: as[0].GetAttempt(), BodyReceived: true})
	as2, cancels, _ := recv(c2)
	if len(cancels) != 0 || len(as2) != 1 || as2[0].GetPaperId() == as[0].GetPaperId() {
		t.Fatalf("after the re-announce: assigns %v, cancels %v", as2, cancels)
	}
}
