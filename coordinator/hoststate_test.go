package coordinator

import (
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// A watcher with include_papers learns why its batch waits: the host paused by a Retry-After
// (until when, and why), its lowered concurrency limit, the batch's papers left on it.
func TestWatchHostStates(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.PerHostConcurrency = 4
		c.MaxRetryAfter = time.Hour
		c.WatchInterval = time.Millisecond
	})
	h.submit("b", oneHost("p", 6))
	w := newWatcher(0, true)
	r := &watchReq{batchID: "b", w: w, reply: make(chan error, 1)}
	h.apply(r)
	if err := <-r.reply; err != nil {
		t.Fatal(err)
	}
	u := w.take()
	if len(u.hosts) != 1 || u.hosts[0].GetRemaining() != 6 || u.hosts[0].GetPausedUntil() != nil || u.hosts[0].GetConcurrencyLimit() != 4 {
		t.Fatalf("snapshot hosts %v", u.hosts)
	}
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	h.send(c, eventReq(as[0], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_RATE_LIMITED, 503, 30*time.Second)))
	h.e.publish(h.clk.Now(), true) // the pause shows at once (only the paper counts are cached)
	u = w.take()
	if u == nil || len(u.hosts) != 1 {
		t.Fatalf("update %+v", u)
	}
	hs := u.hosts[0]
	wantUntil := h.clk.Now().Add(30 * time.Second)
	if hs.GetPauseCause() != "retry_after" || !hs.GetPausedUntil().AsTime().Equal(wantUntil) || hs.GetConcurrencyLimit() != 2 ||
		hs.GetMaxConcurrency() != 4 || hs.GetRemaining() != 6 || hs.GetActive() != 3 || !hs.GetNextStartAt().AsTime().Equal(wantUntil) {
		t.Fatalf("host state %v", hs)
	}
}

// The hosts of one update are bounded; the rest are counted.
func TestWatchHostStatesBounded(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.WatchInterval = time.Millisecond
	})
	h.submit("b", specs("p", maxHostStates*2+10, maxHostStates+5))
	states, omitted := h.e.hostStates(h.batch("b"), h.clk.Now())
	if len(states) != maxHostStates || omitted != 5 {
		t.Fatalf("%d states, %d omitted", len(states), omitted)
	}
	for i := 1; i < len(states); i++ {
		if states[i].GetRemaining() > states[i-1].GetRemaining() {
			t.Fatalf("not ordered by remaining papers: %v", states)
		}
	}
}

// "No such host" is retried once, soon, then fails the paper (not MaxAttempts backoffs).
func TestNoSuchHostRetriedOnce(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.MaxAttempts = 10
		c.RetryBaseDelay = time.Second
	})
	h.submit("b", oneHost("p", 1))
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	h.send(c, eventReq(as[0], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_NO_SUCH_HOST, 0, 0)))
	if s := h.paperState("b", "p0"); s != pb.PaperState_PAPER_STATE_RETRY_WAIT {
		t.Fatalf("after the first failure: %v", s)
	}
	h.advance(time.Second + time.Millisecond) // the first backoff is at most RetryBaseDelay
	as, _, _ = recv(c)
	if len(as) != 1 {
		t.Fatalf("%d assigns for the quick retry", len(as))
	}
	h.send(c, eventReq(as[0], 1, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_NO_SUCH_HOST, 0, 0)))
	if s := h.paperState("b", "p0"); s != pb.PaperState_PAPER_STATE_FAILED {
		t.Fatalf("after the second failure: %v", s)
	}
	b := h.batch("b")
	idx := h.e.byBatch[batchKey(hashString("p0"), b.idx)]
	if r := pb.FailureReason(h.e.papers[idx].reason); r != pb.FailureReason_FAILURE_REASON_NO_SUCH_HOST {
		t.Fatalf("reason %v", r)
	}
}
