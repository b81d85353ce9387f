package fetcher

import (
	"bytes"
	"context"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/clock"
	"github.com/paperfetch/paperfetch/internal/doiresolve"
)

const (
	// sniffLen is how far into the body "%PDF-" may appear.
	sniffLen = 1024
	// landingMax is how much of an HTML page is searched for citation_pdf_url.
	landingMax = 1 << 20
	// copyBufSize is the read buffer of the body copy loop.
	copyBufSize = 1 << 20
	// progressBytes and progressEvery throttle progress events: one is sent when both this
	// many bytes and this much time have passed since the previous one.
	progressBytes = 256 << 10
	progressEvery = 500 * time.Millisecond
	// idleConnTimeout closes keep-alive connections to origins unused for this long.
	idleConnTimeout = 60 * time.Second
)

// job is one download to perform.
type job struct {
	url         string
	expectedSHA string // lowercase hex or ""
	maxSize     int64
	timeout     time.Duration
	stall       time.Duration
	store       bool // write to the blob store (else only validate and hash)
	resume      bool // keep/resume partial bodies in the spool
	// firstAttempt: the coordinator's first attempt at the paper, so no fetcher kept a partial
	// body of it; a stored download then skips removeURL (a folder scan per paper). Partials of
	// the same URL kept for another paper stay for that paper's retry, or until swept.
	firstAttempt bool
	// batchID and paperID name the paper of a lease's download ("" for a Fetch call): its body
	// is copied to downloader.tap's writer for it.
	batchID, paperID string
}

// outcome is a successful download.
type outcome struct {
	sha256      string
	size        int64
	contentType string
	finalURL    string
	blobKey     string
}

// reporter receives a download's non-terminal events.
type reporter interface {
	started(url string, resumeOffset int64)
	progress(bytes, total int64, bytesPerSecond float64)
}

// downloader performs downloads: hardened HTTP, validation, hashing, spooling and commit.
type downloader struct {
	client    *http.Client
	userAgent string
	// reqHeader is every request's header (Config.Headers, then User-Agent and Accept), built once
	// by newRequestHeader and never written: a request without Range carries it, one with
	// Range a Clone (2 allocations, not one per header).
	reqHeader http.Header
	proxy     *Config // set when downloads go through a proxy (Config.Proxy)
	guard     *guard
	clk       clock.Clock
	spool     *spool
	store     *store
	minResume int64
	log       *slog.Logger
	metrics   *metrics
	buffers   sync.Pool // *[]byte of copyBufSize
	tap       BodyTap   // Config.Tap (nil: no copies)

	// beforeCommit, when set (by tests, before any download), is called at the start of every
	// commit.
	beforeCommit func()
}

// newHTTPClient builds the hardened HTTP client: SSRF-guarded dialer, timeouts on connect, TLS
// handshake and response headers, no proxy from the environment (a proxy would bypass the
// guard), a redirect limit with loop detection, and scheme/credential checks on redirects.
// Without a forward proxy its transport is an h1Transport (plain-http requests written and
// read by the caller) over the http.Transport (everything else).
func newHTTPClient(cfg *Config, g *guard) *http.Client {
	d := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	var proxy func(*http.Request) (*url.URL, error) // none from the environment: see proxy.go
	if cfg.Proxy != nil && cfg.ProxyMode == ProxyForward {
		proxy = http.ProxyURL(cfg.Proxy)
	}
	tr := &http.Transport{
		Proxy:                 proxy,
		DialContext:           g.dialer(d, cfg.LookupIP),
		TLSHandshakeTimeout:   cfg.TLSHandshakeTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		// Idle keep-alive connections are bounded by what the downloads can use: one per
		// download that may run at once (Slots + Prefetch: a successor may start before its
		// predecessor's connection is back in the pool) to the same host at most, twice that
		// in all, each closed after 60 s unused. With one per slot only, the connections
		// beyond it were closed as they went idle and dialled again a moment later: about 1
		// dial per 12 papers on a fast origin (2,000 × 20 KiB: 143–194 connects).
		MaxIdleConns:        2*(cfg.Slots+cfg.Prefetch) + 8,
		MaxIdleConnsPerHost: min(cfg.Slots+cfg.Prefetch, 128),
		IdleConnTimeout:     idleConnTimeout,
		ForceAttemptHTTP2:   true,
		ReadBufferSize:      256 << 10,
		WriteBufferSize:     16 << 10,
		// PDFs are compressed already: asking for gzip only costs a decompression (and made
		// the body's length and validator unknown, so no resume). h1Transport never asks.
		DisableCompression: true,
	}
	// Plain-http requests go over h1Transport's connections unless a forward proxy carries
	// them all.
	var rt http.RoundTripper = tr
	if proxy == nil {
		rt = newH1Transport(tr)
	}
	maxRedirects := cfg.MaxRedirects
	return &http.Client{
		Transport: rt,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if host, ok := req.Context().Value(stayOnHostKey{}).(string); ok && !strings.EqualFold(req.URL.Host, host) {
				return http.ErrUseLastResponse // a resolution step reports the other host instead
			}
			if err := checkURL(req.URL); err != nil {
				return err
			}
			if cfg.Proxy != nil {
				if err := g.checkProxiedTarget(req.URL); err != nil {
					return err
				}
			}
			for _, v := range via {
				if v.URL.String() == req.URL.String() {
					return &redirectError{msg: fmt.Sprintf("redirect loop at %s", redactURL(req.URL))}
				}
			}
			if len(via) > maxRedirects {
				return &redirectError{msg: fmt.Sprintf("more than %d redirects", maxRedirects)}
			}
			return nil
		},
	}
}

