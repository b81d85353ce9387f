package fetcher

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// The copy of a download that reaches its PDF through a redirect and an HTML landing page's
// citation_pdf_url holds the PDF's bytes only (none of the page's), and is finished with the
// PDF's digest; a landing page whose link leads to another HTML page ends with the copy aborted
// and empty (an HTML page is never copied).
func TestTapLandingPageAndRedirect(t *testing.T) {
	pdf := pdfBody(1<<20+77, 41)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/start":
			http.Redirect(w, r, "/landing", http.StatusFound)
		case "/landing":
			w.Header().Set("Content-Type", "text/html")
			_, _ = fmt.Fprint(w, `<html><head><meta name="citation_pdf_url" content="/moved"></head><body>`+string(bytes.Repeat([]byte("landing "), 4000))+`</body></html>`)
		case "/moved":
			http.Redirect(w, r, "/paper.pdf", http.StatusMovedPermanently)
		case "/paper.pdf":
			w.Header().Set("Content-Length", strconv.Itoa(len(pdf)))
			_, _ = w.Write(pdf)
		case "/landing2":
			w.Header().Set("Content-Type", "text/html")
			_, _ = fmt.Fprint(w, `<html><head><meta name="citation_pdf_url" content="/landing"></head></html>`)
		}
	}))
	t.Cleanup(origin.Close)

	tap := &recordingTap{}
	tf := newTestFetcher(t, func(c *Config) { c.Tap = tap })
	out, fail, _ := tf.run(t, origin.URL+"/start", paperJob)
	if fail != nil {
		t.Fatal(fail)
	}
	copies := tap.all()
	if len(copies) != 1 {
		t.Fatalf("%d copies, want 1", len(copies))
	}
	c := copies[0]
	if e := c.ended(); e != "finished" || c.sha != sha(pdf) || c.size != int64(len(pdf)) || out.sha256 != sha(pdf) {
		t.Fatalf("copy %s with %s/%d, want finished with the PDF's %s/%d", e, c.sha, c.size, sha(pdf), len(pdf))
	}
	if !bytes.Equal(c.buf.Bytes(), pdf) {
		t.Fatalf("the copy holds %d bytes, not the PDF's %d", c.buf.Len(), len(pdf))
	}

	tap2 := &recordingTap{}
	tf2 := newTestFetcher(t, func(c *Config) { c.Tap = tap2 })
	_, fail, _ = tf2.run(t, origin.URL+"/landing2", paperJob)
	wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_NOT_PDF)
	if c := tap2.all(); len(c) != 1 || c[0].ended() != "aborted" || c[0].buf.Len() != 0 {
		t.Fatalf("copies %v, want one aborted, empty", c)
	}
}

// A download that fails mid-body and is run again for the same paper (the next attempt, without
// a partial kept to resume) opens a new copy: the first is aborted with the bytes it had, the
// second holds the whole body and is finished; the two never mix.
func TestTapRetryAfterMidBodyFailure(t *testing.T) {
	pdf := pdfBody(600<<10, 43)
	var calls atomic.Int32
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(pdf)))
		if calls.Add(1) == 1 {
			_, _ = w.Write(pdf[:len(pdf)/3]) // cut: the connection closes short
			return
		}
		_, _ = w.Write(pdf)
	}))
	t.Cleanup(origin.Close)
	tap := &recordingTap{}
	tf := newTestFetcher(t, func(c *Config) { c.Tap = tap; c.ResumeMinBytes = 1 << 30 })
	_, fail, _ := tf.run(t, origin.URL+"/x.pdf", paperJob)
	wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_TRUNCATED)
	out, fail, _ := tf.run(t, origin.URL+"/x.pdf", paperJob)
	if fail != nil {
		t.Fatal(fail)
	}
	copies := tap.all()
	if len(copies) != 2 {
		t.Fatalf("%d copies, want 2", len(copies))
	}
	if e := copies[0].ended(); e != "aborted" {
		t.Errorf("first copy %s, want aborted", e)
	}
	c := copies[1]
	if e := c.ended(); e != "finished" || c.sha != out.sha256 || out.sha256 != sha(pdf) || !bytes.Equal(c.buf.Bytes(), pdf) {
		t.Fatalf("second copy %s with %s, %d bytes; want finished with the PDF (%s, %d bytes)", e, c.sha, c.buf.Len(), sha(pdf), len(pdf))
	}
}
