package fetcher

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"
)

// maxResponseHeaderBytes bounds a response's status line and header and those of the 1xx
// responses before it, all together (net/http's default for
// http.Transport.MaxResponseHeaderBytes, counted as http.Transport counts it).
const maxResponseHeaderBytes = 10 << 20

// h1Transport is the origin-facing RoundTripper. Plain-http GET requests without a body to a
// host spelt in ASCII (every download and resolution request to an http:// origin, when no
// forward proxy is set) go over its own HTTP/1.1 keep-alive connections, written and read by
// the calling goroutine; every other request (https, a forward proxy, an IDNA host) goes to
// std, the http.Transport configured the same way.
//
// Why: net/http's HTTP/1 transport hands each request to a writer goroutine and each response
// from a reader goroutine, four goroutine switches per request; for 20 KiB papers that was
// 62–72 µs of CPU per request against 38–44 µs written and read in the caller (10,000 GETs, 16
// at a time; bench/ANALYSIS.md, "The fetcher's HTTP exchange in the caller's goroutine").
//
// What it keeps from http.Transport: the dialer (SSRF guard, connect timeout, TCP keep-alive),
// ResponseHeaderTimeout, response headers (1xx responses included) bounded by
// maxResponseHeaderBytes, invalid request header fields refused, the request written by
// http.Request.Write and the response parsed by http.ReadResponse (the parser http.Transport
// uses), keep-alive connections bounded by maxIdle (in all) and maxIdlePerHost, each closed
// after idleTimeout unused (0: never), and a request that fails on a reused connection before any byte
// of a response arrived retried once on a new connection (the origin closed the idle
// connection). A connection is reused only when its response body was read to the end, the
// response did not ask to close it, and nothing else arrived after it. Cancelling the
// request's context aborts the exchange at once, body included. It never asks for
// compression (neither does std: DisableCompression).
type h1Transport struct {
	std                   *http.Transport
	dial                  func(ctx context.Context, network, addr string) (net.Conn, error)
	responseHeaderTimeout time.Duration
	maxIdle               int
	maxIdlePerHost        int
	idleTimeout           time.Duration
	readBufferSize        int
	writeBufferSize       int

	mu sync.Mutex
	// idle holds the idle connections by "host:port", least recently used first; at most
	// maxIdlePerHost per host and maxIdle in all (nIdle).
	idle  map[string][]*h1Conn
	nIdle int
}

// newH1Transport returns the transport for std's settings (its DialContext must be set):
// std.MaxIdleConns (0: no limit but maxIdlePerHost's), std.MaxIdleConnsPerHost (0:
// http.DefaultMaxIdleConnsPerHost).
func newH1Transport(std *http.Transport) *h1Transport {
	perHost := std.MaxIdleConnsPerHost
	if perHost <= 0 {
		perHost = http.DefaultMaxIdleConnsPerHost
	}
	return &h1Transport{
		std:                   std,
		dial:                  std.DialContext,
		responseHeaderTimeout: std.ResponseHeaderTimeout,
		maxIdle:               std.MaxIdleConns,
		maxIdlePerHost:        perHost,
		idleTimeout:           std.IdleConnTimeout,
		readBufferSize:        std.ReadBufferSize,
		writeBufferSize:       std.WriteBufferSize,
		idle:                  map[string][]*h1Conn{},
	}
}

// h1Conn is one HTTP/1.1 connection of an h1Transport.
type h1Conn struct {
	t    *h1Transport
	key  string // "host:port"
	conn net.Conn
	// raw is conn's syscall.RawConn and peekFn the method value pc.peek, made once for quiet
	// (noRaw: conn has none); quietRes is peek's answer.
	raw      syscall.RawConn
	peekFn   func(fd uintptr) bool
	noRaw    bool
	quietRes bool
	lr       limitedConn // what br reads from: conn, bounded while a header is read
	br       *bufio.Reader
	bw       *bufio.Writer
	// idleSince is when it was last put in the idle list (guarded by t.mu, as idle);
	// idleTimer closes it idleTimeout after that unless it was taken meanwhile.
	idle      bool
	idleSince time.Time
	idleTimer *time.Timer
}

// limitedConn reads from conn, failing once n bytes were read (while n >= 0; -1: no limit).
// While it is limited it keeps conn's read error in err: the header parser may report a line
// cut by that error (a deadline) as a malformed header instead.
type limitedConn struct {
	conn net.Conn
	n    int64
	err  error
}

