package main_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// origin is a test web server serving distinct PDFs. Paths under /slow/ wait for the gate to
// open (or the client to go away) before answering; /missing* is 404.
type origin struct {
	*httptest.Server
	mu      sync.Mutex
	served  map[string]int // completed responses per path
	gate    chan struct{}
	once    sync.Once
	slowIn  chan string   // receives the path of every slow request that arrived
	waiting int           // slow requests now waiting at the gate (under mu)
	left    chan struct{} // receives when a slow request stops waiting
}

func newOrigin(t *testing.T) *origin {
	o := &origin{served: map[string]int{}, gate: make(chan struct{}), slowIn: make(chan string, 1000), left: make(chan struct{}, 1000)}
	o.Server = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(func() {
		o.open()
		o.Close()
	})
	return o
}

// body is the PDF served at path: distinct per path, 20 KiB.
func body(path string) []byte {
	var b strings.Builder
	b.WriteString("%PDF-1.4\n% " + path + "\n")
	seed := sha256.Sum256([]byte(path))
	for b.Len() < 20<<10 {
		seed = sha256.Sum256(seed[:])
		b.WriteString(hex.EncodeToString(seed[:]))
		b.WriteByte('\n')
	}
	b.WriteString("%%EOF\n")
	return []byte(b.String())
}

func sha(path string) string {
	s := sha256.Sum256(body(path))
	return hex.EncodeToString(s[:])
}

func (o *origin) serve(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/missing") {
		http.NotFound(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/slow/") {
		o.mu.Lock()
		o.waiting++
		o.mu.Unlock()
		o.slowIn <- r.URL.Path
		var gone bool
		select {
		case <-o.gate:
		case <-r.Context().Done():
			gone = true
		}
		o.mu.Lock()
		o.waiting--
		o.mu.Unlock()
		select {
		case o.left <- struct{}{}:
		default: // a full channel already wakes waitGateEmpty
		}
		if gone {
			return
		}
	}
	b := body(r.URL.Path)
	w.Header().Set("Content-Type", "application/pdf")
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	if _, err := w.Write(b); err != nil {
		return
	}
	o.mu.Lock()
	o.served[r.URL.Path]++
	o.mu.Unlock()
}

// waitGateEmpty returns once no slow request waits at the gate: after a client process exits,
// its slow requests leave when the server notices the closed connection. Without this, opening
// the gate right after the exit could still serve (and count) a request of the dead process.
func (o *origin) waitGateEmpty(t *testing.T) {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		o.mu.Lock()
		n := o.waiting
		o.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-o.left:
		case <-deadline:
			t.Fatalf("%d slow requests still wait at the gate a minute after their client left", n)
		}
	}
}

// open lets the slow requests through.
func (o *origin) open() { o.once.Do(func() { close(o.gate) }) }

// hits returns how many complete responses path got.
func (o *origin) hits(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.served[path]
}

// busyOrigin answers the first request of every path with 503 and Retry-After (seconds), then
// serves the PDF.
func busyOrigin(t *testing.T, retryAfter int) *httptest.Server {
	var mu sync.Mutex
	seen := map[string]bool{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		first := !seen[r.URL.Path]
		seen[r.URL.Path] = true
		mu.Unlock()
		if first {
			w.Header().Set("Retry-After", fmt.Sprint(retryAfter))
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		b := body(r.URL.Path)
		w.Header().Set("Content-Type", "application/pdf")
		_, _ = w.Write(b)
	}))
	t.Cleanup(s.Close)
	return s
}
