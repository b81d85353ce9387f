package fetcher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strconv"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// attempt is the state of one download across its requests (resume restarts, landing page).
type attempt struct {
	d          *downloader
	j          job
	sf         *spoolFile
	rep        reporter
	wd         *watchdog
	startedSet bool
	followed   bool // a citation_pdf_url was already followed
	// tap is the body's copy for Config.Tap (receivedBody.tap; never nil). Only a body received
	// whole from its first byte by the first request that reaches it is copied: a resume, or
	// a restart after one, aborts the copy.
	tap *bodyCopy
}

func (a *attempt) run(ctx context.Context, target *url.URL) (outcome, *failure) {
	for {
		next, out, fail := a.fetch(ctx, target, true)
		if fail != nil {
			if fail.url == "" {
				fail.url = target.String()
			}
			return outcome{}, fail
		}
		if next == nil {
			return out, nil
		}
		target = next
	}
}

// fetch performs one request to target and consumes the body. It returns a landing-page link
// to follow instead of an outcome when the body is an HTML page naming its PDF.
func (a *attempt) fetch(ctx context.Context, target *url.URL, mayResume bool) (*url.URL, outcome, *failure) {
	var offset int64
	var validator string
	if a.sf != nil && mayResume {
		offset, validator = a.sf.resumeFrom()
	}
	if offset > 0 || a.tap.n > 0 {
		// A resume (the prefix comes from the spool, not through the copy), or bytes copied
		// by an earlier request of this attempt: no copy of this body.
		a.tap.abort()
	}
	reqURL := target
	if a.d.proxy != nil {
		if err := a.d.guard.checkProxiedTarget(target); err != nil {
			return nil, outcome{}, classifyError(ctx, err)
		}
		u, err := a.d.proxy.proxied(target)
		if err != nil {
			return nil, outcome{}, classifyError(ctx, err)
		}
		reqURL = u
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reqURL.String(), nil)
	if err != nil {
		return nil, outcome{}, permanent(pb.FailureReason_FAILURE_REASON_BAD_URL, "%v", err)
	}
	// Shared by every request, read only: neither http.Client nor the transports write to a
	// request's header (the client clones it for redirects); a resume adds to a copy.
	req.Header = a.d.reqHeader
	if offset > 0 {
		req.Header = a.d.reqHeader.Clone()
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		req.Header.Set("If-Range", validator)
	}
	if !a.startedSet {
		a.startedSet = true
		a.rep.started(target.String(), offset)
	}
	a.wd.disarm()
	resp, err := a.d.client.Do(req)
	if err != nil {
		f := classifyError(ctx, err)
		var ue *url.Error
		if errors.As(err, &ue) {
			f.url = ue.URL
		}
		return nil, outcome{}, f
	}
	defer func() { _ = resp.Body.Close() }()
	finalURL := resp.Request.URL.String()

	resumed := false
	switch {
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		start, end, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		complete := total < 0 || end == total-1
		if !ok || start != offset || !complete || (a.sf.meta.Total > 0 && total != a.sf.meta.Total) {
			// Not the bytes we asked for: never append them. Start over.
			return a.refetch(ctx, target, resp)
		}
		resumed = true
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && offset > 0:
		return a.refetch(ctx, target, resp)
	case resp.StatusCode == http.StatusOK:
		if offset > 0 {
			// The origin ignored the range (or the validator changed): start over.
			if err := a.sf.reset(); err != nil {
				return nil, outcome{}, storageFailure(err)
			}
		}
	default:
		f := statusFailure(resp, a.d.clk.Now())
		f.url = finalURL
		return nil, outcome{}, f
	}

	maxSize := a.j.maxSize
	total := resp.ContentLength // decoded length when known (-1 when gzip-decoded or chunked)
	if total >= 0 && resumed {
		total += offset
	}
	if total > maxSize {
		f := permanent(pb.FailureReason_FAILURE_REASON_TOO_LARGE, "Content-Length %d exceeds the limit of %d bytes", total, maxSize)
		f.status, f.url = resp.StatusCode, finalURL
		return nil, outcome{}, f
	}

	h := sha256.New()
	var sink io.Writer = h
	var head []byte
	if a.sf != nil {
		hw := &hashingWriter{sf: a.sf, h: h}
		if !resumed && a.tap.w != nil {
			hw.tap = a.tap
		}
		sink = hw
		if resumed {
			if head, err = a.sf.hashPrefix(h); err != nil {
				return nil, outcome{}, storageFailure(err)
			}
		} else if err := a.sf.setValidator(validatorOf(resp), max(total, 0)); err != nil {
			return nil, outcome{}, storageFailure(err)
		}
	}
	a.wd.touch()
	body := &countingReader{r: resp.Body, wd: a.wd}
	bp := a.d.buffers.Get().(*[]byte)
	defer a.d.buffers.Put(bp)
	buf := *bp
	sniffed := 0 // bytes of the body read into buf to check for a PDF
	if len(head) < sniffLen {
		// Read the first bytes (up to sniffLen of the whole body) to check for a PDF.
		n, rerr := readFull(body, buf[:sniffLen-len(head)])
		sniffed = n
		if len(head) == 0 {
			head = buf[:n]
		} else {
			head = append(head, buf[:n]...)
		}
		if rerr != nil && rerr != io.EOF {
			return nil, outcome{}, a.bodyFailure(ctx, rerr, resp, finalURL)
		}
	}
	if !bytes.Contains(head, []byte("%PDF-")) {
		if resumed {
			// The kept prefix is not a PDF after all: never build on it.
			return a.refetch(ctx, target, resp)
		}
		return a.notPDF(ctx, resp, buf[:sniffed], body, finalURL)
	}
	var received int64
	if resumed {
		received = offset
	}
	if int64(sniffed) > maxSize {
		return nil, outcome{}, a.tooLarge(resp, finalURL, maxSize)
	}
	// The sniffed bytes are written together with the first bytes read after them.
	if fail := a.copyBody(ctx, buf, sniffed, body, sink, &received, total, maxSize, resp, finalURL); fail != nil {
		return nil, outcome{}, fail
	}
	if total >= 0 && received < total {
		f := transient(pb.FailureReason_FAILURE_REASON_TRUNCATED, "body ended after %d of %d bytes", received, total)
		f.status, f.url, f.resumable = resp.StatusCode, finalURL, true
		return nil, outcome{}, f
	}
	return nil, outcome{
		sha256:      hexSum(h),
		size:        received,
		contentType: resp.Header.Get("Content-Type"),
		finalURL:    finalURL,
	}, nil
}

