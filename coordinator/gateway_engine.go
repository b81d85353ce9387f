package coordinator

import (
	"container/heap"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/redact"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// The engine side of FetcherGatewayService.Work (gateway.go is the stream side): Hello,
// credits, download events, draining and the end of streams; host health (AIMD, circuit
// breaker) and retries follow from the events.

// maxCredits bounds the credit a fetcher may hold (Hello.slots is at most 10,000).
const maxCredits = 2 * validate.MaxFetcherSlots

// onHello registers a new Work stream. It adopts the leases the fetcher re-announces, replaces
// older streams of the same fetcher and grants the initial credit.
func (e *engine) onHello(c *fetcherConn, h *pb.Hello, now time.Time) error {
	// The gateway validated the Hello (internal/validate.WorkRequest); these checks keep the
	// engine's own invariants for callers that did not.
	if h.GetFetcherId() == "" || len(h.GetFetcherId()) > validate.MaxFetcherIDBytes {
		return fmt.Errorf("%w: hello.fetcher_id must be 1 to %d bytes", errInvalid, validate.MaxFetcherIDBytes)
	}
	if h.GetSlots() < 1 || h.GetSlots() > validate.MaxFetcherSlots {
		return fmt.Errorf("%w: hello.slots must be 1 to %d", errInvalid, validate.MaxFetcherSlots)
	}
	if h.GetPrefetch() < 0 || h.GetPrefetch() > validate.MaxFetcherPrefetch {
		return fmt.Errorf("%w: hello.prefetch must be 0 to %d", errInvalid, validate.MaxFetcherPrefetch)
	}
	c.id, c.boot, c.slots, c.prefetch = h.GetFetcherId(), h.GetBootId(), int(h.GetSlots()), int(h.GetPrefetch())
	c.lastMsg, c.connected = now, now
	var old []*fetcherConn
	for _, x := range e.conns {
		if x.id != c.id {
			continue
		}
		if err := e.mayReplace(x, c, now); err != nil {
			e.m.duplicateIDs.Inc()
			e.log.Warn("fetcher refused: its id is in use", "fetcher", c.id, "boot", c.boot, "live_boot", x.boot)
			return err
		}
		old = append(old, x)
	}
	e.conns = append(e.conns, c)
	if h.GetFoldEvents() || h.GetBatchEvents() {
		// The answer comes first: the fetcher folds (step 8 of the protocol) and batches (step
		// 9) nothing before it.
		e.out = append(e.out, outMsg{c: c, m: e.welcomeMsg(h.GetBatchEvents())})
	}
	adopted := 0
	for _, fl := range h.GetInFlight() {
		idx, attempt, ok := e.ids.check(fl.GetLeaseId(), c.id)
		if !ok || int(idx) >= len(e.papers) {
			e.out = append(e.out, outMsg{c: c, m: cancelMsg(fl.GetLeaseId(), "unknown lease")})
			continue
		}
		l := e.leases[idx]
		switch {
		case l != nil && l.attempt == attempt && (l.conn == nil || l.conn.id == c.id):
			// A re-announced lease runs on its own: a successor is running (fetchers do
			// not re-announce waiting ones), its successor (if any) is not re-announced.
			e.startedEarly(l, now)
			if l.conn != nil {
				delete(l.conn.leases, idx)
			}
			delete(e.orphans, idx)
			l.conn = c
			l.id = fl.GetLeaseId()
			l.started = true // it is running (or finished) on the fetcher
			l.renewedAt = now
			e.noteLeaseDue(l)
			c.leases[idx] = l
			if fl.GetBodyReceived() && l.resolve == nil {
				e.exchangeEnded(l, now)
			} else {
				e.noteCandidate(c, l)
			}
			adopted++
		case l == nil && terminal(e.papers[idx].state) && e.papers[idx].attempts == attempt:
			// Finished here; the fetcher re-sends the terminal event and gets its Ack.
		default:
			e.out = append(e.out, outMsg{c: c, m: cancelMsg(fl.GetLeaseId(), "lease is no longer valid")})
		}
	}
	for _, x := range old {
		x.kill(errReplaced)
		e.dropConn(x, "replaced by a new stream of the same fetcher", now)
	}
	// Hello.slots is the initial credit: the fetcher already left out slots still busy with
	// the leases it re-announces.
	c.credits = c.slots
	e.credits += c.credits
	e.log.Info("fetcher connected", "fetcher", c.id, "boot", c.boot, "slots", c.slots,
		"in_flight", len(h.GetInFlight()), "adopted", adopted, "version", h.GetVersion())
	return nil
}

// resourceFetcher is the ResourceInfo type of a fetcher id.
const resourceFetcher = "paperfetch.v1.Fetcher"

// mayReplace decides whether the new stream c may take the fetcher id of the registered
// stream x. One fetcher id has one live stream: the first keeps it. A new stream takes the id
// over only when it comes from the same process (same non-empty boot id: a reconnect whose
// old stream the coordinator has not seen break yet), or when x has been silent for
// FetcherSilence (fetchers send a heartbeat every 10s, so a silent stream is a dead process
// whose connection was not closed, e.g. a crashed pod). The same process also means the same
// credential, so that a boot id read in a log is not enough to take a live id over. Otherwise
// c is refused with ALREADY_EXISTS naming the id and the fix.
func (e *engine) mayReplace(x, c *fetcherConn, now time.Time) error {
	if c.boot != "" && c.boot == x.boot && c.subject == x.subject {
		return nil
	}
	if silent := now.Sub(x.lastMsg); silent >= e.cfg.FetcherSilence {
		return nil
	}
	return &apiError{kind: errExists, resourceType: resourceFetcher, resource: c.id, msg: fmt.Sprintf(
		"fetcher id %q is in use by another live fetcher process (boot %s); give every fetcher process its own --id, "+
			"or leave --id unset for a unique default (a restarted fetcher takes its id over once the old stream has been silent for %s)",
		c.id, x.boot, e.cfg.FetcherSilence)}
}

// welcomeMsg answers a Hello with fold_events or batch_events set: this coordinator accepts
// folded started events and credits (DownloadEvent.folded_start, WorkRequest.folded_credits),
// started events held back a tenth of StartTimeout at most (and at most
// validate.MaxStartHold), and, when the Hello asked (batch), batched events
// (WorkRequest.more_events: the gateway refuses them from a stream that did not ask).
func (e *engine) welcomeMsg(batch bool) *pb.WorkResponse {
	hold := min(e.cfg.StartTimeout/10, validate.MaxStartHold)
	return &pb.WorkResponse{Msg: &pb.WorkResponse_Welcome{Welcome: &pb.Welcome{FoldEvents: true, StartHold: durationpb.New(hold), BatchEvents: batch}}}
}

func cancelMsg(leaseID, reason string) *pb.WorkResponse {
	return &pb.WorkResponse{Msg: &pb.WorkResponse_Cancel{Cancel: &pb.Cancel{LeaseId: leaseID, Reason: reason}}}
}

// onRequest handles one message of an established stream. A lease is renewed only by its own
// events (deadline.go).
func (e *engine) onRequest(c *fetcherConn, r *pb.WorkRequest, now time.Time) {
	e.onChecked(c, r, nil, now)
}

// onChecked is onRequest with the verdicts of the receiver's blob checks (checkCompletions,
// indexed as the events; nil: none).
func (e *engine) onChecked(c *fetcherConn, r *pb.WorkRequest, checks []blobCheck, now time.Time) {
	if c.closed {
		return
	}
	c.lastMsg = now
	switch m := r.GetMsg().(type) {
	case *pb.WorkRequest_Credits:
		e.addCredits(c, int(m.Credits.GetCredits()))
	case *pb.WorkRequest_Event:
		e.onEvent(c, m.Event, checkOf(checks, 0), now)
		// A batch (step 9): the events in order, as separate messages would be.
		for i, ev := range r.GetMoreEvents() {
			if c.closed {
				return // an event of the batch broke the stream
			}
			e.onEvent(c, ev, checkOf(checks, i+1), now)
		}
		// Credits folded into the event (step 8) are the stream's, not the event's lease's:
		// they count whatever became of the event (stale, duplicate, foreign), as a Credits
		// message sent after it would.
		e.addCredits(c, int(r.GetFoldedCredits()))
	case *pb.WorkRequest_Draining:
		e.onDraining(c, m.Draining.GetReason(), now)
	case *pb.WorkRequest_Heartbeat:
	case *pb.WorkRequest_Hello:
		c.kill(fmt.Errorf("%w: hello sent twice", errInvalid))
		e.dropConn(c, "protocol error: second hello", now)
	}
}

// checkOf returns the verdict of event i (not done when there is none).
func checkOf(checks []blobCheck, i int) blobCheck {
	if i < len(checks) {
		return checks[i]
	}
	return blobCheck{}
}

// addCredits adds n credits (a Credits message, or credits folded into an event) to c's,
// within maxCredits; nothing for n < 1 or a closed stream.
func (e *engine) addCredits(c *fetcherConn, n int) {
	if n < 1 || c.closed {
		return
	}
	if c.credits+n > maxCredits {
		n = maxCredits - c.credits
	}
	c.credits += n
	if !c.draining {
		e.credits += n
		e.stealGen++
	}
}

func (e *engine) onDraining(c *fetcherConn, reason string, now time.Time) {
	if c.draining {
		return
	}
	if e.eligibleConn(c) {
		e.credits -= c.credits
	}
	c.draining = true
	e.log.Info("fetcher draining", "fetcher", c.id, "reason", reason, "leases", len(c.leases))
	for _, l := range mapValues(c.leases) {
		if e.leases[l.idx] != l {
			continue // a successor re-queued with its predecessor
		}
		if !l.started {
			e.sendCancel(c, l, "fetcher draining")
			e.requeue(l, "fetcher draining before start", now)
		}
	}
}

// onGone handles the end of a stream.
func (e *engine) onGone(c *fetcherConn, now time.Time) {
	e.dropConn(c, "stream ended", now)
}

// onEvent applies one DownloadEvent. A lease belongs to the stream it was assigned to (or
// that re-announced it): events for it from any other stream, and events whose lease id was
// not issued to this stream's fetcher, are refused and counted (cause "foreign"), without an
// Ack. Events of stale leases and duplicates are dropped; terminal ones are still acknowledged
// (after the commit) so the fetcher forgets them. A completion is verified against the blob
// store before it is believed (verify.go).
func (e *engine) onEvent(c *fetcherConn, ev *pb.DownloadEvent, chk blobCheck, now time.Time) {
	isTerminal := ev.GetCompleted() != nil || ev.GetFailed() != nil || ev.GetResolved() != nil
	idx, attempt, ok := e.checkEvent(ev.GetLeaseId(), c)
	if !ok || int(idx) >= len(e.papers) {
		e.refuseForeign(c, ev, "lease id not issued to this fetcher")
		return
	}
	l := e.leases[idx]
	if l == nil || l.attempt != attempt || ev.GetAttempt() != int32(attempt) {
		e.m.droppedEvents.WithLabelValues("stale").Inc()
		if isTerminal {
			e.ack(c, ev.GetLeaseId(), ev.GetSequence())
		}
		return
	}
	if l.conn != c {
		e.refuseForeign(c, ev, "lease belongs to another stream")
		return
	}
	if ev.GetSequence() <= l.lastSeq || l.verifying {
		e.m.droppedEvents.WithLabelValues("duplicate").Inc()
		return
	}
	l.lastSeq = ev.GetSequence()
	l.renewedAt = now
	b := e.batches[l.batch]
	if ev.GetFoldedStart() && !l.started {
		// A started event folded into this one (step 8): handled first, as if it had come
		// on its own just before (a hand-back never has one).
		e.startedEarly(l, now)
		l.started = true
	}
	switch k := ev.GetKind().(type) {
	case *pb.DownloadEvent_Started:
		e.startedEarly(l, now)
		l.started = true
	case *pb.DownloadEvent_Progress:
		if d := k.Progress.GetBytes() - l.bytes; d > 0 {
			b.bytesDownloaded += d
			e.m.bytesDownloaded.Add(float64(d))
		}
		l.bytes = k.Progress.GetBytes()
		l.total = k.Progress.GetTotal()
		l.bps = k.Progress.GetBytesPerSecond()
		e.touchBatch(b)
		if k.Progress.GetBodyReceived() && l.resolve == nil {
			e.exchangeEnded(l, now)
		}
	case *pb.DownloadEvent_Completed:
		if l.resolve != nil {
			e.fail(l, protocolFailure("a completed download for a resolution step"), now)
		} else if e.verify {
			e.startVerify(l, k.Completed, ev.GetSequence(), chk, now)
			return
		} else {
			e.complete(l, k.Completed, now)
		}
		e.ack(c, ev.GetLeaseId(), ev.GetSequence())
	case *pb.DownloadEvent_Resolved:
		if l.resolve == nil {
			e.fail(l, protocolFailure("a resolve result for a download"), now)
		} else {
			e.onResolved(l, k.Resolved, now)
		}
		e.ack(c, ev.GetLeaseId(), ev.GetSequence())
	case *pb.DownloadEvent_Failed:
		if (l.waiting() || l.reclaimed) && k.Failed.GetReason() == pb.FailureReason_FAILURE_REASON_ABORTED {
			// A void successor, a draining fetcher's, or one reclaimed for an idle stream (even
			// if it had started: the Cancel crossed its predecessor's body_received).
			e.handBack(l, "handed back by the fetcher", now)
		} else {
			e.fail(l, k.Failed, now)
		}
		e.ack(c, ev.GetLeaseId(), ev.GetSequence())
	}
}

// refuseForeign drops an event a stream sent for a lease that is not its own.
func (e *engine) refuseForeign(c *fetcherConn, ev *pb.DownloadEvent, why string) {
	e.m.droppedEvents.WithLabelValues("foreign").Inc()
	if e.debug() {
		e.log.Debug("event refused", "fetcher", c.id, "lease", ev.GetLeaseId(), "why", why)
	}
}

// complete applies a completed event: the paper SUCCEEDED.
func (e *engine) complete(l *lease, d *pb.DownloadCompleted, now time.Time) {
	p := &e.papers[l.idx]
	b := e.batches[l.batch]
	h := e.hosts[p.host]
	h.successes++
	hostSucceeded(h)
	e.endLease(l, now)
	if d.GetSize() > l.bytes {
		b.bytesDownloaded += d.GetSize() - l.bytes
		e.m.bytesDownloaded.Add(float64(d.GetSize() - l.bytes))
	}
	b.bytesStored += d.GetSize()
	c := e.coldOf(l.idx)
	c.success = true
	c.size, c.sha256, c.blobKey = d.GetSize(), d.GetSha256(), d.GetBlobKey()
	// The final URL is the origin's choice (a redirect to a pre-signed URL): shown to every
	// client, so without query-string secrets.
	c.finalURL, c.ctype = redact.URL(d.GetFinalUrl()), d.GetContentType()
	e.noteSuccess(l.idx, c)
	// The cache is keyed by the URL the coordinator assigned, never by the final URL the
	// fetcher reports (which would let a fetcher plant content under any URL).
	c.urlHash = hashString(l.url)
	e.cacheAdds = append(e.cacheAdds, cacheAdd{idx: l.idx, idHash: hashString(l.paperID), urlHash: c.urlHash})
	if dur := d.GetDuration(); dur != nil {
		e.m.downloadSeconds.Observe(dur.AsDuration().Seconds())
	}
	e.m.downloadBytes.Observe(float64(d.GetSize()))
	e.setState(l.idx, stateSucceeded, now)
	if e.debug() {
		e.log.Debug("paper succeeded", "batch", b.id, "paper", l.paperID, "lease", l.name(),
			"size", d.GetSize(), "sha256", d.GetSha256())
	}
}

// hostSucceeded records a successful request on h: the breaker resets, and the concurrency
// limit grows back by one after 4×limit successes (AIMD).
func hostSucceeded(h *host) {
	h.br.success()
	h.okStreak++
	if h.limit < h.maxLimit && h.okStreak >= h.limit*4 {
		h.limit++
		h.okStreak = 0
	}
}

// isRateLimit reports whether a failure asks us to slow down: a 429, or a 503 with
// Retry-After (both RATE_LIMITED). A plain 503 is a server error, judged by the breaker: one
// URL failing must not halve the concurrency of a host that serves everything else.
func isRateLimit(f *pb.DownloadFailed) bool {
	return f.GetReason() == pb.FailureReason_FAILURE_REASON_RATE_LIMITED || f.GetHttpStatus() == 429
}

// hostTrouble reports whether a transient failure says something about the host's health.
func hostTrouble(f *pb.DownloadFailed) bool {
	switch f.GetReason() {
	case pb.FailureReason_FAILURE_REASON_TIMEOUT, pb.FailureReason_FAILURE_REASON_STALLED,
		pb.FailureReason_FAILURE_REASON_CONNECTION, pb.FailureReason_FAILURE_REASON_TRUNCATED,
		pb.FailureReason_FAILURE_REASON_SERVER_ERROR, pb.FailureReason_FAILURE_REASON_RATE_LIMITED:
		return true
	}
	return false
}

func (e *engine) pauseHost(h *host, until time.Time, cause string, now time.Time) {
	if until.After(h.pausedUntil) {
		h.pausedUntil = until
		h.pauseCause = cause
		e.m.hostPauses.WithLabelValues(cause).Inc()
		e.log.Warn("host paused", "host", h.name, "until", until, "cause", cause, "breaker", h.br.state(h.pausedUntil, now), "trips", h.br.trips)
		e.refreshHost(h, now)
	}
}

// fail applies a failed event: retry (same or next URL, after a backoff) or fail the paper.
func (e *engine) fail(l *lease, f *pb.DownloadFailed, now time.Time) {
	p := &e.papers[l.idx]
	h := e.hosts[p.host]
	reason := f.GetReason()
	permanent := f.GetClass() == pb.FailureClass_FAILURE_CLASS_PERMANENT
	msg := f.GetMessage()
	h.failures++
	h.lastReason = uint8(reason)
	if f.GetUrl() != "" {
		msg = fmt.Sprintf("%s: %s", f.GetUrl(), msg)
	}
	// The error is logged and shown to every client of the batch: no signatures or tokens.
	msg = redact.Text(msg)

	// Host health: Retry-After pauses, AIMD, circuit breaker.
	if isRateLimit(f) {
		h.limit = max(1, h.limit/2)
		h.okStreak = 0
		if ra := f.GetRetryAfter(); ra != nil && ra.AsDuration() > 0 {
			d := ra.AsDuration()
			if d > e.cfg.MaxRetryAfter {
				e.pauseHost(h, now.Add(e.cfg.MaxRetryAfter), "retry_after_capped", now)
				reason = pb.FailureReason_FAILURE_REASON_HOST_PAUSED
				permanent = true
				msg = fmt.Sprintf("%s (Retry-After %s exceeds the %s cap)", msg, d, e.cfg.MaxRetryAfter)
			} else {
				e.pauseHost(h, now.Add(d), "retry_after", now)
			}
		}
	}
	e.judgeHost(h, p, f, permanent, msg, now)

	e.m.failures.WithLabelValues(reasonLabel(reason)).Inc()
	e.endLease(l, now)
	e.settleFailure(l.idx, l.paperID, reason, permanent, msg, now)
}

// judgeHost feeds a failed attempt on h to its circuit breaker (see breaker).
func (e *engine) judgeHost(h *host, p *memPaper, f *pb.DownloadFailed, permanent bool, msg string, now time.Time) {
	br := &h.br
	if permanent || !hostTrouble(f) {
		if !hostAnswered(f) {
			return // aborted, refused by the guard...: nothing learnt about the host
		}
		// The host answered (a 404, a paywall page...): it is up. A half-open probe that got
		// an answer closes the breaker like a success.
		if br.open && !h.pausedUntil.After(now) {
			br.success()
		}
		br.streak = 0
		return
	}
	switch {
	case br.open && h.pausedUntil.After(now):
		return // a download that started before the trip: the host is paused already
	case br.open:
		// Half-open: the probe failed, trip again.
	case p.failures == 0:
		br.streak++ // a different paper's first failure
		if br.streak < e.cfg.BreakerThreshold {
			return
		}
	default:
		return // a retry of a paper that failed before says nothing new about the host
	}
	answered := f.GetHttpStatus() > 0 || f.GetReason() == pb.FailureReason_FAILURE_REASON_TRUNCATED
	cool := e.cfg.BreakerCooldown
	if !answered {
		cool = min(e.cfg.BreakerCooldown<<min(br.trips, 16), e.cfg.BreakerMaxCooldown)
	}
	if !br.open {
		br.open, br.openSince, br.giveUpAt = true, now, now.Add(e.cfg.BreakerGiveUp)
	}
	br.trips++
	br.streak = 0
	br.unreachable = !answered
	br.lastError = msg
	h.limit = 1 // half-open: one probe at a time
	h.okStreak = 0
	e.pauseHost(h, now.Add(cool), "circuit_breaker", now)
}

// hostAnswered reports whether a failure that is no host trouble shows the host answering.
func hostAnswered(f *pb.DownloadFailed) bool {
	switch f.GetReason() {
	case pb.FailureReason_FAILURE_REASON_NOT_PDF, pb.FailureReason_FAILURE_REASON_TOO_LARGE,
		pb.FailureReason_FAILURE_REASON_CHECKSUM_MISMATCH:
		return true
	}
	return f.GetHttpStatus() > 0
}

// failFast fails the current URL of queued paper idx without an attempt: its host's breaker
// gave up (see breaker). The paper moves on to its next URL, or fails with HOST_PAUSED.
func (e *engine) failFast(idx uint32, h *host, paperID string, now time.Time) {
	msg := fmt.Sprintf("host %s is failing: circuit breaker open since %s without a success (%d trips); last error: %s",
		h.name, h.br.openSince.UTC().Format(time.RFC3339), h.br.trips, h.br.lastError)
	e.m.failures.WithLabelValues(reasonLabel(pb.FailureReason_FAILURE_REASON_HOST_PAUSED)).Inc()
	e.settleFailure(idx, paperID, pb.FailureReason_FAILURE_REASON_HOST_PAUSED, true, msg, now)
}

// settleFailure retries paper idx (same or next URL, after a backoff) or fails it, after a
// failed attempt (or a refusal without an attempt, see failFast).
func (e *engine) settleFailure(idx uint32, paperID string, reason pb.FailureReason, permanent bool, msg string, now time.Time) {
	if e.cancelIfBatchCancelled(idx, now) {
		return // the fetcher confirms the abort of a cancelled batch's download
	}
	p := &e.papers[idx]
	b := e.batches[p.batch]
	if reason == pb.FailureReason_FAILURE_REASON_ABORTED && !permanent {
		// Aborted by the fetcher (shutting down): not the paper's fault. enqueue keeps
		// the same URL and does not count a failure.
		e.enqueue(idx, now)
		return
	}

	if reason == pb.FailureReason_FAILURE_REASON_NO_SUCH_HOST && pb.FailureReason(p.reason) == reason {
		permanent = true // one quick retry of a name that does not resolve, not MaxAttempts
	}
	// A permanent failure retires a step of a DOI's plan (each step fails permanently at most
	// once, and a plan has at most maxPlanSteps): only transient failures count against MaxAttempts.
	planned := p.flags&flagPlanned != 0
	if !planned || !permanent {
		p.failures++
	}
	p.reason = uint8(reason)
	e.setError(idx, msg)
	if permanent && p.urlIdx < deadBits {
		p.dead |= 1 << p.urlIdx
	}
	var pl *plan
	if planned {
		pl = e.planFailed(idx, reason, msg)
	}
	if pl != nil && !permanent && int(p.failures) >= e.cfg.MaxAttempts {
		// A DOI's plan gives up the step that used up the attempts, not the paper: every
		// route is tried before a DOI is given up. Each later transient failure retires its
		// step too, so a plan makes at most MaxAttempts + maxPlanSteps failed attempts.
		pl.exhaustStep(int(p.urlIdx), int(p.failures), msg)
		e.putPlan(idx, pl)
		if p.urlIdx < deadBits {
			p.dead |= 1 << p.urlIdx
		}
		permanent = true // the next step is another URL or route: no reason to wait
	}
	next, ok := nextURL(p)
	switch {
	case !ok && pl != nil:
		e.advancePlan(idx, pl, now) // fails it with every route's outcome
		return
	case !ok:
		e.setState(idx, stateFailed, now)
		e.log.Info("paper failed", "batch", b.id, "paper", paperID, "reason", reasonLabel(reason), "error", msg)
		return
	case pl == nil && int(p.failures) >= e.cfg.MaxAttempts:
		p.reason = uint8(pb.FailureReason_FAILURE_REASON_ATTEMPTS_EXHAUSTED)
		e.setError(idx, fmt.Sprintf("gave up after %d attempts; last: %s", p.failures, msg))
		e.setState(idx, stateFailed, now)
		e.log.Info("paper failed", "batch", b.id, "paper", paperID, "reason", "attempts_exhausted", "error", msg)
		return
	}
	moved := next != p.urlIdx
	p.urlIdx = next
	if moved {
		spec, err := e.specOf(idx)
		if err != nil {
			e.log.Error("retry: read spec", "paper", paperID, "err", err)
			e.setState(idx, stateFailed, now)
			return
		}
		cands, _ := e.candidatesOf(idx, spec)
		p.host = e.internHost(hostKey(cands[int(next)%len(cands)]))
	}
	if permanent && moved {
		e.enqueue(idx, now) // a different URL: no reason to wait
		return
	}
	at := now.Add(e.backoff(int(p.failures))).UnixNano()
	p.setNextAttempt(at)
	e.setState(idx, stateRetryWait, now)
	heap.Push(&e.retry, retryItem{at: at, idx: idx})
}

// nextURL picks the candidate after the current one that has not failed permanently,
// wrapping around (the current one included, last).
func nextURL(p *memPaper) (uint8, bool) {
	n := max(int(p.nurls), 1)
	for i := 1; i <= n; i++ {
		j := (int(p.urlIdx) + i) % n
		if j >= deadBits || p.dead&(1<<j) == 0 {
			return uint8(j), true
		}
	}
	return 0, false
}

// backoff is the delay before the attempt following the n-th failure: exponential with
// "equal jitter" (between half and all of the exponential delay).
func (e *engine) backoff(n int) time.Duration {
	d := float64(e.cfg.RetryBaseDelay) * math.Pow(2, float64(max(n-1, 0)))
	if d > float64(e.cfg.RetryMaxDelay) {
		d = float64(e.cfg.RetryMaxDelay)
	}
	return time.Duration(d/2 + e.rnd.Float64()*d/2)
}

// protocolFailure is the failure recorded when a fetcher answers a lease with the wrong kind of
// terminal event (a transient failure: another attempt, maybe on another fetcher, may do better).
func protocolFailure(what string) *pb.DownloadFailed {
	return &pb.DownloadFailed{
		Class: pb.FailureClass_FAILURE_CLASS_TRANSIENT, Reason: pb.FailureReason_FAILURE_REASON_HTTP_STATUS,
		Message: "protocol error: the fetcher reported " + what,
	}
}

// dropConn forgets a conn and re-queues its leases (a broken stream).
func (e *engine) dropConn(c *fetcherConn, why string, now time.Time) {
	if c.closed {
		return
	}
	if e.eligibleConn(c) {
		e.credits -= c.credits
	}
	c.closed = true
	requeued := len(c.leases)
	for _, l := range mapValues(c.leases) {
		if e.leases[l.idx] == l { // not a successor re-queued with its predecessor
			e.requeue(l, why, now)
		}
	}
	for i, x := range e.conns {
		if x == c {
			e.conns = append(e.conns[:i], e.conns[i+1:]...)
			break
		}
	}
	if e.rr >= len(e.conns) {
		e.rr = 0
	}
	e.log.Info("fetcher disconnected", "fetcher", c.id, "boot", c.boot, "reason", why, "requeued", requeued)
}

// helloMsg opens a Work stream.
type helloMsg struct {
	c     *fetcherConn
	hello *pb.Hello
	reply chan error
}

func (m *helloMsg) apply(e *engine, now time.Time) {
	err := e.onHello(m.c, m.hello, now)
	e.replies = append(e.replies, func() { m.reply <- err })
}

// streamMsg is a message received on an established Work stream.
type streamMsg struct {
	c   *fetcherConn
	req *pb.WorkRequest
	// places is how many places of the stream's inbox share the message holds (budget.take).
	places int
	// checks are the receiver's verdicts on the message's completions (checkCompletions).
	checks []blobCheck
}

func (m *streamMsg) apply(e *engine, now time.Time) {
	m.c.release(m.places)
	e.onChecked(m.c, m.req, m.checks, now)
}

// goneMsg reports the end of a Work stream: its leases are re-queued.
type goneMsg struct {
	c *fetcherConn
}

func (m *goneMsg) apply(e *engine, now time.Time) { e.onGone(m.c, now) }

// barrierMsg is closed (as a reply) once every message posted before it was applied and its
// output queued: a stream whose fetcher closed its side waits for it before sending the last
// Acks and ending.
type barrierMsg struct {
	reply chan struct{}
}

func (m *barrierMsg) apply(e *engine, _ time.Time) {
	e.replies = append(e.replies, func() { close(m.reply) })
}
