package coordinator

import (
	"fmt"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/redact"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// DOI plans as the engine runs them (plan.go is the type and its encoding): reading and
// writing a paper's plan, its candidates, resolution results and failed steps.

// planOf returns the plan of a paper with a DOI (changed in this iteration, or committed).
func (e *engine) planOf(idx uint32) (*plan, error) {
	if p, ok := e.pendingPlans[idx]; ok {
		return p, nil
	}
	raw, err := e.stored.plan(idx)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: plan of paper %d missing", errInternal, idx)
	}
	p := &plan{}
	if err := p.unmarshal(raw); err != nil {
		return nil, fmt.Errorf("%w: plan of paper %d: %w", errInternal, idx, err)
	}
	return p, nil
}

// putPlan records a changed plan, written by this iteration's commit.
func (e *engine) putPlan(idx uint32, p *plan) {
	e.pendingPlans[idx] = p
	e.ws.plans = append(e.ws.plans, planWrite{idx: idx, plan: p.marshal()})
	e.papers[idx].nurls = uint8(len(p.steps))
}

// candidatesOf returns a paper's candidate URLs (its spec's, or its plan's steps) and, when the
// current candidate is a resolution step, what the fetcher must do with it.
func (e *engine) candidatesOf(idx uint32, spec *pb.PaperSpec) ([]string, *pb.ResolveStep) {
	if e.papers[idx].flags&flagPlanned == 0 {
		return spec.GetUrls(), nil
	}
	p, err := e.planOf(idx)
	if err != nil || len(p.steps) == 0 {
		e.log.Error("read plan", "paper_index", idx, "err", err)
		return []string{"http://invalid.invalid/"}, nil // fails as a bad URL, then the paper fails
	}
	s := p.steps[int(e.papers[idx].urlIdx)%len(p.steps)]
	if isResolution(s.kind) {
		// The DOI resolver's redirects to a publisher (landing page) or a registration agency
		// (CSL JSON) become steps of their own, under those hosts' politeness.
		return p.urls(), &pb.ResolveStep{Route: s.route, Doi: p.doi, Contact: e.cfg.Resolve.Email, StayOnHost: staysOnHost(s.route)}
	}
	return p.urls(), nil
}

// staysOnHost reports whether a route's steps are sent with stay_on_host: those of the DOI
// resolver, whose redirects lead to a publisher or a registration agency. Only their results
// may carry a forward_url.
func staysOnHost(r pb.ResolveRoute) bool {
	return r == pb.ResolveRoute_RESOLVE_ROUTE_LANDING_PAGE || r == pb.ResolveRoute_RESOLVE_ROUTE_CSL_LINK
}

// addPlan gives a new paper with a DOI its plan.
func (e *engine) addPlan(idx uint32, doi string, urls []string) string {
	p := newPlan(e.cfg.Resolve, doi, urls)
	e.papers[idx].flags |= flagPlanned
	e.putPlan(idx, p)
	return hostKey(p.steps[0].url)
}

// noteSuccess records which route produced a paper's PDF and, for a DOI, the DOI cache entry.
func (e *engine) noteSuccess(idx uint32, c *coldUpdate) {
	c.source = "url"
	if e.papers[idx].flags&flagPlanned == 0 {
		return
	}
	p, err := e.planOf(idx)
	if err != nil || len(p.steps) == 0 {
		return
	}
	s := p.steps[int(e.papers[idx].urlIdx)%len(p.steps)]
	c.source = s.source()
	e.ws.dois = append(e.ws.dois, doiWrite{doi: p.doi, idx: idx})
}

