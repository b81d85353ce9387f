package dashboard_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/paperfetch/paperfetch/coordinator"
	"github.com/paperfetch/paperfetch/embedded"
	"github.com/paperfetch/paperfetch/internal/auth"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "s3cret-token"

// origin serves PDFs under /ok/, 404 under /missing/, and under /flaky/ 404 until fixed. Under
// /slow/ it holds each request until release; under /limited/ it answers 429 with a one-hour
// Retry-After.
type origin struct {
	*httptest.Server
	fixed     atomic.Bool
	gate      chan struct{}
	gateOnce  sync.Once
	slowCalls chan string
}

func newOrigin(t *testing.T) *origin {
	o := &origin{gate: make(chan struct{}), slowCalls: make(chan string, 100)}
	o.Server = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(func() {
		o.release()
		o.Close()
	})
	return o
}

func (o *origin) release() { o.gateOnce.Do(func() { close(o.gate) }) }

func pdf(path string) []byte {
	return []byte("%PDF-1.4\n% " + path + "\n" + strings.Repeat("0123456789abcdef\n", 256) + "%%EOF\n")
}

func (o *origin) serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/missing/"), strings.HasPrefix(p, "/flaky/") && !o.fixed.Load():
		http.NotFound(w, r)
		return
	case strings.HasPrefix(p, "/limited/"):
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	case strings.HasPrefix(p, "/slow/"):
		o.slowCalls <- p
		select {
		case <-o.gate:
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/pdf")
	_, _ = w.Write(pdf(p))
}

// stack is an embedded coordinator with two fetchers, its dashboard and /v1/ on a loopback
// HTTP port, requiring testToken. tune, when given, changes the options before the start.
type stack struct {
	url string
	sys *embedded.System
}

func startStack(t *testing.T, tune ...func(*embedded.Options)) *stack {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := embedded.DefaultOptions()
	o.Dir, o.Fetchers, o.Concurrency, o.HTTPListener = t.TempDir(), 2, 8, lis
	o.ClientTokens = auth.NewTokenSet(testToken)
	o.PerHostDelay, o.PerHostConcurrency, o.Retries = 0, 8, 0
	o.AllowPrivateNetworks = true
	o.TuneCoordinator = func(c *coordinator.Config) {
		c.NoSync, c.MaxRetryAfter, c.WatchInterval = true, 2*time.Hour, 50*time.Millisecond
	}
	for _, f := range tune {
		f(&o)
	}
	sys, err := embedded.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sys.Close(); err != nil {
			t.Error(err)
		}
	})
	return &stack{url: "http://" + lis.Addr().String(), sys: sys}
}

// response is an HTTP answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request with the test token (token "" sends none) and reads the answer.
func (s *stack) do(t *testing.T, method, path, token string, body string, hdr ...string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// call sends a request with the token, wants 200 and decodes the JSON answer into out.
func (s *stack) call(t *testing.T, method, path, body string, out proto.Message) {
	t.Helper()
	r := s.do(t, method, path, testToken, body)
	if r.status != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, r.status, r.body)
	}
	if out != nil {
		if err := protojson.Unmarshal(r.body, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, r.body, err)
		}
	}
}

// apiError is the gateway's JSON error body.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (r response) apiError(t *testing.T) apiError {
	t.Helper()
	var e apiError
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return e
}

// lines splits a newline-delimited JSON stream.
func lines(b []byte) [][]byte {
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if l := bytes.TrimSpace(sc.Bytes()); len(l) > 0 {
			out = append(out, append([]byte(nil), l...))
		}
	}
	return out
}