// checkURL accepts absolute http(s) URLs with a host and without credentials.
func checkURL(u *url.URL) error {
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return &badURLError{msg: fmt.Sprintf("scheme %q is not http or https", u.Scheme)}
	case u.User != nil:
		return &badURLError{msg: "URL carries credentials"}
	case u.Hostname() == "":
		return &badURLError{msg: "URL has no host"}
	}
	return nil
}

// parseTarget parses and checks a download URL.
func parseTarget(raw string) (*url.URL, *failure) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, permanent(pb.FailureReason_FAILURE_REASON_BAD_URL, "cannot parse URL: %v", err)
	}
	if err := checkURL(u); err != nil {
		return nil, permanent(pb.FailureReason_FAILURE_REASON_BAD_URL, "%v", err)
	}
	return u, nil
}

// redactURL drops credentials and the query (which may hold tokens) for messages.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.Fragment = ""
	return c.String()
}

// download runs one job: receive, then commit. It returns the outcome, or the classified
// failure; on failure nothing of the attempt is left in the blob store (a partial body may
// stay in the spool for resuming).
func (d *downloader) download(parent context.Context, j job, rep reporter) (outcome, *failure) {
	r, fail := d.receive(parent, j, rep)
	if fail != nil {
		return outcome{}, fail
	}
	return d.commit(r)
}

// receivedBody is a body received, hashed and validated (and checked against the expected
// checksum), waiting in its spool file to be committed. Its context and watchdog still run:
// the job's overall timeout covers the commit too. Exactly one of commit and drop ends it.
type receivedBody struct {
	out    outcome
	j      job
	sf     *spoolFile // nil when the job does not store
	ctx    context.Context
	cancel context.CancelCauseFunc
	wd     *watchdog // &wdog
	// tap is the copy of the body for Config.Tap: finished by a successful commit, aborted by
	// every other end.
	tap bodyCopy

	wdog watchdog // the download's watchdog, in this allocation
}

func (r *receivedBody) end() {
	r.tap.abort()
	r.wd.stop()
	r.cancel(nil)
}

// receive runs the HTTP part of a job: request, validation, hashing and spooling of the body.
// On failure nothing of the attempt is left but a partial body kept for resuming.
func (d *downloader) receive(parent context.Context, j job, rep reporter) (*receivedBody, *failure) {
	ctx, cancel := context.WithCancelCause(parent)
	return d.receiveIn(ctx, cancel, j, rep)
}

// receiveIn is receive under ctx, a context the download owns (a lease's: one context fewer
// per download): its watchdog cancels it with cancel (errStalled, errDeadline), and the end of
// the download (failure, drop or commit) cancels it.
func (d *downloader) receiveIn(ctx context.Context, cancel context.CancelCauseFunc, j job, rep reporter) (*receivedBody, *failure) {
	target, fail := parseTarget(j.url)
	if fail != nil {
		cancel(nil)
		fail.url = j.url
		return nil, fail
	}
	r := &receivedBody{j: j, ctx: ctx, cancel: cancel}
	wd := &r.wdog
	wd.start(d.clk, cancel, j.timeout, j.stall)
	r.wd = wd
	if j.store {
		var err error
		if r.sf, err = d.spool.open(j.url, j.resume); err != nil {
			r.end()
			f := storageFailure(err)
			f.url = j.url
			return nil, f
		}
	}
	if d.tap != nil && j.paperID != "" && r.sf != nil {
		r.tap.w = d.tap.Open(j.batchID, j.paperID)
	}
	a := &attempt{d: d, j: j, sf: r.sf, rep: rep, wd: wd, tap: &r.tap}
	out, fail := a.run(ctx, target)
	if fail != nil {
		if r.sf != nil {
			r.sf.abandon(fail.resumable && fail.class == pb.FailureClass_FAILURE_CLASS_TRANSIENT, d.minResume)
			if fail.class == pb.FailureClass_FAILURE_CLASS_PERMANENT {
				d.forgetURL(ctx, j.url, "failed permanently")
			}
		}
		r.end()
		return nil, fail
	}
	if j.expectedSHA != "" && out.sha256 != j.expectedSHA {
		if r.sf != nil {
			r.sf.discard()
			d.forgetURL(ctx, j.url, "failed permanently")
		}
		r.end()
		f := permanent(pb.FailureReason_FAILURE_REASON_CHECKSUM_MISMATCH, "sha256 %s, expected %s", out.sha256, j.expectedSHA)
		f.url = out.finalURL
		return nil, f
	}
	// No more bytes come: only the overall timeout applies to what is left.
	wd.disarm()
	r.out = out
	return r, nil
}

