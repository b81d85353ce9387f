package fetcher

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawOrigin is a TCP server on 127.0.0.1 whose connections are served by serve (one call per
// connection, with the connection's index); it counts connections.
type rawOrigin struct {
	ln    net.Listener
	conns atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	open  []net.Conn
}

func newRawOrigin(t *testing.T, serve func(i int, c net.Conn, br *bufio.Reader)) *rawOrigin {
	t.Helper()
	return newRawOriginOn(t, "127.0.0.1:0", serve)
}

// newRawOriginOn is newRawOrigin listening on addr.
func newRawOriginOn(t *testing.T, addr string, serve func(i int, c net.Conn, br *bufio.Reader)) *rawOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	o := &rawOrigin{ln: ln}
	o.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			i := int(o.conns.Add(1)) - 1
			o.mu.Lock()
			o.open = append(o.open, c)
			o.mu.Unlock()
			o.wg.Go(func() {
				defer func() { _ = c.Close() }()
				serve(i, c, bufio.NewReader(c))
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		o.mu.Lock()
		for _, c := range o.open {
			_ = c.Close()
		}
		o.mu.Unlock()
		o.wg.Wait()
	})
	return o
}

func (o *rawOrigin) url(path string) string { return "http://" + o.ln.Addr().String() + path }

// readRequest reads one request header; false at the end of the connection.
func readRequest(br *bufio.Reader) (*http.Request, bool) {
	req, err := http.ReadRequest(br)
	return req, err == nil
}

// pdfResponse writes a keep-alive 200 response with body.
func pdfResponse(c net.Conn, body string) {
	_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// newTestH1 is the h1Transport of a fetcher with the test defaults.
func newTestH1(t *testing.T, mutate func(*Config)) *h1Transport {
	t.Helper()
	tf := newTestFetcher(t, mutate)
	h1, ok := tf.dl.client.Transport.(*h1Transport)
	if !ok {
		t.Fatalf("transport %T, want *h1Transport", tf.dl.client.Transport)
	}
	t.Cleanup(h1.CloseIdleConnections)
	return h1
}

func get(t *testing.T, rt http.RoundTripper, ctx context.Context, u string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rt.RoundTrip(req)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return string(b)
}

// TestH1ReusesConnectionReadToTheEnd: a keep-alive connection whose body was read to its end
// serves the next request; one whose body was closed early, or that asked to be closed, or
// that had bytes after the body, is not reused.
func TestH1ReusesConnectionReadToTheEnd(t *testing.T) {
	o := newRawOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readRequest(br)
			if !ok {
				return
			}
			switch req.URL.Path {
			case "/close":
				_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\n%%PDF")
				return
			case "/extra":
				_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n%%PDFjunk")
			case "/big":
				pdfResponse(c, "%PDF"+strings.Repeat("x", 1<<20))
			default:
				pdfResponse(c, "%PDF-1.7 ok")
			}
		}
	})
	h1 := newTestH1(t, nil)
	ctx := t.Context()
	steps := []struct {
		path      string
		readAll   bool
		wantConns int64 // connections opened so far
	}{
		{"/a", true, 1},
		{"/b", true, 1},     // reused
		{"/big", false, 1},  // reused, then closed unread
		{"/c", true, 2},     // new
		{"/close", true, 2}, // reused, closed after
		{"/d", true, 3},
		{"/extra", true, 3}, // reused, junk after the body: closed
		{"/e", true, 4},
		{"/f", true, 4},
	}
	for _, s := range steps {
		resp, err := get(t, h1, ctx, o.url(s.path))
		if err != nil {
			t.Fatalf("%s: %v", s.path, err)
		}
		if s.readAll {
			if body := readAll(t, resp); !strings.HasPrefix(body, "%PDF") {
				t.Fatalf("%s: body %q", s.path, body)
			}
		} else {
			buf := make([]byte, 10)
			if _, err := io.ReadFull(resp.Body, buf); err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if _, err := resp.Body.Read(buf); !errors.Is(err, errClosedBody) {
				t.Fatalf("read after close: %v", err)
			}
		}
		if got := o.conns.Load(); got != s.wantConns {
			t.Fatalf("after %s: %d connections, want %d", s.path, got, s.wantConns)
		}
	}
}