// errHeaderLimit is the read error of a response header longer than maxResponseHeaderBytes.
var errHeaderLimit = fmt.Errorf("server response headers exceeded %d bytes; aborted", maxResponseHeaderBytes)

func (l *limitedConn) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.conn.Read(p)
	}
	if l.n == 0 {
		return 0, errHeaderLimit
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.conn.Read(p)
	l.n -= int64(n)
	if err != nil {
		l.err = err
	}
	return n, err
}

// headerTimeoutError is a response header that did not arrive within ResponseHeaderTimeout.
type headerTimeoutError struct{}

func (headerTimeoutError) Error() string   { return "timeout awaiting response headers" }
func (headerTimeoutError) Timeout() bool   { return true }
func (headerTimeoutError) Temporary() bool { return true }

// errClosedBody is a read of a response body after Close (as net/http's).
var errClosedBody = errors.New("http: read on closed response body")

// RoundTrip implements http.RoundTripper.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.handles(req) {
		return t.std.RoundTrip(req)
	}
	if err := validHeader(req.Header); err != nil {
		return nil, err
	}
	ctx := req.Context()
	key := hostPort(req.URL)
	for fresh := false; ; fresh = true {
		pc, reused, err := t.conn(ctx, key, fresh)
		if err != nil {
			return nil, err
		}
		resp, stale, err := pc.roundTrip(ctx, req)
		if err == nil {
			return resp, nil
		}
		pc.close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !stale || !reused {
			return nil, err
		}
		// The origin closed the idle connection: the request was not answered; a GET
		// without a body is sent again, once, on a new connection.
	}
}

// handles reports whether req goes over t's own connections.
func (t *h1Transport) handles(req *http.Request) bool {
	u := req.URL
	return u != nil && u.Scheme == "http" && req.Method == http.MethodGet && (req.Body == nil || req.Body == http.NoBody) &&
		u.Host != "" && isASCII(u.Host) && (req.Host == "" || req.Host == u.Host) && t.dial != nil
}

// isASCII reports whether s is printable ASCII (a host needing IDNA mapping is not).
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// hostPort is what an http URL dials: its host with the port, 80 by default (u.Host itself
// when it names a port: net.JoinHostPort(u.Hostname(), u.Port()) gives the same string).
func hostPort(u *url.URL) string {
	if port := u.Port(); port != "" && strings.HasSuffix(u.Host, ":"+port) {
		return u.Host
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// validHeader refuses the request header fields http.Transport refuses.
func validHeader(h http.Header) error {
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("net/http: invalid header field name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("net/http: invalid header field value for %q", k)
			}
		}
	}
	return nil
}

// conn returns an idle connection to key (unless fresh), else a new one.
func (t *h1Transport) conn(ctx context.Context, key string, fresh bool) (*h1Conn, bool, error) {
	for !fresh {
		pc := t.takeIdle(key)
		if pc == nil {
			break
		}
		if pc.quiet() {
			return pc, true, nil
		}
		pc.close()
	}
	c, err := t.dial(ctx, "tcp", key)
	if err != nil {
		return nil, false, err
	}
	pc := &h1Conn{t: t, key: key, conn: c}
	pc.initQuiet()
	pc.lr.conn, pc.lr.n = c, -1
	pc.br = bufio.NewReaderSize(&pc.lr, max(t.readBufferSize, 4096))
	pc.bw = bufio.NewWriterSize(c, max(t.writeBufferSize, 4096))
	return pc, false, nil
}

// takeIdle takes the most recently used idle connection to key, or returns nil.
func (t *h1Transport) takeIdle(key string) *h1Conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.idle[key]
	if len(l) == 0 {
		return nil
	}
	pc := l[len(l)-1]
	l[len(l)-1] = nil
	t.setIdleLocked(key, l[:len(l)-1])
	t.nIdle--
	pc.idle = false
	return pc
}

// setIdleLocked stores key's idle list (deleting an empty one, so that the map holds only
// hosts with idle connections).
func (t *h1Transport) setIdleLocked(key string, l []*h1Conn) {
	if len(l) == 0 {
		delete(t.idle, key)
		return
	}
	t.idle[key] = l
}

