package coordinator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// simAttempt is one download the simulated fetcher ran.
type simAttempt struct {
	at  time.Duration // since t0
	url string
	ok  bool
}

// sim drives an engine with one simulated fetcher on the fake clock: every download takes dl,
// and serve decides its outcome from the URL, the how-many-th request to it this is (1-based)
// and the time since t0 (nil for a success).
type sim struct {
	h        *engHarness
	c        *fetcherConn
	dl       time.Duration
	serve    func(url string, n int, at time.Duration) *pb.DownloadEvent
	n        map[string]int
	attempts []simAttempt
	trips    []time.Duration // when a circuit-breaker pause started
	pauses   []time.Duration // and how long it was
}

func newSim(t *testing.T, cfg func(*Config), papers int, serve func(url string, n int, at time.Duration) *pb.DownloadEvent) *sim {
	h := newEngHarness(t, cfg)
	if res := h.submit("b", oneHost("p", papers)); res.err != nil {
		t.Fatal(res.err)
	}
	return &sim{h: h, c: h.connect("f", 16), dl: 200 * time.Millisecond, serve: serve, n: map[string]int{}}
}

// run runs until batch b is COMPLETED and returns how long it took; it fails the test past limit.
func (s *sim) run(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	type inflight struct {
		a    *pb.Assign
		done time.Time
	}
	var fl []inflight
	var lastPause time.Time
	for {
		now := s.h.clk.Now()
		as, _, _ := recv(s.c)
		for _, a := range as {
			fl = append(fl, inflight{a, now.Add(s.dl)})
		}
		for _, hs := range s.h.e.hosts {
			if hs != nil && hs.pauseCause == "circuit_breaker" && hs.pausedUntil.After(now) && !hs.pausedUntil.Equal(lastPause) {
				lastPause = hs.pausedUntil
				s.trips = append(s.trips, now.Sub(t0))
				s.pauses = append(s.pauses, hs.pausedUntil.Sub(now))
			}
		}
		if s.h.batch("b").state == pb.BatchState_BATCH_STATE_COMPLETED {
			return now.Sub(t0)
		}
		if now.Sub(t0) > limit {
			t.Fatalf("batch not done after %s: counts %v, breaker trips at %v", limit, s.h.batch("b").counts, s.trips)
		}
		next := s.h.e.nextWake()
		for _, f := range fl {
			if next.IsZero() || f.done.Before(next) {
				next = f.done
			}
		}
		if next.IsZero() {
			t.Fatalf("stuck at %s: counts %v", now.Sub(t0), s.h.batch("b").counts)
		}
		s.h.clk.Advance(max(next.Sub(now), time.Millisecond))
		now = s.h.clk.Now()
		keep := fl[:0]
		for _, f := range fl {
			if f.done.After(now) {
				keep = append(keep, f)
				continue
			}
			u := f.a.GetUrl()
			s.n[u]++
			ev := s.serve(u, s.n[u], now.Sub(t0))
			s.attempts = append(s.attempts, simAttempt{at: now.Sub(t0), url: u, ok: ev == nil})
			if ev == nil {
				ev = completedEv(f.a)
			}
			s.h.send(s.c, eventReq(f.a, 1, ev))
			s.h.send(s.c, creditsReq(1))
		}
		fl = keep
		s.h.step()
	}
}

func http503() *pb.DownloadEvent {
	return failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_SERVER_ERROR, 503, 0)
}

func refused() *pb.DownloadEvent {
	return failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_CONNECTION, 0, 0)
}

// TestBreakerFlakyHost (issue 13 scenario a): 300 papers on one host, every tenth URL answers
// 503 twice before serving its PDF. The breaker never pauses the host, and the batch ends
// within the time it takes without failures plus the extra attempts and the retry backoff of
// two failures (RetryBaseDelay + 2×RetryBaseDelay at most).
func TestBreakerFlakyHost(t *testing.T) {
	ok := newSim(t, nil, 300, func(string, int, time.Duration) *pb.DownloadEvent { return nil })
	base := ok.run(t, time.Hour)

	flaky := func(u string, n int, _ time.Duration) *pb.DownloadEvent {
		var i int
		_, _ = fmt.Sscanf(u[strings.LastIndex(u, "/p")+2:], "%d", &i)
		if i%10 == 9 && n <= 2 {
			return http503()
		}
		return nil
	}
	s := newSim(t, nil, 300, flaky)
	got := s.run(t, time.Hour)
	c := s.h.cfg
	extra := time.Duration(60) * s.dl / time.Duration(c.PerHostConcurrency) // 60 failed attempts, 2 at a time
	bound := base + extra + c.RetryBaseDelay + 2*c.RetryBaseDelay + time.Second
	t.Logf("no failures %s, 10%% flaky %s (bound %s), breaker trips %v", base, got, bound, s.trips)
	if len(s.trips) != 0 {
		t.Errorf("the breaker paused a host that answers every request: trips at %v for %v", s.trips, s.pauses)
	}
	if got > bound {
		t.Errorf("batch took %s, want at most %s", got, bound)
	}
	if b := s.h.batch("b"); b.counts[stateSucceeded] != 300 {
		t.Fatalf("counts %v", b.counts)
	}
}