// refetch drops the partial body kept for a resume (what the origin answered cannot extend
// it), closes resp's body and fetches target again from the first byte.
func (a *attempt) refetch(ctx context.Context, target *url.URL, resp *http.Response) (*url.URL, outcome, *failure) {
	a.tap.abort()
	if err := a.sf.reset(); err != nil {
		return nil, outcome{}, storageFailure(err)
	}
	_ = resp.Body.Close()
	return a.fetch(ctx, target, false)
}

// copyBody streams buf[:pending] (bytes already read from the body, at most sniffLen) and the
// rest of the body, read into buf, to sink, enforcing the size limit and reporting throttled
// progress.
func (a *attempt) copyBody(ctx context.Context, buf []byte, pending int, body io.Reader, sink io.Writer, received *int64, total, maxSize int64, resp *http.Response, finalURL string) *failure {
	lastBytes, lastTime := *received, a.d.clk.Now()
	for {
		n, rerr := body.Read(buf[pending:])
		n += pending
		pending = 0
		if n > 0 {
			if *received+int64(n) > maxSize {
				return a.tooLarge(resp, finalURL, maxSize)
			}
			if _, err := sink.Write(buf[:n]); err != nil {
				return storageFailure(err)
			}
			*received += int64(n)
			a.d.metrics.bytes.Add(float64(n))
			if *received-lastBytes >= progressBytes {
				if now := a.d.clk.Now(); now.Sub(lastTime) >= progressEvery {
					bps := float64(*received-lastBytes) / now.Sub(lastTime).Seconds()
					a.rep.progress(*received, max(total, 0), bps)
					lastBytes, lastTime = *received, now
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return a.bodyFailure(ctx, rerr, resp, finalURL)
		}
	}
}

func (a *attempt) tooLarge(resp *http.Response, finalURL string, maxSize int64) *failure {
	f := permanent(pb.FailureReason_FAILURE_REASON_TOO_LARGE, "body exceeds the limit of %d bytes", maxSize)
	f.status, f.url = resp.StatusCode, finalURL
	return f
}

// bodyFailure classifies an error while reading the body; such failures may be resumed.
func (a *attempt) bodyFailure(ctx context.Context, err error, resp *http.Response, finalURL string) *failure {
	f := classifyError(ctx, err)
	f.status, f.url = resp.StatusCode, finalURL
	f.resumable = f.class == pb.FailureClass_FAILURE_CLASS_TRANSIENT
	return f
}

// notPDF handles a body without "%PDF-" in its first bytes: a landing page naming its PDF in
// a citation_pdf_url meta tag is followed (once); anything else fails as NOT_PDF.
func (a *attempt) notPDF(ctx context.Context, resp *http.Response, head []byte, body io.Reader, finalURL string) (*url.URL, outcome, *failure) {
	notPDF := func(why string) (*url.URL, outcome, *failure) {
		f := permanent(pb.FailureReason_FAILURE_REASON_NOT_PDF, "not a PDF (Content-Type %q): %s", resp.Header.Get("Content-Type"), why)
		f.status, f.url = resp.StatusCode, finalURL
		return nil, outcome{}, f
	}
	if a.followed {
		return notPDF("the citation_pdf_url link did not lead to a PDF")
	}
	if !looksHTML(head, resp.Header.Get("Content-Type")) {
		return notPDF("no %PDF- in the first 1024 bytes")
	}
	page, err := io.ReadAll(io.LimitReader(body, landingMax-int64(len(head))))
	if err != nil && ctx.Err() != nil {
		return nil, outcome{}, classifyError(ctx, err)
	}
	page = append(append([]byte(nil), head...), page...)
	link := citationPDFURL(page, resp.Request.URL)
	if link == "" {
		return notPDF("an HTML page without a citation_pdf_url link")
	}
	next, err := resp.Request.URL.Parse(link)
	if err != nil {
		return notPDF("bad citation_pdf_url link")
	}
	if err := checkURL(next); err != nil {
		f := permanent(pb.FailureReason_FAILURE_REASON_BAD_URL, "citation_pdf_url: %v", err)
		f.url = next.String()
		return nil, outcome{}, f
	}
	a.followed = true
	if a.sf != nil {
		if err := a.sf.reset(); err != nil {
			return nil, outcome{}, storageFailure(err)
		}
	}
	a.d.log.DebugContext(ctx, "following citation_pdf_url", "from", redactURL(resp.Request.URL), "to", redactURL(next))
	return next, outcome{}, nil
}

// hexSum returns h's sum in lower-case hex (one allocation: the string).
func hexSum(h hash.Hash) string {
	var sum [sha256.Size]byte
	var out [2 * sha256.Size]byte
	hex.Encode(out[:], h.Sum(sum[:0]))
	return string(out[:])
}