// TestH1RetriesStaleIdleConnection: a reused connection the origin closes as the next request
// arrives (its idle timeout) fails that request before any response byte; it is sent again on
// a new connection, once.
func TestH1RetriesStaleIdleConnection(t *testing.T) {
	var served atomic.Int64
	o := newRawOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		if _, ok := readRequest(br); !ok {
			return
		}
		served.Add(1)
		pdfResponse(c, fmt.Sprintf("%%PDF conn %d", i))
		readRequest(br) // the next request on the kept-alive connection: dropped unanswered
	})
	h1 := newTestH1(t, nil)
	for i := range 3 {
		resp, err := get(t, h1, t.Context(), o.url("/p"))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if body, want := readAll(t, resp), fmt.Sprintf("%%PDF conn %d", i); body != want {
			t.Fatalf("request %d: body %q, want %q", i, body, want)
		}
	}
	if served.Load() != 3 || o.conns.Load() != 3 {
		t.Fatalf("served %d on %d connections, want 3 on 3", served.Load(), o.conns.Load())
	}

	// A new connection that fails is not retried.
	o2 := newRawOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) { readRequest(br) })
	if _, err := get(t, h1, t.Context(), o2.url("/p")); err == nil {
		t.Fatal("no error from a connection closed without an answer")
	}
	if got := o2.conns.Load(); got != 1 {
		t.Fatalf("%d connections for a failing new connection, want 1", got)
	}
}

// TestH1Bounds: response headers are bounded, the 1xx responses before them included, and a header that does not
// arrive within ResponseHeaderTimeout fails as a timeout.
func TestH1Bounds(t *testing.T) {
	o := newRawOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		req, ok := readRequest(br)
		if !ok {
			return
		}
		switch req.URL.Path {
		case "/endless-header":
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n")
			line := "X-Filler: " + strings.Repeat("a", 4000) + "\r\n"
			for range maxResponseHeaderBytes/len(line) + 2 {
				if _, err := io.WriteString(c, line); err != nil {
					return
				}
			}
		case "/early-hints":
			hint := "HTTP/1.1 103 Early Hints\r\nLink: </" + strings.Repeat("a", 1<<20) + ">\r\n\r\n"
			for range maxResponseHeaderBytes/len(hint) + 1 {
				if _, err := io.WriteString(c, hint); err != nil {
					return
				}
			}
			pdfResponse(c, "%PDF")
		case "/two-hints":
			for range 2 {
				_, _ = io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
			}
			pdfResponse(c, "%PDF two")
		case "/silent":
			_, _ = br.ReadByte() // until the client gives up
		}
	})
	h1 := newTestH1(t, nil)
	if _, err := get(t, h1, t.Context(), o.url("/endless-header")); !errors.Is(err, errHeaderLimit) {
		t.Fatalf("endless header: %v, want %v", err, errHeaderLimit)
	}
	if _, err := get(t, h1, t.Context(), o.url("/early-hints")); !errors.Is(err, errHeaderLimit) {
		t.Fatalf("1xx responses over the header limit together: %v, want %v", err, errHeaderLimit)
	}
	resp, err := get(t, h1, t.Context(), o.url("/two-hints"))
	if err != nil || resp.StatusCode != 200 || readAll(t, resp) != "%PDF two" {
		t.Fatalf("2 1xx responses: %v %v", resp, err)
	}
	quick := newTestH1(t, func(c *Config) { c.ResponseHeaderTimeout = 50 * time.Millisecond })
	_, err = get(t, quick, t.Context(), o.url("/silent"))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("silent origin: %v, want a timeout", err)
	}
	if f := classifyError(t.Context(), &url.Error{Op: "Get", URL: "u", Err: err}); f.reason.String() != "FAILURE_REASON_TIMEOUT" {
		t.Fatalf("silent origin classified %v", f)
	}
}

