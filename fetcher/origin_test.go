package fetcher

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

const (
	permanentClass = pb.FailureClass_FAILURE_CLASS_PERMANENT
	transientClass = pb.FailureClass_FAILURE_CLASS_TRANSIENT
)

// hostileOrigin serves the misbehaviours publishers' servers show.
func hostileOrigin(t *testing.T, pdf []byte) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	servePDF := func(w http.ResponseWriter, r *http.Request, ctype string) {
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Content-Length", strconv.Itoa(len(pdf)))
		_, _ = w.Write(pdf)
	}
	mux.HandleFunc("/pdf", func(w http.ResponseWriter, r *http.Request) { servePDF(w, r, "application/pdf") })
	mux.HandleFunc("/octet", func(w http.ResponseWriter, r *http.Request) { servePDF(w, r, "application/octet-stream") })
	mux.HandleFunc("/chain/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		if n == 0 {
			http.Redirect(w, r, "/pdf", http.StatusFound)
			return
		}
		http.Redirect(w, r, fmt.Sprintf("/chain/%d", n-1), http.StatusMovedPermanently)
	})
	mux.HandleFunc("/loop/a", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop/b", http.StatusFound) })
	mux.HandleFunc("/loop/b", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop/a", http.StatusFound) })
	mux.HandleFunc("/redirect-ftp", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "ftp://example.org/x.pdf", http.StatusFound)
	})
	mux.HandleFunc("/paywall", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!DOCTYPE html><html><head><title>Sign in</title></head><body>Buy this article for $39.95</body></html>"))
	})
	mux.HandleFunc("/html-as-pdf", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pdf")
		_, _ = w.Write([]byte("<html><body>Access denied</body></html>"))
	})
	mux.HandleFunc("/landing", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(`<!doctype html><html><head>
<meta name="citation_title" content="A paper">
<meta content="/pdf?from=landing&amp;x=1" name="citation_pdf_url">
</head><body>Abstract...</body></html>`))
	})
	mux.HandleFunc("/landing-to-landing", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(`<html><head><meta name='citation_pdf_url' content='/landing-to-landing'></head></html>`))
	})
	mux.HandleFunc("/gzip", func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			servePDF(w, r, "application/pdf")
			return
		}
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(pdf)
		_ = zw.Close()
		w.Header().Set("Content-Type", "application/pdf")
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
		_, _ = w.Write(buf.Bytes())
	})
	mux.HandleFunc("/gzip-bomb", func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(pdf[:1024])
		_, _ = zw.Write(make([]byte, 32<<20))
		_ = zw.Close()
		w.Header().Set("Content-Type", "application/pdf")
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(buf.Bytes())
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pdf")
		fl := w.(http.Flusher)
		for off := 0; off < len(pdf); off += 7000 {
			_, _ = w.Write(pdf[off:min(off+7000, len(pdf))])
			fl.Flush()
		}
	})
	mux.HandleFunc("/truncated", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pdf")
		w.Header().Set("Content-Length", strconv.Itoa(len(pdf)))
		_, _ = w.Write(pdf[:len(pdf)/2])
	})
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) {
		conn, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nTransfer-Encoding: chunked\r\n\r\n")
		_, _ = fmt.Fprintf(bw, "%x\r\n%s\r\n", 2000, pdf[:2000])
		_ = bw.Flush()
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
		_ = conn.Close()
	})
	mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pdf")
		w.Header().Set("Content-Length", strconv.Itoa(len(pdf)))
		_, _ = w.Write(pdf[:4096])
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("/endless", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pdf")
		chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
		if _, err := w.Write(pdf[:1024]); err != nil {
			return
		}
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/declared-huge", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pdf")
		w.Header().Set("Content-Length", "999999999999")
		_, _ = w.Write(pdf[:1024])
	})
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		if ra := r.URL.Query().Get("retry_after"); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		if in, _ := strconv.Atoi(r.URL.Query().Get("retry_after_date_in")); in > 0 {
			w.Header().Set("Retry-After", time.Now().Add(time.Duration(in)*time.Second).UTC().Format(http.TimeFormat))
		}
		http.Error(w, http.StatusText(code), code)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestHostileOrigin(t *testing.T) {
	pdf := pdfBody(300_000, 1)
	key := blobstore.ContentKey(sha(pdf))
	srv := hostileOrigin(t, pdf)

	type want struct {
		ok         bool
		class      pb.FailureClass
		reason     pb.FailureReason
		status     int
		retryAfter time.Duration // exact, or approximate for dates (see approx)
		approx     bool
		anyStatus  bool // the failure may come before or after the response headers
		finalPath  string
	}
	cases := []struct {
		name string
		path string
		job  func(*job)
		want want
	}{
		{"plain pdf", "/pdf", nil, want{ok: true, finalPath: "/pdf"}},
		{"octet-stream pdf", "/octet", nil, want{ok: true, finalPath: "/octet"}},
		{"redirect chain", "/chain/4", nil, want{ok: true, finalPath: "/pdf"}},
		{"redirect loop", "/loop/a", nil, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_REDIRECT_LOOP}},
		{"too many redirects", "/chain/30", nil, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_REDIRECT_LOOP}},
		{"redirect to ftp", "/redirect-ftp", nil, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_BAD_URL}},
		{"paywall html", "/paywall", nil, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_NOT_PDF, status: 200}},
		{"html served as pdf", "/html-as-pdf", nil, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_NOT_PDF, status: 200}},
		{"landing page citation_pdf_url", "/landing", nil, want{ok: true, finalPath: "/pdf?from=landing&x=1"}},
		{"landing page followed once", "/landing-to-landing", nil, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_NOT_PDF, status: 200}},
		{"gzip", "/gzip", nil, want{ok: true, finalPath: "/gzip"}},
		{"chunked", "/chunked", nil, want{ok: true, finalPath: "/chunked"}},
		// Compression is never asked for, so a gzip body is never decoded (no decompression
		// bomb): served anyway, it is not a PDF.
		{"gzip bomb", "/gzip-bomb", func(j *job) { j.maxSize = 1 << 20 }, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_NOT_PDF, status: 200}},
		{"truncated body", "/truncated", nil, want{class: transientClass, reason: pb.FailureReason_FAILURE_REASON_TRUNCATED, status: 200}},
		{"connection reset", "/reset", nil, want{class: transientClass, reason: pb.FailureReason_FAILURE_REASON_CONNECTION, status: 200}},
		{"stall", "/stall", func(j *job) { j.stall = 300 * time.Millisecond }, want{class: transientClass, reason: pb.FailureReason_FAILURE_REASON_STALLED, status: 200}},
		{"overall deadline", "/stall", func(j *job) { j.timeout = 300 * time.Millisecond }, want{class: transientClass, reason: pb.FailureReason_FAILURE_REASON_TIMEOUT, anyStatus: true}},
		{"endless body", "/endless", func(j *job) { j.maxSize = 1 << 20 }, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_TOO_LARGE, status: 200}},
		{"declared too large", "/declared-huge", nil, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_TOO_LARGE, status: 200}},
		{"checksum mismatch", "/pdf", func(j *job) { j.expectedSHA = strings.Repeat("ab", 32) }, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_CHECKSUM_MISMATCH}},
		{"checksum match", "/pdf", func(j *job) { j.expectedSHA = sha(pdf) }, want{ok: true, finalPath: "/pdf"}},
		{"404", "/status/404", nil, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_NOT_FOUND, status: 404}},
		{"410", "/status/410", nil, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_GONE, status: 410}},
		{"403", "/status/403", nil, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_FORBIDDEN, status: 403}},
		{"401", "/status/401", nil, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_FORBIDDEN, status: 401}},
		{"400", "/status/400", nil, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_HTTP_STATUS, status: 400}},
		{"500", "/status/500", nil, want{class: transientClass, reason: pb.FailureReason_FAILURE_REASON_SERVER_ERROR, status: 500}},
		{"503", "/status/503", nil, want{class: transientClass, reason: pb.FailureReason_FAILURE_REASON_SERVER_ERROR, status: 503}},
		{"503 retry-after", "/status/503?retry_after=30", nil, want{class: transientClass, reason: pb.FailureReason_FAILURE_REASON_RATE_LIMITED, status: 503, retryAfter: 30 * time.Second}},
		{"429 retry-after seconds", "/status/429?retry_after=120", nil, want{class: transientClass, reason: pb.FailureReason_FAILURE_REASON_RATE_LIMITED, status: 429, retryAfter: 120 * time.Second}},
		{"429 retry-after date", "/status/429?retry_after_date_in=90", nil, want{class: transientClass, reason: pb.FailureReason_FAILURE_REASON_RATE_LIMITED, status: 429, retryAfter: 90 * time.Second, approx: true}},
		{"429 without retry-after", "/status/429", nil, want{class: transientClass, reason: pb.FailureReason_FAILURE_REASON_RATE_LIMITED, status: 429}},
		{"bad scheme", "", func(j *job) { j.url = "file:///etc/passwd" }, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_BAD_URL}},
		{"credentials in url", "", func(j *job) { j.url = strings.Replace(srv.URL, "http://", "http://user:pw@", 1) + "/pdf" }, want{class: permanentClass, reason: pb.FailureReason_FAILURE_REASON_BAD_URL}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tf := newTestFetcher(t, nil)
			out, fail, rec := tf.run(t, srv.URL+tc.path, tc.job)
			if tc.want.ok {
				if fail != nil {
					t.Fatalf("failed: %v", fail)
				}
				if out.sha256 != sha(pdf) || out.size != int64(len(pdf)) || out.blobKey != key {
					t.Fatalf("outcome %+v, want sha %s size %d", out, sha(pdf), len(pdf))
				}
				if want := srv.URL + tc.want.finalPath; out.finalURL != want {
					t.Fatalf("final URL %q, want %q", out.finalURL, want)
				}
				if got := readKey(t, tf, key); !bytes.Equal(got, pdf) {
					t.Fatal("stored bytes differ")
				}
				tf.assertStore(t, key)
				return
			}
			wantFailure(t, fail, tc.want.class, tc.want.reason)
			if fail.status != tc.want.status && !tc.want.anyStatus {
				t.Errorf("http status %d, want %d", fail.status, tc.want.status)
			}
			switch {
			case tc.want.approx:
				if d := fail.retryAfter - tc.want.retryAfter; d < -3*time.Second || d > time.Second {
					t.Errorf("retry after %v, want about %v", fail.retryAfter, tc.want.retryAfter)
				}
			case fail.retryAfter != tc.want.retryAfter:
				t.Errorf("retry after %v, want %v", fail.retryAfter, tc.want.retryAfter)
			}
			if fail.url == "" {
				t.Error("failure without URL")
			}
			if p := fail.proto(); p.GetClass() != tc.want.class || p.GetReason() != tc.want.reason {
				t.Errorf("proto %v", p)
			}
			_ = rec
			tf.assertStore(t)
		})
	}
}