// onResolved applies a resolution step's result: the step is retired, the candidates it found
// are inserted after it and tried next. It does not count as a failed attempt.
func (e *engine) onResolved(l *lease, r *pb.ResolveResult, now time.Time) {
	p := &e.papers[l.idx]
	b := e.batches[l.batch]
	hostSucceeded(e.hosts[p.host])
	e.endLease(l, now)
	if b.state == pb.BatchState_BATCH_STATE_CANCELLED {
		e.setError(l.idx, cancelMessage(b))
		e.setState(l.idx, stateCancelled, now)
		return
	}
	pl, err := e.planOf(l.idx)
	cur := int(p.urlIdx)
	if err != nil || p.flags&flagPlanned == 0 || cur >= len(pl.steps) || !isResolution(pl.steps[cur].kind) {
		e.log.Error("resolve result for a paper without a resolution step", "paper", l.paperID, "err", err)
		e.setError(l.idx, "internal error: resolve result without a resolution step")
		e.setState(l.idx, stateFailed, now)
		return
	}
	route := pl.steps[cur].route
	cands := r.GetCandidateUrls()
	if len(cands) > maxFoundPerStep {
		cands = cands[:maxFoundPerStep]
	}
	n, dead := pl.insertFound(cur, route, cands, p.dead)
	note := validate.Truncate(redact.Text(r.GetNote()), 200)
	forwarded := false
	if f := r.GetForwardUrl(); f != "" && n == 0 && staysOnHost(route) {
		forwarded, dead = pl.insertForward(cur, f, dead)
		if !forwarded {
			note = "redirected to " + validate.Truncate(redact.URL(f), 160) + ", not followed (a loop or too many hosts)"
		}
	}
	switch {
	case forwarded:
		note = "forwards to " + hostKey(r.GetForwardUrl())
	case n > 0:
		note = fmt.Sprintf("%d candidate(s)", n)
	case note == "" && len(cands) > 0:
		note = "no new candidate"
	case note == "":
		note = "no PDF link"
	}
	pl.steps[cur].setNote(note)
	p.dead = dead | 1<<cur
	e.putPlan(l.idx, pl)
	e.markDirty(l.idx)
	if e.debug() {
		e.log.Debug("resolved", "batch", b.id, "paper", l.paperID, "route", routeLabel(route), "found", n)
	}
	e.advancePlan(l.idx, pl, now)
}

// advancePlan moves a planned paper to its next live step, or fails it with the summary of
// every route tried.
func (e *engine) advancePlan(idx uint32, pl *plan, now time.Time) {
	p := &e.papers[idx]
	next, ok := nextURL(p)
	if !ok {
		reason, msg := pl.failureSummary()
		msg = redact.Text(msg) // candidate URLs come from APIs and landing pages
		p.reason = uint8(reason)
		e.setError(idx, msg)
		e.setState(idx, stateFailed, now)
		e.log.Info("paper failed", "batch", e.batches[p.batch].id, "paper_index", idx, "reason", reasonLabel(reason), "error", msg)
		return
	}
	p.urlIdx = next
	p.host = e.internHost(hostKey(pl.steps[next].url))
	e.enqueue(idx, now)
}

// planFailed records a failed step of a planned paper. A DOI the resolver does not know (404
// on the landing-page step) also retires the CSL step, which asks the same resolver.
func (e *engine) planFailed(idx uint32, reason pb.FailureReason, msg string) *plan {
	p := &e.papers[idx]
	pl, err := e.planOf(idx)
	cur := int(p.urlIdx)
	if err != nil || cur >= len(pl.steps) {
		return nil
	}
	s := &pl.steps[cur]
	s.reason = uint8(reason)
	s.setNote(reasonLabel(reason) + " (" + validate.Truncate(msg, 160) + ")")
	if s.kind == stepResolve && s.route == pb.ResolveRoute_RESOLVE_ROUTE_LANDING_PAGE && reason == pb.FailureReason_FAILURE_REASON_NOT_FOUND {
		for i := range pl.steps {
			if t := &pl.steps[i]; t.kind == stepResolve && t.route == pb.ResolveRoute_RESOLVE_ROUTE_CSL_LINK && i < deadBits && p.dead&(1<<i) == 0 {
				p.dead |= 1 << i
				t.setNote("skipped (the DOI resolver does not know the DOI)")
			}
		}
	}
	e.putPlan(idx, pl)
	return pl
}
