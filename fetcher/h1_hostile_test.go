package fetcher

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// exchange is what a transport made of one request: the status and body, or the failure
// reason of the error (of the request or of the body) as the fetcher classifies it.
type exchange struct {
	status  int
	body    string
	failure string // "" when the exchange succeeded
}

func (e exchange) String() string {
	return fmt.Sprintf("status %d, body %q, failure %q", e.status, e.body, e.failure)
}

func doExchange(t *testing.T, rt http.RoundTripper, u string) exchange {
	t.Helper()
	resp, err := get(t, rt, t.Context(), u)
	if err != nil {
		return exchange{failure: classifyError(t.Context(), err).reason.String()}
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	e := exchange{status: resp.StatusCode, body: string(b)}
	if err != nil {
		e.failure = classifyError(t.Context(), err).reason.String()
	}
	return e
}

// hostileResponses are responses (exact bytes) a hostile or broken origin may send. delimited:
// the response ends where its framing says (not at the close of the connection), so it can be
// followed by a next response on a kept-alive connection.
var hostileResponses = []struct {
	name      string
	raw       string
	delimited bool
}{
	{"plain", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"cl-and-chunked", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n%PDF\r\n0\r\n\r\n", true},
	{"chunked-and-cl", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n4\r\n%PDF\r\n0\r\n\r\n", true},
	{"duplicate-cl", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"conflicting-cl", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n%PDF-", true},
	{"list-cl", "HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n%PDF", true},
	{"negative-cl", "HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n%PDF", true},
	{"plus-cl", "HTTP/1.1 200 OK\r\nContent-Length: +4\r\n\r\n%PDF", true},
	{"huge-cl", "HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775807\r\n\r\n%PDF", false},
	{"overflow-cl", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n%PDF", true},
	{"longer-than-cl", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n%PDFHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil", true},
	{"shorter-than-cl", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n%PDF", false},
	{"chunked-bad-size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n%PDF\r\n0\r\n\r\n", true},
	{"chunked-negative-size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-4\r\n%PDF\r\n0\r\n\r\n", true},
	{"chunked-overflow-size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n%PDF\r\n0\r\n\r\n", true},
	{"chunked-extension", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;name=\"v\"\r\n%PDF\r\n0;x\r\n\r\n", true},
	{"chunked-trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n4\r\n%PDF\r\n0\r\nX-Sum: 1\r\n\r\n", true},
	{"chunked-huge-trailer", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n%PDF\r\n0\r\nX-T: " + strings.Repeat("t", 300<<10) + "\r\n\r\n", true},
	{"chunked-no-crlf", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n%PDFxx0\r\n\r\n", true},
	{"chunked-unterminated", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n%PDF\r\n", false},
	{"chunked-then-more", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n%PDF\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil", true},
	{"te-gzip-chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\n%PDF\r\n0\r\n\r\n", true},
	{"te-identity", "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"no-length", "HTTP/1.1 200 OK\r\n\r\n%PDF until close", false},
	{"http10", "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"http10-keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"http10-no-length", "HTTP/1.0 200 OK\r\n\r\n%PDF until close", false},
	{"connection-close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"http2-status-line", "HTTP/2.0 200 OK\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"http09", "%PDF-1.7 raw bytes\r\n\r\n", false},
	{"garbage", "garbage\r\n\r\n", false},
	{"bad-status", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", true},
	{"short-status", "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", true},
	{"no-reason", "HTTP/1.1 200\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"bare-lf", "HTTP/1.1 200 OK\nContent-Length: 4\n\n%PDF", true},
	{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"space-before-colon", "HTTP/1.1 200 OK\r\nContent-Length : 4\r\n\r\n%PDF", false},
	{"no-colon", "HTTP/1.1 200 OK\r\nContent-Length 4\r\n\r\n%PDF", false},
	{"nul-in-header", "HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"header-only-then-close", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n", false},
	{"empty", "", false},
	{"204-with-body", "HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"304-with-body", "HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil", true},
	{"101", "HTTP/1.1 101 Switching Protocols\r\n\r\n", true},
	{"103-then-200", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"100-then-200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"1xx-flood", strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", 50) + "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"1xx-over-limit", strings.Repeat("HTTP/1.1 103 Early Hints\r\nX-F: "+strings.Repeat("f", 4<<20)+"\r\n\r\n", 3) + "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"header-at-limit", "HTTP/1.1 200 OK\r\nX-F: " + strings.Repeat("f", maxResponseHeaderBytes-4096) + "\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"header-over-limit", "HTTP/1.1 200 OK\r\nX-F: " + strings.Repeat("f", maxResponseHeaderBytes) + "\r\nContent-Length: 4\r\n\r\n%PDF", true},
	{"404", "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found", true},
	{"redirect-relative", "HTTP/1.1 302 Found\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n", true},
}

// TestH1AsHTTPTransport: for each hostile response, h1Transport gives what the http.Transport
// it wraps gives (status, body bytes, or the same kind of failure), whether the origin closes
// the connection after the response or keeps it open and answers the next request on it;
// the next request over h1 then gets its own answer, never bytes the origin sent after the
// response (http.Transport may give it those: it reuses the connection before it looks).
func TestH1AsHTTPTransport(t *testing.T) {
	byPath := map[string]string{}
	for _, c := range hostileResponses {
		byPath["/"+c.name] = c.raw
	}
	serve := func(keepOpen bool) func(int, net.Conn, *bufio.Reader) {
		return func(_ int, c net.Conn, br *bufio.Reader) {
			for {
				req, ok := readRequest(br)
				if !ok {
					return
				}
				raw, ok := byPath[req.URL.Path]
				if !ok {
					body := "fresh " + req.URL.Path
					raw = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				}
				if _, err := io.WriteString(c, raw); err != nil || (ok && !keepOpen) {
					return
				}
			}
		}
	}
	for _, keepOpen := range []bool{false, true} {
		o := newRawOrigin(t, serve(keepOpen))
		h1 := newTestH1(t, nil)
		for _, c := range hostileResponses {
			if keepOpen && !c.delimited {
				continue
			}
			name := fmt.Sprintf("%s/keep-open=%v", c.name, keepOpen)
			h1.CloseIdleConnections() // each case on new connections (see below for std's)
			got, want := doExchange(t, h1, o.url("/"+c.name)), doExchange(t, h1.std, o.url("/"+c.name))
			if got != want {
				t.Errorf("%s: h1 %v; http.Transport %v", name, got, want)
			}
			if !keepOpen {
				continue
			}
			// Only h1's: http.Transport puts the connection back before its reader sees
			// what followed the body, so the next request may get it ("evil").
			if next := doExchange(t, h1, o.url("/next")); next != (exchange{status: 200, body: "fresh /next"}) {
				t.Errorf("%s: the next request got %v", name, next)
			}
		}
	}
}

// TestH1RequestAsHTTPTransport: h1Transport sends the bytes http.Transport sends, for a query,
// an IPv6 literal host, userinfo in the URL (never sent), an explicit Host equal to the URL's,
// and refuses the header values http.Transport refuses.
func TestH1RequestAsHTTPTransport(t *testing.T) {
	got := make(chan string, 1)
	serve := func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			var head bytes.Buffer
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				head.WriteString(line)
				if line == "\r\n" {
					break
				}
			}
			got <- head.String()
			_, _ = io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
		}
	}
	o := newRawOrigin(t, serve)
	addrs := []string{o.ln.Addr().String()}
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil { // an IPv6 loopback: an IPv6 literal host too
		_ = ln.Close()
		addrs = append(addrs, newRawOriginOn(t, "[::1]:0", serve).ln.Addr().String())
	}
	h1 := newTestH1(t, nil)
	header := newRequestHeader(http.Header{"Cookie": {"a=1", " b=2 "}, "X-Api-Key": {"k\t"}}, "paperfetch/test (+mailto:x@example.org)")
	for _, addr := range addrs {
		for _, path := range []string{"/a.pdf", "/pdf/7?size=20480&x=%20y", "/a%2Fb.pdf?", "/"} {
			for _, user := range []string{"", "user:secret@"} {
				u := "http://" + user + addr + path
				var sent [2]string
				for i, rt := range []http.RoundTripper{h1, h1.std} {
					req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
					if err != nil {
						t.Fatal(err)
					}
					req.Header = header
					if user != "" {
						req.Host = addr
					}
					resp, err := rt.RoundTrip(req)
					if err != nil {
						t.Fatalf("%s: %T: %v", u, rt, err)
					}
					_ = resp.Body.Close()
					sent[i] = <-got
				}
				if sent[0] != sent[1] {
					t.Errorf("%s:\nh1   %q\nstd  %q", u, sent[0], sent[1])
				}
				if strings.Contains(sent[0], "secret") {
					t.Errorf("%s: userinfo sent: %q", u, sent[0])
				}
			}
		}
	}
	for _, bad := range []http.Header{
		{"X-A": {"a\r\nX-Injected: 1"}},
		{"X-A": {"a\nb"}},
		{"X-A": {"a\x00b"}},
		{"X A": {"v"}},
		{"X-A\r\nX-Injected": {"v"}},
		{"": {"v"}},
	} {
		for _, rt := range []http.RoundTripper{h1, h1.std} {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, o.url("/p"), nil)
			req.Header = bad
			if resp, err := rt.RoundTrip(req); err == nil {
				_ = resp.Body.Close()
				t.Errorf("%T: header %q sent", rt, bad)
			}
		}
	}
	select {
	case r := <-got:
		t.Errorf("a refused request reached the origin: %q", r)
	default:
	}
}

// cancelOnWriteConn cancels its request's context once the request is written and returns
// from Write only after h1Conn.abort set its deadline in the past; a later deadline that lifts
// the abort while the context is done is recorded, and a read after it fails at once instead
// of waiting for the origin.
type cancelOnWriteConn struct {
	net.Conn
	ctx     context.Context
	cancel  context.CancelFunc
	aborted chan struct{}
	once    sync.Once
	mu      sync.Mutex
	lifted  bool // a read deadline was moved out of the past after the abort
	readOK  bool // a read went to the connection with the abort lifted
}

func (c *cancelOnWriteConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.cancel()
	<-c.aborted
	return n, err
}

func (c *cancelOnWriteConn) SetDeadline(t time.Time) error {
	if !t.IsZero() && t.Before(time.Now()) {
		defer c.once.Do(func() { close(c.aborted) })
	}
	return c.Conn.SetDeadline(t)
}

func (c *cancelOnWriteConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	if c.ctx.Err() != nil && (t.IsZero() || t.After(time.Now())) {
		c.lifted = true
	}
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *cancelOnWriteConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	lifted := c.lifted
	c.readOK = c.readOK || lifted
	c.mu.Unlock()
	if lifted {
		return 0, errors.New("read with the cancellation's deadline lifted")
	}
	return c.Conn.Read(p)
}

// TestH1CancelAsRequestIsSent: a context cancelled just after the request was written (its
// abort ran before the response header deadline was set) fails the request at once: the
// header deadline does not lift the abort and leave the read waiting for the origin (up to
// ResponseHeaderTimeout).
func TestH1CancelAsRequestIsSent(t *testing.T) {
	o := newRawOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		readRequest(br)
		_, _ = br.ReadByte() // silent until the client closes
	})
	h1 := newTestH1(t, func(c *Config) { c.ResponseHeaderTimeout = time.Hour })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wc *cancelOnWriteConn
	dial := h1.dial
	h1.dial = func(dctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(dctx, network, addr)
		if err != nil {
			return nil, err
		}
		wc = &cancelOnWriteConn{Conn: c, ctx: ctx, cancel: cancel, aborted: make(chan struct{})}
		return wc, nil
	}
	if _, err := get(t, h1, ctx, o.url("/p")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled as the request was sent: %v, want %v", err, context.Canceled)
	}
	wc.mu.Lock()
	defer wc.mu.Unlock()
	if wc.readOK {
		t.Fatal("the response was read for with the cancellation undone by the header deadline")
	}
}

// TestH1ConcurrentNoCrossedResponses: many requests at once to one origin over few kept-alive
// connections (content-length and chunked bodies, some closing the connection, some bodies
// closed unread) each get their own response: every body names its request's path.
func TestH1ConcurrentNoCrossedResponses(t *testing.T) {
	o := newRawOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		bw := bufio.NewWriter(c)
		for n := 0; ; n++ {
			req, ok := readRequest(br)
			if !ok {
				return
			}
			body := "%PDF " + req.URL.RequestURI()
			closing := n%7 == 6
			conn := ""
			if closing {
				conn = "Connection: close\r\n"
			}
			if n%2 == 0 {
				_, _ = fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s", conn, len(body), body)
			} else {
				_, _ = fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\n%sTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", conn, len(body), body)
			}
			if bw.Flush() != nil || closing {
				return
			}
		}
	})
	h1 := newTestH1(t, nil)
	h1.maxIdlePerHost, h1.maxIdle = 3, 3
	var wg sync.WaitGroup
	for w := range 12 {
		wg.Go(func() {
			for i := range 30 {
				path := fmt.Sprintf("/w%d/p%d?q=%d", w, i, w*1000+i)
				resp, err := get(t, h1, t.Context(), o.url(path))
				if err != nil {
					t.Errorf("%s: %v", path, err)
					return
				}
				if i%5 == 4 { // closed after its first bytes
					buf := make([]byte, 2)
					_, _ = io.ReadFull(resp.Body, buf)
					_ = resp.Body.Close()
					continue
				}
				if body := readAll(t, resp); body != "%PDF "+path {
					t.Errorf("%s: body %q", path, body)
					return
				}
			}
		})
	}
	wg.Wait()
	h1.mu.Lock()
	defer h1.mu.Unlock()
	if h1.nIdle > 3 {
		t.Fatalf("%d idle connections, want at most 3", h1.nIdle)
	}
	t.Logf("%d requests over %d connections", 12*30, o.conns.Load())
}

// TestH1RedirectsGuarded: redirects followed by the fetcher's client over h1Transport go to
// another origin, to https (through http.Transport), and never to an address the SSRF guard
// refuses, in any spelling: the guard refuses them at dial.
func TestH1RedirectsGuarded(t *testing.T) {
	b := newRawOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readRequest(br)
			if !ok {
				return
			}
			pdfResponse(c, "%PDF from b "+req.URL.Path)
		}
	})
	_, bPort, _ := net.SplitHostPort(b.ln.Addr().String())
	a := newRawOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readRequest(br)
			if !ok {
				return
			}
			loc := strings.ReplaceAll(req.URL.Query().Get("to"), "PORT", bPort)
			_, _ = fmt.Fprintf(c, "HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n", loc)
		}
	})
	tf := newTestFetcher(t, func(c *Config) {
		c.AllowPrivateNetworks = false
		c.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	if _, ok := tf.dl.client.Transport.(*h1Transport); !ok {
		t.Fatalf("transport %T, want *h1Transport", tf.dl.client.Transport)
	}
	for _, tc := range []struct {
		to   string
		want string // body, or failure reason
	}{
		{"http://127.0.0.1:PORT/x.pdf", "%PDF from b /x.pdf"},
		{"https://127.0.0.1:PORT/x.pdf", "FAILURE_REASON_CONNECTION"},
		{"http://127.0.0.2:PORT/x.pdf", "FAILURE_REASON_FORBIDDEN_ADDRESS"},
		{"http://2130706434:PORT/x.pdf", "FAILURE_REASON_FORBIDDEN_ADDRESS"},
		{"http://0x7f.2:PORT/x.pdf", "FAILURE_REASON_FORBIDDEN_ADDRESS"},
		{"http://[::1]:PORT/x.pdf", "FAILURE_REASON_FORBIDDEN_ADDRESS"},
		{"http://[::ffff:127.0.0.2]:PORT/x.pdf", "FAILURE_REASON_FORBIDDEN_ADDRESS"},
		{"http://169.254.169.254/latest/meta-data/", "FAILURE_REASON_FORBIDDEN_ADDRESS"},
		{"http://10.0.0.1/x.pdf", "FAILURE_REASON_FORBIDDEN_ADDRESS"},
		{"http://u:p@127.0.0.1:PORT/x.pdf", "FAILURE_REASON_BAD_URL"},
		{"ftp://127.0.0.1:PORT/x.pdf", "FAILURE_REASON_BAD_URL"},
	} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, a.url("/r?to="+url.QueryEscape(tc.to)), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := tf.dl.client.Do(req)
		got := ""
		if err != nil {
			got = classifyError(t.Context(), err).reason.String()
		} else {
			got = readAll(t, resp)
		}
		if got != tc.want {
			t.Errorf("redirect to %s: %s (%v), want %s", tc.to, got, err, tc.want)
		}
	}
}

// TestH1SlowDripHeader: an origin sending its header a byte at a time, never finishing it
// within ResponseHeaderTimeout, fails the request as a timeout over h1 as over http.Transport
// (the deadline covers the whole header, not each read), even when the deadline cuts a header
// line the parser then calls malformed.
func TestH1SlowDripHeader(t *testing.T) {
	o := newRawOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		if _, ok := readRequest(br); !ok {
			return
		}
		// A field name cut by the deadline is a line without a colon to the parser.
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Drip"); err != nil {
			return
		}
		for range 20000 {
			if _, err := io.WriteString(c, "d"); err != nil {
				return // the client gave up
			}
			time.Sleep(5 * time.Millisecond) // the origin's pace, not synchronisation
		}
	})
	h1 := newTestH1(t, func(c *Config) { c.ResponseHeaderTimeout = 100 * time.Millisecond })
	for _, rt := range []http.RoundTripper{h1, h1.std} {
		if e := doExchange(t, rt, o.url("/p")); e.failure != "FAILURE_REASON_TIMEOUT" {
			t.Errorf("%T: slow-drip header gave %v, want a timeout", rt, e)
		}
	}
}