// TestH1Cancel: cancelling the request's context aborts a body being read (the connection is
// closed, not reused) and a request waiting for its header.
func TestH1Cancel(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	waiting := make(chan struct{}, 1)
	o := newRawOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readRequest(br)
			if !ok {
				return
			}
			if req.URL.Path == "/no-header" {
				waiting <- struct{}{}
			}
			if req.URL.Path == "/slow-body" {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n%PDF")
			}
			select { // every request gets at most its header
			case <-block:
				return
			case <-t.Context().Done():
				return
			}
		}
	})
	h1 := newTestH1(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	resp, err := get(t, h1, ctx, o.url("/slow-body"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := resp.Body.Read(buf); !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v", err)
	}
	_ = resp.Body.Close()

	ctx, cancel = context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := get(t, h1, ctx, o.url("/no-header"))
		errc <- err
	}()
	<-waiting
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled while waiting for the header: %v", err)
	}
	h1.mu.Lock()
	defer h1.mu.Unlock()
	if h1.nIdle != 0 {
		t.Fatalf("%d idle connections after two aborted exchanges, want 0", h1.nIdle)
	}
}

// TestH1IdleBounds: at most maxIdlePerHost idle connections per host and maxIdle in all are
// kept; an idle connection is closed after idleTimeout.
func TestH1IdleBounds(t *testing.T) {
	release := make(chan struct{})
	var arrived sync.WaitGroup
	closed := make(chan int, 16)
	serve := func(i int, c net.Conn, br *bufio.Reader) {
		defer func() { closed <- i }()
		for {
			if _, ok := readRequest(br); !ok {
				return
			}
			arrived.Done()
			<-release
			pdfResponse(c, "%PDF")
		}
	}
	a, b := newRawOrigin(t, serve), newRawOrigin(t, serve)
	h1 := newTestH1(t, nil)
	h1.maxIdlePerHost, h1.maxIdle = 2, 3
	// 3 concurrent requests to each origin: 6 connections, 3 of a's kept, 1 of b's left after.
	var wg sync.WaitGroup
	arrived.Add(6)
	for _, o := range []*rawOrigin{a, a, a, b, b, b} {
		wg.Go(func() {
			resp, err := get(t, h1, t.Context(), o.url("/p"))
			if err != nil {
				t.Error(err)
				return
			}
			readAll(t, resp)
		})
	}
	arrived.Wait()
	close(release)
	wg.Wait()
	h1.mu.Lock()
	na, nb, n := len(h1.idle[a.ln.Addr().String()]), len(h1.idle[b.ln.Addr().String()]), h1.nIdle
	h1.mu.Unlock()
	if n != 3 || na+nb != 3 || na > 2 || nb > 2 {
		t.Fatalf("idle: %d of a, %d of b, %d in all; want at most 2 per host, 3 in all", na, nb, n)
	}
	for range 3 { // the 3 connections beyond the bounds are closed
		<-closed
	}

	h1.mu.Lock()
	h1.idleTimeout = time.Millisecond
	for _, l := range h1.idle {
		for _, pc := range l {
			pc.idleTimer.Reset(time.Millisecond)
		}
	}
	h1.mu.Unlock()
	for range 3 { // each is taken off the idle list before it is closed
		<-closed
	}
	h1.mu.Lock()
	defer h1.mu.Unlock()
	if h1.nIdle != 0 || len(h1.idle) != 0 {
		t.Fatalf("%d idle connections (%d hosts) after the idle timeout", h1.nIdle, len(h1.idle))
	}
}

// TestH1Handles: only plain-http GETs without a body to an ASCII host go over h1's own
// connections; invalid header fields are refused as http.Transport refuses them.
func TestH1Handles(t *testing.T) {
	h1 := newTestH1(t, nil)
	for _, tc := range []struct {
		method, url string
		want        bool
	}{
		{"GET", "http://example.org/a.pdf", true},
		{"GET", "http://127.0.0.1:8080/a.pdf?x=1", true},
		{"GET", "http://[::1]:8080/a.pdf", true},
		{"GET", "https://example.org/a.pdf", false},
		{"POST", "http://example.org/a.pdf", false},
		{"GET", "http://bücher.example/a.pdf", false},
	} {
		req, err := http.NewRequest(tc.method, tc.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := h1.handles(req); got != tc.want {
			t.Errorf("%s %s: handled %v, want %v", tc.method, tc.url, got, tc.want)
		}
	}
	req, _ := http.NewRequest("GET", "http://127.0.0.1:1/a.pdf", nil)
	req.Header.Set("If-Range", "\"etag\"\r\nX-Injected: 1")
	if _, err := h1.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "invalid header field value") {
		t.Fatalf("header with a newline: %v", err)
	}
}