// TestBreakerHostDownThenBack (scenario b): the host refuses connections for 5 minutes, then
// serves everything. While down, at most one probe runs per cooldown; once it is back, the
// downloads resume within one cooldown (the pause in effect when it came back), and every
// paper succeeds.
func TestBreakerHostDownThenBack(t *testing.T) {
	const outage = 5 * time.Minute
	s := newSim(t, nil, 100, func(_ string, _ int, at time.Duration) *pb.DownloadEvent {
		if at < outage {
			return refused()
		}
		return nil
	})
	got := s.run(t, 2*time.Hour)
	c := s.h.cfg
	if len(s.trips) == 0 {
		t.Fatal("the breaker never tripped on a host refusing connections")
	}
	// Probes while down: after the first trip, attempts are at least one cooldown apart.
	var during []time.Duration
	for _, a := range s.attempts {
		if a.at > s.trips[0] && a.at <= outage {
			during = append(during, a.at)
		}
	}
	for i := 1; i < len(during); i++ {
		if gap := during[i] - during[i-1]; gap < c.BreakerCooldown {
			t.Errorf("probes %s apart while the host is down (at %v), want one per cooldown (%s)", gap, during, c.BreakerCooldown)
		}
	}
	// Resumed within the cooldown in effect at recovery.
	var inEffect time.Duration
	for i, at := range s.trips {
		if at <= outage {
			inEffect = s.pauses[i]
		}
	}
	var firstOK time.Duration
	for _, a := range s.attempts {
		if a.ok {
			firstOK = a.at
			break
		}
	}
	t.Logf("trips at %v, pauses %v; probes while down at %v; first success %s after recovery (cooldown %s); done at %s",
		s.trips, s.pauses, during, firstOK-outage, inEffect, got)
	if firstOK-outage > inEffect+s.dl {
		t.Errorf("resumed %s after the host came back, want within one cooldown (%s)", firstOK-outage, inEffect)
	}
	if b := s.h.batch("b"); b.counts[stateSucceeded] != 100 {
		t.Errorf("counts %v, want every paper to succeed", b.counts)
	}
}

// TestBreakerHostAlways503 (scenario c): a host answering 503 to everything. Its pause never
// grows past BreakerCooldown (it answers), and all its papers fail within BreakerGiveUp plus
// one cooldown plus the longest retry backoff, with a reason naming the breaker.
func TestBreakerHostAlways503(t *testing.T) {
	s := newSim(t, nil, 200, func(string, int, time.Duration) *pb.DownloadEvent { return http503() })
	c := s.h.cfg
	bound := c.BreakerGiveUp + c.BreakerCooldown + c.RetryMaxDelay
	got := s.run(t, 3*time.Hour)
	t.Logf("200 papers on a host answering 503: all failed after %s (bound %s), %d requests, %d trips", got, bound, len(s.attempts), len(s.trips))
	if got > bound {
		t.Errorf("papers failed after %s, want within %s", got, bound)
	}
	for _, p := range s.pauses {
		if p > c.BreakerCooldown {
			t.Errorf("pause of %s for a host that answers, want at most %s", p, c.BreakerCooldown)
		}
	}
	b := s.h.batch("b")
	if b.counts[stateFailed] != 200 {
		t.Fatalf("counts %v", b.counts)
	}
	fast := 0
	for i := range 200 {
		idx := h2idx(s.h, fmt.Sprintf("p%d", i))
		rec, _, err := s.h.st.readPaper(idx)
		if err != nil {
			t.Fatal(err)
		}
		switch pb.FailureReason(rec.reason) {
		case pb.FailureReason_FAILURE_REASON_HOST_PAUSED:
			fast++
			if !strings.Contains(rec.lastError, "circuit breaker open since") {
				t.Errorf("p%d: error %q does not say why", i, rec.lastError)
			}
		case pb.FailureReason_FAILURE_REASON_ATTEMPTS_EXHAUSTED:
		default:
			t.Errorf("p%d: reason %v", i, pb.FailureReason(rec.reason))
		}
	}
	if fast == 0 {
		t.Error("no paper failed fast on the given-up host")
	}
}

func h2idx(h *engHarness, paperID string) uint32 {
	return h.e.byBatch[batchKey(hashString(paperID), h.batch("b").idx)]
}

// TestFailureMessageRedacted: a failure's URL and message reach the paper's last_error (shown
// to every client of the batch) and the logs without query-string secrets.
func TestFailureMessageRedacted(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.MaxAttempts = 1
	})
	signed := "https://bucket.example/p.pdf?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=deadbeef&id=7"
	h.submit("b", []*pb.PaperSpec{{PaperId: "p", Urls: []string{signed}}})
	c := h.connect("f", 1)
	as, _, _ := recv(c)
	ev := failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_CONNECTION, 0, 0)
	ev.GetFailed().Url = signed
	ev.GetFailed().Message = `Get "` + signed + `&token=s3cr3t": connection refused`
	h.send(c, eventReq(as[0], 1, ev))
	rec, _, err := h.st.readPaper(h2idx(h, "p"))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"deadbeef", "AKIAEXAMPLE", "s3cr3t"} {
		if strings.Contains(rec.lastError, secret) {
			t.Errorf("last_error %q holds %q", rec.lastError, secret)
		}
	}
	if !strings.Contains(rec.lastError, "X-Amz-Signature=REDACTED") || !strings.Contains(rec.lastError, "connection refused") {
		t.Errorf("last_error %q", rec.lastError)
	}
}