// commit makes a received body durable in the blob store under its content-addressed key.
func (d *downloader) commit(r *receivedBody) (outcome, *failure) {
	defer r.end()
	out := r.out
	if r.sf == nil {
		return out, nil
	}
	if d.beforeCommit != nil {
		d.beforeCommit()
	}
	key := blobstore.ContentKey(out.sha256)
	if err := d.store.commit(r.ctx, r.sf, key); err != nil {
		f := classifyStoreError(r.ctx, err)
		f.url = out.finalURL
		return outcome{}, f
	}
	out.blobKey = key
	// The blob holds the body: the paper's copy is final.
	r.tap.finish(out.sha256, out.size)
	if !r.j.firstAttempt {
		d.forgetURL(r.ctx, r.j.url, "stored")
	}
	return out, nil
}

// drop abandons a received body that will not be committed (its lease was aborted while it
// waited for a place in the commit queue): its spool file is removed.
func (d *downloader) drop(r *receivedBody) {
	if r.sf != nil {
		r.sf.discard()
	}
	r.end()
}

// forgetURL removes the spool files every fetcher may have kept for url, which is finished
// (why: stored or failed permanently), so none of them can be resumed usefully.
func (d *downloader) forgetURL(ctx context.Context, url, why string) {
	n, err := d.spool.removeURL(url)
	if n > 0 {
		d.metrics.spoolRemoved.WithLabelValues("finished").Add(float64(n))
		d.log.DebugContext(ctx, "removed spool files of a finished URL", "url_sha256", urlHash(url), "why", why, "count", n)
	}
	if err != nil {
		d.log.WarnContext(ctx, "removing spool files of a finished URL", "url_sha256", urlHash(url), "why", why, "err", err)
	}
}

// classifyStoreError classifies a failed commit: an abort stays an abort, anything else is a
// transient storage failure.
func classifyStoreError(ctx context.Context, err error) *failure {
	if ctx.Err() != nil {
		return classifyError(ctx, err)
	}
	return storageFailure(err)
}

// looksHTML reports whether a body start or Content-Type says HTML.
func looksHTML(head []byte, contentType string) bool {
	if strings.Contains(strings.ToLower(contentType), "html") {
		return true
	}
	s := strings.ToLower(string(bytes.TrimLeft(head, " \t\r\n\ufeff")))
	return strings.HasPrefix(s, "<!doctype html") || strings.HasPrefix(s, "<html") || strings.Contains(s, "<head") || strings.Contains(s, "<meta")
}

// citationPDFURL returns a landing page's first PDF link (its citation_pdf_url meta tag, else
// its <link rel="alternate" type="application/pdf">), absolute, or "".
func citationPDFURL(page []byte, base *url.URL) string {
	if links := doiresolve.PDFLinks(page, base); len(links) > 0 {
		return links[0]
	}
	return ""
}

// validatorOf returns the If-Range validator of a response: a strong ETag, else Last-Modified.
func validatorOf(resp *http.Response) string {
	if strings.EqualFold(resp.Header.Get("Accept-Ranges"), "none") {
		return ""
	}
	if resp.Header.Get("Content-Encoding") != "" || resp.Uncompressed {
		return ""
	}
	if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
		return et
	}
	return resp.Header.Get("Last-Modified")
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*", returned as -1).
func parseContentRange(v string) (start, end, total int64, ok bool) {
	v = strings.TrimSpace(v)
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	s, e, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	start, err1 := strconv.ParseInt(s, 10, 64)
	end, err2 := strconv.ParseInt(e, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t <= end {
			return 0, 0, 0, false
		}
		total = t
	}
	return start, end, total, true
}

// readFull reads until p is full or the reader fails; a body shorter than p ends with io.EOF.
func readFull(r io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// newRequestHeader returns the header every request starts with: the extra headers, then
// User-Agent and Accept set over them.
func newRequestHeader(extra http.Header, userAgent string) http.Header {
	h := make(http.Header, len(extra)+2)
	for k, vs := range extra {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	h.Set("User-Agent", userAgent)
	h.Set("Accept", "application/pdf,*/*;q=0.8")
	return h
}

// hashingWriter writes to a spool file, then to the hash of the body (io.MultiWriter's
// semantics, one allocation instead of two), then to the body's copy for Config.Tap when tap
// is set: the copy gets exactly the bytes hashed. A failed copy is aborted, the write goes on.
type hashingWriter struct {
	sf  *spoolFile
	h   hash.Hash
	tap *bodyCopy // nil: no copy of this body
}

func (w *hashingWriter) Write(p []byte) (int, error) {
	n, err := w.sf.Write(p)
	if err != nil {
		return n, err
	}
	if n != len(p) {
		return n, io.ErrShortWrite
	}
	n, err = w.h.Write(p)
	if w.tap != nil {
		w.tap.write(p)
	}
	return n, err
}

// countingReader feeds the stall watchdog on every read that returns bytes.
type countingReader struct {
	r  io.Reader
	wd *watchdog
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.wd.touch()
	}
	return n, err
}
