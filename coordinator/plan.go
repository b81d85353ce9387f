package coordinator

import (
	"encoding/binary"
	"fmt"
	"net/url"
	"strings"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/doiresolve"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// A paper with a DOI has a plan: its steps are its candidates (memPaper.urlIdx, nurls and dead
// index them, exactly like the URLs of a paper without a DOI). A step is a download (a URL of
// the spec, the arXiv PDF of an arXiv DOI, or a candidate a route found) or a resolution step
// (one request to an API or the DOI resolver, leased to a fetcher like a download and so under
// its host's politeness). A resolution step that finishes is retired and the candidates it
// found are inserted right after it, so they are tried next; the plan is stored with the paper
// (bucket plans) in the same transaction, so neither a retry nor a restart resolves again.
//
// Order: the spec's URLs, the arXiv PDF (arXiv DOIs), OpenAlex, Unpaywall (with an e-mail
// address), the landing page, the resolver's CSL JSON links. The open-access APIs come before
// the publisher's landing page: they point at repositories' open copies and spare publishers
// (whose "PDF" links are often paywalls) a request.

// maxPlanSteps is the most steps a plan holds: one bit each in memPaper.dead.
const maxPlanSteps = deadBits

// maxFoundPerStep bounds the candidates one resolution step adds.
const maxFoundPerStep = 8

// maxStepNote bounds what a plan remembers of each step's outcome.
const maxStepNote = 300

// Step kinds.
const (
	stepURL     uint8 = iota // a URL of the spec
	stepArxiv                // the arXiv PDF of an arXiv DOI
	stepFound                // a candidate found by route
	stepResolve              // a resolution step of route
	stepForward              // a resolution step of route at the host the previous one was redirected to
)

// maxForwards bounds the forward steps of a plan (a chain of cross-host redirects).
const maxForwards = 4

// isResolution reports whether a step kind is a request to resolve, not a download.
func isResolution(kind uint8) bool { return kind == stepResolve || kind == stepForward }

// planStep is one candidate of a plan.
type planStep struct {
	kind   uint8
	route  pb.ResolveRoute
	reason uint8 // the FailureReason of its last failure, 0 when none
	url    string
	note   string // what the step gave, for the final failure message
}

// plan is a DOI paper's candidates.
type plan struct {
	doi   string
	steps []planStep
}

const planVersion = 1

func (p *plan) marshal() []byte {
	b := []byte{planVersion}
	b = appendString(b, p.doi)
	b = append(b, byte(len(p.steps)))
	for _, s := range p.steps {
		b = append(b, s.kind, byte(s.route), s.reason)
		b = appendString(b, s.url)
		b = appendString(b, s.note)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (p *plan) unmarshal(b []byte) error {
	if len(b) < 2 || b[0] != planVersion {
		return fmt.Errorf("%w: bad plan", errBadRecord)
	}
	b = b[1:]
	readString := func() (string, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return "", false
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, true
	}
	var ok bool
	if p.doi, ok = readString(); !ok || len(b) < 1 {
		return fmt.Errorf("%w: truncated plan", errBadRecord)
	}
	n := int(b[0])
	b = b[1:]
	p.steps = make([]planStep, n)
	for i := range p.steps {
		if len(b) < 3 {
			return fmt.Errorf("%w: truncated plan", errBadRecord)
		}
		s := &p.steps[i]
		s.kind, s.route, s.reason = b[0], pb.ResolveRoute(b[1]), b[2]
		b = b[3:]
		if s.url, ok = readString(); !ok {
			return fmt.Errorf("%w: truncated plan", errBadRecord)
		}
		if s.note, ok = readString(); !ok {
			return fmt.Errorf("%w: truncated plan", errBadRecord)
		}
	}
	return nil
}

// routeOf maps a doiresolve route to its wire form (the same values).
func routeOf(r doiresolve.Route) pb.ResolveRoute { return pb.ResolveRoute(r) }

// routeLabel is a route's name in reports, GetPaper.source and messages.
func routeLabel(r pb.ResolveRoute) string {
	if r == pb.ResolveRoute_RESOLVE_ROUTE_UNSPECIFIED {
		return "url"
	}
	return doiresolve.Route(r).String()
}

// source is the label of the route a download step comes from.
func (s *planStep) source() string {
	switch s.kind {
	case stepArxiv:
		return "arxiv"
	case stepFound:
		return routeLabel(s.route)
	}
	return "url"
}

// label names a step in failure messages.
func (s *planStep) label() string {
	switch s.kind {
	case stepResolve:
		return routeLabel(s.route)
	case stepForward:
		return routeLabel(s.route) + " " + s.url
	case stepFound:
		return routeLabel(s.route) + " candidate " + s.url
	case stepArxiv:
		return "arxiv " + s.url
	}
	return s.url
}

// newPlan builds the plan of a paper with a (normalised) DOI.
func newPlan(rc ResolveConfig, doi string, urls []string) *plan {
	p := &plan{doi: doi}
	for _, u := range urls {
		p.steps = append(p.steps, planStep{kind: stepURL, url: u})
	}
	esc := validate.EscapeDOI(doi)
	if id, ok := validate.ArxivDOI(doi); ok {
		p.steps = append(p.steps, planStep{kind: stepArxiv, url: doiresolve.ArxivPDF(rc.ArxivBase, id)})
	}
	bases := doiresolve.Bases{DOI: rc.DOIBase, OpenAlex: rc.OpenAlexBase, Unpaywall: rc.UnpaywallBase, Email: rc.Email}
	for _, r := range doiresolve.Routes {
		if u := bases.URL(r, esc); u != "" {
			p.steps = append(p.steps, planStep{kind: stepResolve, route: routeOf(r), url: u})
		}
	}
	return p
}

// urls returns the plan's step URLs.
func (p *plan) urls() []string {
	out := make([]string, len(p.steps))
	for i, s := range p.steps {
		out[i] = s.url
	}
	return out
}

// insertFound retires step cur and inserts the new candidates after it (those not already in
// the plan, within maxPlanSteps). It returns the number inserted and the new dead map.
func (p *plan) insertFound(cur int, route pb.ResolveRoute, found []string, dead uint16) (int, uint16) {
	var add []planStep
	for _, u := range found {
		if len(add) >= maxFoundPerStep || len(p.steps)+len(add) >= maxPlanSteps {
			break
		}
		if !candidateURL(u) || p.has(u) || hasStep(add, u) {
			continue
		}
		add = append(add, planStep{kind: stepFound, route: route, url: u})
	}
	return p.insertSteps(cur, add, dead)
}

// insertForward inserts, after step cur, a step of the same route at the URL the step was
// redirected to (another host), within maxForwards and maxPlanSteps; false when it is not.
func (p *plan) insertForward(cur int, forward string, dead uint16) (bool, uint16) {
	n := 0
	for _, s := range p.steps {
		if s.kind == stepForward {
			n++
		}
		if isResolution(s.kind) && s.url == forward {
			return false, dead // a redirect loop (back to the DOI resolver, or to a publisher)
		}
	}
	if n >= maxForwards || len(p.steps) >= maxPlanSteps || !candidateURL(forward) {
		return false, dead
	}
	k, dead := p.insertSteps(cur, []planStep{{kind: stepForward, route: p.steps[cur].route, url: forward}}, dead)
	return k == 1, dead
}

// insertSteps inserts add after step cur and returns how many and the dead map shifted to
// match.
func (p *plan) insertSteps(cur int, add []planStep, dead uint16) (int, uint16) {
	if len(add) == 0 {
		return 0, dead
	}
	steps := make([]planStep, 0, len(p.steps)+len(add))
	steps = append(steps, p.steps[:cur+1]...)
	steps = append(steps, add...)
	steps = append(steps, p.steps[cur+1:]...)
	p.steps = steps
	low := dead & (1<<(cur+1) - 1)
	high := uint32(dead>>(cur+1)) << (cur + 1 + len(add))
	return len(add), low | uint16(high)
}

func (p *plan) has(u string) bool { return hasStep(p.steps, u) }

func hasStep(steps []planStep, u string) bool {
	for _, s := range steps {
		if !isResolution(s.kind) && s.url == u {
			return true
		}
	}
	return false
}

// candidateURL reports whether a URL a route found may be scheduled: http(s), a host, no
// credentials, within the URL limit.
func candidateURL(raw string) bool {
	if len(raw) > validate.MaxURLBytes {
		return false
	}
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.User == nil
}

// failureSummary is the message and reason of a DOI paper none of whose steps gave a PDF:
// not_found when the DOI resolver does not know the DOI; attempts_exhausted when a step was
// given up after transient failures (a copy may be there, on a server that was down);
// otherwise no_open_copy.
func (p *plan) failureSummary() (pb.FailureReason, string) {
	var tried []string
	unknown, exhausted := false, false
	for _, s := range p.steps {
		if s.note != "" {
			tried = append(tried, s.note)
		}
		if s.kind == stepResolve && s.route == pb.ResolveRoute_RESOLVE_ROUTE_LANDING_PAGE &&
			pb.FailureReason(s.reason) == pb.FailureReason_FAILURE_REASON_NOT_FOUND {
			unknown = true
		}
		if pb.FailureReason(s.reason) == pb.FailureReason_FAILURE_REASON_ATTEMPTS_EXHAUSTED {
			exhausted = true
		}
	}
	list := strings.Join(tried, "; ")
	switch {
	case unknown:
		return pb.FailureReason_FAILURE_REASON_NOT_FOUND, fmt.Sprintf("DOI %s not found: the DOI resolver does not know it (tried: %s)", p.doi, list)
	case exhausted:
		return pb.FailureReason_FAILURE_REASON_ATTEMPTS_EXHAUSTED, fmt.Sprintf("gave up on DOI %s after transient failures; routes tried: %s", p.doi, list)
	}
	return pb.FailureReason_FAILURE_REASON_NO_OPEN_COPY, fmt.Sprintf("no open PDF found for DOI %s; routes tried: %s", p.doi, list)
}

// exhaustStep retires step cur, given up after failures transient failures (the last msg).
func (p *plan) exhaustStep(cur, failures int, msg string) {
	if cur >= len(p.steps) {
		return
	}
	s := &p.steps[cur]
	s.reason = uint8(pb.FailureReason_FAILURE_REASON_ATTEMPTS_EXHAUSTED)
	s.setNote(fmt.Sprintf("gave up after %d failed attempts of the paper (%s)", failures, validate.Truncate(msg, 160)))
}

// setNote records a step's outcome (bounded).
func (s *planStep) setNote(msg string) {
	s.note = validate.Truncate(s.label()+": "+msg, maxStepNote)
}