// TestH1CloseDuringRead: a response body closed by another goroutine while a Read waits for the
// origin (as http.Transport's bodies allow) ends that Read with an error, without a data race
// or a crash, and its connection is closed, not reused.
func TestH1CloseDuringRead(t *testing.T) {
	closed := make(chan int, 2)
	o := newRawOrigin(t, func(i int, c net.Conn, br *bufio.Reader) {
		for {
			req, ok := readRequest(br)
			if !ok {
				closed <- i
				return
			}
			if req.URL.Path == "/stuck" {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n%PDF")
				continue
			}
			pdfResponse(c, "%PDF ok")
		}
	})
	h1 := newTestH1(t, nil)
	for range 3 {
		resp, err := get(t, h1, t.Context(), o.url("/stuck"))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatal(err)
		}
		read := make(chan error, 1)
		go func() {
			_, err := resp.Body.Read(buf) // waits: the origin sends no more
			read <- err
		}()
		_ = resp.Body.Close()
		if err := <-read; err == nil {
			t.Fatal("a Read of a body closed meanwhile returned no error")
		}
		<-closed // the origin saw its connection closed
	}
	if body := readAll(t, mustGet(t, h1, o.url("/p"))); body != "%PDF ok" {
		t.Fatalf("next request: %q", body)
	}
	if n := o.conns.Load(); n != 4 {
		t.Fatalf("%d connections, want 4 (none of the closed ones reused)", n)
	}
}

func mustGet(t *testing.T, rt http.RoundTripper, u string) *http.Response {
	t.Helper()
	resp, err := get(t, rt, t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestH1NoIdleTimeout: an idleTimeout of 0 keeps idle connections (http.Transport's
// IdleConnTimeout 0 is no limit): the idle check does not close them at once.
func TestH1NoIdleTimeout(t *testing.T) {
	o := newRawOrigin(t, func(_ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, ok := readRequest(br); !ok {
				return
			}
			pdfResponse(c, "%PDF")
		}
	})
	h1 := newTestH1(t, nil)
	h1.idleTimeout = 0
	readAll(t, mustGet(t, h1, o.url("/a")))
	h1.mu.Lock()
	l := h1.idle[o.ln.Addr().String()]
	h1.mu.Unlock()
	if len(l) != 1 {
		t.Fatalf("%d idle connections, want 1", len(l))
	}
	l[0].closeIfIdle() // what an idle timer runs
	readAll(t, mustGet(t, h1, o.url("/b")))
	if n := o.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1 (the idle one kept)", n)
	}
}