// put makes pc idle, or closes it when key has maxIdlePerHost idle connections already; when
// maxIdle are idle in all, the least recently used one of the host with the most is closed.
func (t *h1Transport) put(pc *h1Conn) {
	t.mu.Lock()
	l := t.idle[pc.key]
	if len(l) >= t.maxIdlePerHost {
		t.mu.Unlock()
		pc.close()
		return
	}
	var evict *h1Conn
	if t.maxIdle > 0 && t.nIdle >= t.maxIdle {
		evict = t.evictLocked()
		l = t.idle[pc.key]
	}
	pc.idle, pc.idleSince = true, time.Now()
	t.idle[pc.key] = append(l, pc)
	t.nIdle++
	switch {
	case t.idleTimeout <= 0: // no limit (as http.Transport's IdleConnTimeout)
	case pc.idleTimer == nil:
		pc.idleTimer = time.AfterFunc(t.idleTimeout, pc.closeIfIdle)
	default:
		pc.idleTimer.Reset(t.idleTimeout)
	}
	t.mu.Unlock()
	if evict != nil {
		evict.close()
	}
}

// evictLocked removes the oldest idle connection of the host with the most idle ones.
func (t *h1Transport) evictLocked() *h1Conn {
	var key string
	for k, l := range t.idle {
		if len(l) > len(t.idle[key]) {
			key = k
		}
	}
	l := t.idle[key]
	if len(l) == 0 {
		return nil
	}
	pc := l[0]
	copy(l, l[1:])
	l[len(l)-1] = nil
	t.setIdleLocked(key, l[:len(l)-1])
	t.nIdle--
	pc.idle = false
	return pc
}

// closeIfIdle closes pc when it is still idle and was idle for idleTimeout (its idle timer: a
// timer that fired while pc was taken, or put back since, does nothing).
func (pc *h1Conn) closeIfIdle() {
	t := pc.t
	t.mu.Lock()
	if !pc.idle || t.idleTimeout <= 0 || time.Since(pc.idleSince) < t.idleTimeout {
		t.mu.Unlock()
		return
	}
	l := t.idle[pc.key]
	for i, o := range l {
		if o == pc {
			copy(l[i:], l[i+1:])
			l[len(l)-1] = nil
			t.setIdleLocked(pc.key, l[:len(l)-1])
			t.nIdle--
			break
		}
	}
	pc.idle = false
	t.mu.Unlock()
	pc.close()
}

// CloseIdleConnections closes the idle connections of t and of std.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	var all []*h1Conn
	for _, l := range t.idle {
		for _, pc := range l {
			pc.idle = false
			all = append(all, pc)
		}
	}
	clear(t.idle)
	t.nIdle = 0
	t.mu.Unlock()
	for _, pc := range all {
		pc.close()
	}
	t.std.CloseIdleConnections()
}

func (pc *h1Conn) close() {
	if pc.idleTimer != nil {
		pc.idleTimer.Stop()
	}
	_ = pc.conn.Close()
}

// abort makes every pending and later read and write of pc fail at once.
func (pc *h1Conn) abort() { _ = pc.conn.SetDeadline(time.Unix(1, 0)) }

// roundTrip sends req over pc and reads the response header. stale: it failed before any
// byte of a response arrived (the request may be sent again when pc was reused).
func (pc *h1Conn) roundTrip(ctx context.Context, req *http.Request) (resp *http.Response, stale bool, err error) {
	stop := context.AfterFunc(ctx, pc.abort)
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if err := writeGET(pc.bw, req); err != nil {
		return nil, true, err
	}
	if err := pc.bw.Flush(); err != nil {
		return nil, true, err
	}
	if d := pc.t.responseHeaderTimeout; d > 0 {
		_ = pc.conn.SetReadDeadline(time.Now().Add(d))
		if ctx.Err() != nil { // cancelled as the request was sent: pc.abort may be undone
			return nil, false, ctx.Err()
		}
	}
	pc.lr.n, pc.lr.err = maxResponseHeaderBytes, nil
	if _, err := pc.br.Peek(1); err != nil {
		// Closed by the origin (EOF, reset) before answering: the request was not served.
		return nil, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), pc.readError(err)
	}
	for { // the 1xx responses before the final one count against the same limit (as net/http)
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			return nil, false, pc.readError(err)
		}
		if resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	pc.lr.n = -1
	if pc.t.responseHeaderTimeout > 0 {
		_ = pc.conn.SetReadDeadline(time.Time{})
		if ctx.Err() != nil { // cancelled as the deadline was cleared: pc.abort may be undone
			return nil, false, ctx.Err()
		}
	}
	reuse := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
	b := &h1Body{pc: pc, ctx: ctx, stop: stop, reuse: reuse, body: resp.Body}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, false, nil
	}
	resp.Body = b
	return resp, false, nil
}

