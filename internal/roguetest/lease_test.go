package roguetest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/paperfetch/paperfetch/coordinator"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

const foreign = "paperfetch_coordinator_dropped_events_total"

// Attack 3: a rogue stream reports completions (with a real stored blob and a hijacking
// final_url) and failures for the leases of another fetcher, with the real lease ids (as if
// they leaked) and with ids guessed from the paper index. None is believed: the victim keeps
// its leases and completes them itself.
func TestForeignStreamCannotTouchLeases(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *coordinator.Config) { c.PerHostConcurrency = 8 }})
	e.submit("b", 8, "h.example")
	victim := openStream(t, e.gw, hello("victim", 8))
	leases := victim.waitAssigns(8)
	rogue := openStream(t, e.gw, hello("rogue", 1))
	evil := e.storeBlob([]byte("%PDF-1.4 attacker"), "http://evil.example/hijacked.pdf")
	sent := 0
	for _, a := range leases {
		rogue.event(a, started(a))
		rogue.event(a, completed(evil))
		sent += 2
		// Guessed ids: the old "<store>-<index>-<attempt>" shape.
		store, _, _ := strings.Cut(a.GetLeaseId(), "-")
		for idx := range 8 {
			g := copyAssign(a)
			g.LeaseId = fmt.Sprintf("%s-%d-1", store, idx)
			rogue.event(g, completed(evil))
			sent++
		}
	}
	waitFor(t, "the rogue's events to be refused", func() bool { return e.counter(foreign, "cause", "foreign") >= float64(sent) })
	for i := range 8 {
		if p := e.paper("b", fmt.Sprintf("b-%d", i)); p.GetState() != pb.PaperState_PAPER_STATE_DOWNLOADING {
			t.Fatalf("paper %d is %s (final_url %q) after the rogue's events", i, p.GetState(), p.GetFinalUrl())
		}
	}
	// The owner completes its papers with its own blobs.
	for _, a := range leases {
		victim.event(a, started(a))
		victim.event(a, completed(e.storeBlob([]byte("%PDF-1.7 "+a.GetPaperId()), a.GetUrl())))
	}
	victim.waitUntil("8 acks", func() bool { return len(victim.acks) == 8 })
	for i := range 8 {
		p := e.paper("b", fmt.Sprintf("b-%d", i))
		if p.GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED || p.GetSha256() == evil.GetSha256() {
			t.Fatalf("paper %d: %s sha %s", i, p.GetState(), p.GetSha256())
		}
	}
}

// copyAssign copies an Assign (for guessed lease ids).
func copyAssign(a *pb.Assign) *pb.Assign {
	return &pb.Assign{LeaseId: a.GetLeaseId(), BatchId: a.GetBatchId(), PaperId: a.GetPaperId(), Url: a.GetUrl(), Attempt: a.GetAttempt()}
}

// Attack 3, forged completions: a fetcher completes its own lease with a blob that does not
// exist, then with a real blob of another size. Neither is believed: the attempt fails
// (transient STORAGE) and the paper is retried; a true completion then succeeds.
func TestForgedCompletionIsNotBelieved(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *coordinator.Config) { c.MaxAttempts = 5 }})
	e.submit("b", 1, "h.example")
	r := openStream(t, e.gw, hello("liar", 1))
	real := e.storeBlob([]byte("%PDF-1.7 real content"), "")
	sha := strings.Repeat("ab", 32)
	forgeries := []*pb.DownloadCompleted{
		{Sha256: sha, Size: 1234, BlobKey: validate.ContentKey(sha)},                     // no such blob
		{Sha256: real.GetSha256(), Size: real.GetSize() + 1, BlobKey: real.GetBlobKey()}, // wrong size
	}
	for i, f := range forgeries {
		a := r.waitAssigns(i + 1)[i]
		r.event(a, started(a))
		r.event(a, completed(f))
		r.waitUntil("the forged completion's ack", func() bool { return len(r.acks) == i+1 })
		p := e.paper("b", "b-0")
		if p.GetState() == pb.PaperState_PAPER_STATE_SUCCEEDED {
			t.Fatalf("forgery %d: paper SUCCEEDED", i)
		}
		if p.GetLastFailureReason() != pb.FailureReason_FAILURE_REASON_STORAGE || !strings.Contains(p.GetLastError(), "not verified") {
			t.Fatalf("forgery %d: reason %s, error %q", i, p.GetLastFailureReason(), p.GetLastError())
		}
		r.send(&pb.WorkRequest{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: 1}}})
		e.clk.Advance(10 * 60e9) // past the retry backoff
	}
	a := r.waitAssigns(3)[2]
	r.event(a, started(a))
	r.event(a, completed(real))
	r.waitUntil("the true completion's ack", func() bool { return len(r.acks) == 3 })
	if p := e.paper("b", "b-0"); p.GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED || p.GetSha256() != real.GetSha256() {
		t.Fatalf("true completion: %s %s", p.GetState(), p.GetSha256())
	}
	if n := e.counter("paperfetch_coordinator_completion_verifications_total", "result", "refused"); n != 2 {
		t.Fatalf("%v completions refused, want 2", n)
	}
}

// Attack 4: the cache must not be poisoned through a reported final_url (or Started.url). A
// fetcher completes its paper with its own blob and final_url set to another paper's URL;
// a later batch asking for that URL is downloaded, not served the planted blob.
func TestCacheIgnoresReportedURLs(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.submit("bait", 1, "h.example")
	r := openStream(t, e.gw, hello("poisoner", 2))
	a := r.waitAssigns(1)[0]
	target := "https://victim.example/wanted.pdf"
	r.event(a, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{Url: "https://victim.example/other.pdf"}}})
	r.event(a, completed(e.storeBlob([]byte("%PDF-1.4 planted"), target)))
	r.waitUntil("ack", func() bool { return len(r.acks) == 1 })
	e.submitPapers("later", []*pb.PaperSpec{
		{PaperId: "wanted", Urls: []string{target}},
		{PaperId: "other", Urls: []string{"https://victim.example/other.pdf"}},
	})
	for _, id := range []string{"wanted", "other"} {
		if p := e.paper("later", id); p.GetState() == pb.PaperState_PAPER_STATE_SUCCEEDED || p.GetCached() {
			t.Fatalf("%s was served from the cache (%s, sha %s)", id, p.GetState(), p.GetSha256())
		}
	}
	// The assigned URL itself is a cache key: the same URL in another batch is a hit.
	e.submitPapers("same", []*pb.PaperSpec{{PaperId: "again", Urls: []string{a.GetUrl()}}})
	if p := e.paper("same", "again"); !p.GetCached() {
		t.Fatalf("the assigned URL is not a cache hit: %s", p.GetState())
	}
}
