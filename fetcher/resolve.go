package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/doiresolve"
	"github.com/paperfetch/paperfetch/internal/fielderr"
)

// routeOf maps a resolution step's route to doiresolve's (the same values).
func routeOf(r pb.ResolveRoute) (doiresolve.Route, bool) {
	switch dr := doiresolve.Route(r); dr {
	case doiresolve.LandingPage, doiresolve.CSLLink, doiresolve.OpenAlex, doiresolve.Unpaywall:
		return dr, true
	}
	return 0, false
}

// resolve performs a resolution step: one GET (following redirects) through the same guarded
// client as downloads, bounded in time and size, and reads the candidates from the answer.
// HTTP errors, 429 with Retry-After, timeouts and forbidden addresses fail like downloads.
func (d *downloader) resolve(parent context.Context, j job, step *pb.ResolveStep, rep reporter) (*pb.ResolveResult, *failure) {
	route, ok := routeOf(step.GetRoute())
	if !ok {
		f := permanent(pb.FailureReason_FAILURE_REASON_BAD_URL, "unknown resolve route %v", step.GetRoute())
		f.url = j.url
		return nil, f
	}
	target, fail := parseTarget(j.url)
	if fail != nil {
		fail.url = j.url
		return nil, fail
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	if step.GetStayOnHost() {
		ctx = context.WithValue(ctx, stayOnHostKey{}, target.Host)
	}
	wd := startWatchdog(d.clk, cancel, j.timeout, j.stall)
	defer wd.stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		f := permanent(pb.FailureReason_FAILURE_REASON_BAD_URL, "%v", err)
		f.url = j.url
		return nil, f
	}
	req.Header.Set("User-Agent", withContact(d.userAgent, step.GetContact()))
	req.Header.Set("Accept", route.Accept())
	rep.started(j.url, 0)
	wd.touch()
	resp, err := d.client.Do(req)
	if err != nil {
		f := classifyError(ctx, err)
		f.url = j.url
		return nil, f
	}
	defer func() { _ = resp.Body.Close() }()
	final := resp.Request.URL
	if step.GetStayOnHost() && resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		if loc, err := resp.Location(); err == nil && !strings.EqualFold(loc.Host, final.Host) {
			if err := checkURL(loc); err != nil {
				f := permanent(pb.FailureReason_FAILURE_REASON_BAD_URL, "redirect to %s: %v", redactURL(loc), err)
				f.url = final.String()
				return nil, f
			}
			return fitResolved(&pb.ResolveResult{ForwardUrl: loc.String(), FinalUrl: final.String(), Note: "forwards to " + loc.Host}), nil
		}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		f := statusFailure(resp, d.clk.Now())
		f.url = final.String()
		return nil, f
	}
	body, err := io.ReadAll(io.LimitReader(&touchReader{r: resp.Body, wd: wd}, doiresolve.MaxBody+1))
	if err != nil && !errors.Is(err, io.EOF) {
		f := classifyError(ctx, err)
		f.url = final.String()
		return nil, f
	}
	if len(body) > doiresolve.MaxBody {
		if route != doiresolve.LandingPage { // a landing page is searched in its first MaxBody bytes
			f := permanent(pb.FailureReason_FAILURE_REASON_TOO_LARGE, "answer larger than %d bytes", doiresolve.MaxBody)
			f.url = final.String()
			return nil, f
		}
		body = body[:doiresolve.MaxBody]
	}
	res := doiresolve.Parse(route, body, final, resp.Header.Get("Content-Type"))
	return fitResolved(&pb.ResolveResult{CandidateUrls: res.Candidates, Note: res.Note, FinalUrl: final.String()}), nil
}

// maxContactBytes bounds ResolveStep.contact (an e-mail address).
const maxContactBytes = 254

// withContact returns the User-Agent ua naming the coordinator's contact address: ua itself
// when it names it already, or when contact is empty or not a plausible address (at most
// maxContactBytes, an "@", no white space, control or comment characters).
func withContact(ua, contact string) string {
	if contact == "" || len(contact) > maxContactBytes || !strings.Contains(contact, "@") || strings.Contains(ua, contact) {
		return ua
	}
	for _, r := range contact {
		if r <= ' ' || r == 0x7f || strings.ContainsRune("()<>\\\"", r) {
			return ua
		}
	}
	return ua + " (mailto:" + contact + ")"
}

// stayOnHostKey marks the context of a resolution request whose redirects must stay on the
// given host (ResolveStep.stay_on_host); CheckRedirect stops at any other.
type stayOnHostKey struct{}

// touchReader feeds the stall watchdog as bytes arrive.
type touchReader struct {
	r  io.Reader
	wd *watchdog
}

func (t *touchReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.wd.touch()
	}
	return n, err
}

// Resolver performs single resolution requests with a fetcher's hardened HTTP client (SSRF
// guard, timeouts, redirect checks, User-Agent with the contact address): what a fetcher does
// for a resolve lease, without a coordinator. `paperfetch resolve` uses it.
type Resolver struct {
	d       *downloader
	timeout time.Duration
}

// NewResolver returns a Resolver configured like a fetcher with cfg (only the HTTP, SSRF and
// User-Agent settings matter, and are validated). Close releases its idle connections.
func NewResolver(cfg Config) (*Resolver, error) {
	cfg = cfg.withDefaults()
	var v fielderr.List
	cfg.validateClient(&v)
	if err := v.Err("invalid configuration"); err != nil {
		return nil, fmt.Errorf("fetcher: %w", err)
	}
	g := &guard{allowAll: cfg.AllowPrivateNetworks, allow: cfg.AllowCIDRs}
	return &Resolver{
		d:       &downloader{client: newHTTPClient(&cfg, g), userAgent: cfg.userAgent(), reqHeader: newRequestHeader(nil, cfg.userAgent()), clk: cfg.Clock, log: cfg.Logger},
		timeout: cfg.Timeout,
	}, nil
}

// Resolve sends one route's request to rawURL and returns what it found; a failed request
// (HTTP error, timeout, forbidden address...) is an error saying why.
func (r *Resolver) Resolve(ctx context.Context, route pb.ResolveRoute, doi, rawURL string) (*pb.ResolveResult, error) {
	res, f := r.d.resolve(ctx, job{url: rawURL, timeout: r.timeout, stall: r.timeout}, &pb.ResolveStep{Route: route, Doi: doi}, nopReporter{})
	if f != nil {
		return nil, fmt.Errorf("%s: %s", strings.ToLower(strings.TrimPrefix(f.reason.String(), "FAILURE_REASON_")), f.msg)
	}
	return res, nil
}

// Close closes the idle connections.
func (r *Resolver) Close() { r.d.client.CloseIdleConnections() }

type nopReporter struct{}

func (nopReporter) started(string, int64)          {}
func (nopReporter) progress(int64, int64, float64) {}