func TestProgressIsThrottled(t *testing.T) {
	pdf := pdfBody(8<<20, 2)
	srv := hostileOrigin(t, pdf)
	tf := newTestFetcher(t, nil)
	_, fail, rec := tf.run(t, srv.URL+"/chunked", nil)
	if fail != nil {
		t.Fatal(fail)
	}
	// Fast local transfer: 256 KiB pass long before 500 ms, so few (usually no) progress
	// events; every reported byte count must be at least 256 KiB above the previous one.
	var last int64
	for _, b := range rec.progs {
		if b-last < progressBytes {
			t.Fatalf("progress events too close: %v", rec.progs)
		}
		last = b
	}
	if len(rec.progs) > len(pdf)/progressBytes {
		t.Fatalf("%d progress events", len(rec.progs))
	}
}

func TestIdenticalContentStoredOnce(t *testing.T) {
	pdf := pdfBody(100_000, 3)
	srv := hostileOrigin(t, pdf)
	tf := newTestFetcher(t, nil)
	for _, p := range []string{"/pdf", "/octet", "/chunked"} {
		if _, fail, _ := tf.run(t, srv.URL+p, nil); fail != nil {
			t.Fatal(fail)
		}
	}
	tf.assertStore(t, blobstore.ContentKey(sha(pdf)))
}

func TestValidateOnlyStoresNothing(t *testing.T) {
	pdf := pdfBody(100_000, 4)
	srv := hostileOrigin(t, pdf)
	tf := newTestFetcher(t, nil)
	out, fail, _ := tf.run(t, srv.URL+"/pdf", func(j *job) { j.store = false })
	if fail != nil {
		t.Fatal(fail)
	}
	if out.sha256 != sha(pdf) || out.blobKey != "" {
		t.Fatalf("outcome %+v", out)
	}
	tf.assertStore(t)
}