// TestH1IdleConnectionThatSpoke: an idle connection on which the origin sent something (a 408
// before closing it) or that it closed is not reused: the next request goes over a new
// connection and gets its own answer, not the stale one.
func TestH1IdleConnectionThatSpoke(t *testing.T) {
	speak, spoke := make(chan struct{}, 2), make(chan struct{}, 2)
	o := newRawOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		if _, ok := readRequest(br); !ok {
			return
		}
		pdfResponse(c, fmt.Sprintf("%%PDF conn %d", i))
		if i < 2 {
			<-speak // once the client read the response and made the connection idle
		}
		switch i {
		case 0:
			_, _ = io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			spoke <- struct{}{}
			_, _ = br.ReadByte() // holds the connection open until the client closes it
		case 1:
			_ = c.Close()
			spoke <- struct{}{}
		}
	})
	h1 := newTestH1(t, nil)
	for i := range 3 {
		resp, err := get(t, h1, t.Context(), o.url("/p"))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if body, want := readAll(t, resp), fmt.Sprintf("%%PDF conn %d", i); resp.StatusCode != 200 || body != want {
			t.Fatalf("request %d: %d %q, want 200 %q", i, resp.StatusCode, body, want)
		}
		if i < 2 {
			speak <- struct{}{}
			<-spoke
		}
	}
}

// TestWriteGETAsRequestWrite: writeGET writes the bytes http.Request.Write writes, for the
// requests it covers and for those it hands to Request.Write.
func TestWriteGETAsRequestWrite(t *testing.T) {
	base := newRequestHeader(http.Header{"Cookie": {"a=1", " b=2 "}, "X-Api-Key": {"k\t"}}, "paperfetch/test (+mailto:x@example.org)")
	cases := []struct {
		url string
		set func(*http.Request)
	}{
		{"http://example.org/a.pdf", nil},
		{"http://example.org", nil},
		{"http://127.0.0.1:8080/pdf/7?size=20480&x=%20y", nil},
		{"http://[::1]:8080/a%2Fb.pdf#frag", nil},
		{"http://[fe80::1%25eth0]:80/a.pdf", nil}, // a zone: Request.Write
		{"http://example.org/r.pdf", func(r *http.Request) {
			r.Header.Set("Range", "bytes=100-")
			r.Header.Set("If-Range", `"etag-1"`)
		}},
		{"http://example.org/c.pdf", func(r *http.Request) { r.Close = true }},
		{"http://example.org/n.pdf", func(r *http.Request) { r.Header.Del("User-Agent") }},
		{"http://example.org/e.pdf", func(r *http.Request) { r.Header.Set("User-Agent", "  ") }},
		{"http://example.org/h.pdf", func(r *http.Request) { r.Host = "other.example:81" }},
		{"http://example.org/m.pdf", func(r *http.Request) {
			for i := range maxFastHeaders {
				r.Header.Set(fmt.Sprintf("X-H%02d", i), "v")
			}
		}},
	}
	for _, tc := range cases {
		req, err := http.NewRequest(http.MethodGet, tc.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = base.Clone()
		if tc.set != nil {
			tc.set(req)
		}
		var want, got strings.Builder
		if err := req.Write(&want); err != nil {
			t.Fatal(err)
		}
		bw := bufio.NewWriter(&got)
		if err := writeGET(bw, req); err != nil {
			t.Fatal(err)
		}
		if err := bw.Flush(); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("%s:\ngot  %q\nwant %q", tc.url, got.String(), want.String())
		}
	}
}

// TestHostPort: the address dialled is net.JoinHostPort(host, port), port 80 by default.
func TestHostPort(t *testing.T) {
	for _, raw := range []string{"http://example.org/a", "http://example.org:8080/a", "http://[::1]/a", "http://[::1]:81/a", "http://127.0.0.1:36801/pdf/1", "http://[fe80::1%25eth0]:80/"} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		port := u.Port()
		if port == "" {
			port = "80"
		}
		if got, want := hostPort(u), net.JoinHostPort(u.Hostname(), port); got != want {
			t.Errorf("%s: %q, want %q", raw, got, want)
		}
	}
}