// readError maps an error reading a response header: a read deadline (whatever the parser
// made of the line it cut) is ResponseHeaderTimeout's, a read past the limit errHeaderLimit.
func (pc *h1Conn) readError(err error) error {
	if pc.lr.n == 0 {
		return errHeaderLimit
	}
	var ne net.Error
	if pc.t.responseHeaderTimeout > 0 && (errors.As(err, &ne) && ne.Timeout() || errors.As(pc.lr.err, &ne) && ne.Timeout()) {
		return headerTimeoutError{}
	}
	return err
}

// h1Body is a response body read from an h1Conn: at its end the connection goes back to the
// idle list (when reusable), and a Close before the end closes the connection (draining an
// unwanted body could take long). A Close while a Read waits (as http.Transport's bodies
// allow) closes the connection under it: that Read returns errClosedBody.
type h1Body struct {
	ctx   context.Context
	stop  func() bool // unregisters the cancellation of the exchange
	body  io.ReadCloser
	reuse bool

	mu      sync.Mutex // guards the fields below: Close may come from another goroutine
	pc      *h1Conn
	done    bool
	eof     bool
	reading bool // a Read is in body.Read
	closed  bool // Close came during that Read
}

func (b *h1Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		if b.eof {
			return 0, io.EOF
		}
		return 0, errClosedBody
	}
	b.reading = true
	b.mu.Unlock()
	n, err := b.body.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reading = false
	switch {
	case b.closed:
		b.finish(false)
		err = errClosedBody
	case err == io.EOF:
		b.finish(true)
	case err != nil:
		b.finish(false)
		if b.ctx.Err() != nil {
			err = b.ctx.Err()
		}
	}
	return n, err
}

func (b *h1Body) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.done:
	case b.reading: // the Read returns at once and finishes
		b.closed = true
		b.pc.close()
	default:
		b.finish(false)
	}
	return nil
}

// finish ends the exchange: the connection is put back when the body was read to its end (and
// nothing followed it), else closed.
func (b *h1Body) finish(eof bool) {
	b.done, b.eof = true, eof
	pc := b.pc
	b.pc = nil
	if b.stop() && eof && b.reuse && pc.br.Buffered() == 0 {
		pc.t.put(pc)
		return
	}
	pc.close()
}

// maxFastHeaders bounds the request header fields writeGET sorts on the stack; a request with
// more is written by http.Request.Write.
const maxFastHeaders = 16

// writeGET writes req, a GET without a body whose header validHeader accepted, to bw exactly as
// http.Request.Write does (TestWriteGETAsRequestWrite): request line, Host, User-Agent, the
// other fields sorted by name, each value trimmed of spaces and tabs; without Request.Write's
// three fmt.Fprintf, transfer writer and pooled sorter (1.2% of the CPU samples of a get of
// 10,000 × 20 KiB). A request it does not cover (no User-Agent, Connection: close, a Host that
// is not plain ASCII or has a zone, a URI with a control byte, more than maxFastHeaders fields)
// is written by Request.Write.
func writeGET(bw *bufio.Writer, req *http.Request) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	ua, hasUA := req.Header["User-Agent"]
	ruri := req.URL.RequestURI()
	if req.Close || !hasUA || len(ua) == 0 || len(req.Header) > maxFastHeaders || !isASCII(host) ||
		strings.IndexByte(host, '%') >= 0 || !httpguts.ValidHostHeader(host) || hasCTL(ruri) || req.TransferEncoding != nil {
		return req.Write(bw)
	}
	var keys [maxFastHeaders]string
	n := 0
	for k := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		keys[n] = k
		n++
	}
	slices.Sort(keys[:n])
	_, _ = bw.WriteString(http.MethodGet + " ")
	_, _ = bw.WriteString(ruri)
	_, _ = bw.WriteString(" HTTP/1.1\r\nHost: ")
	_, _ = bw.WriteString(host)
	if ua[0] != "" {
		_, _ = bw.WriteString("\r\nUser-Agent: ")
		_, _ = bw.WriteString(textproto.TrimString(ua[0]))
	}
	_, _ = bw.WriteString("\r\n")
	for _, k := range keys[:n] {
		for _, v := range req.Header[k] {
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(textproto.TrimString(v))
			_, _ = bw.WriteString("\r\n")
		}
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// hasCTL reports whether s holds an ASCII control byte (Request.Write refuses such a URI).
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}
