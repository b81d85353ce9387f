package originlib

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestContentReadAtMatchesWhole(t *testing.T) {
	c := NewContent(42, 100_003)
	whole := make([]byte, c.Size())
	if n, err := c.ReadAt(whole, 0); n != len(whole) || err != nil {
		t.Fatalf("ReadAt(whole) = %d, %v", n, err)
	}
	if !bytes.HasPrefix(whole, []byte(Header)) {
		t.Fatalf("content does not start with %q", Header)
	}
	for _, r := range [][2]int64{{0, 1}, {3, 17}, {9, 8}, {10, 7}, {8191, 4099}, {99_990, 13}} {
		got := make([]byte, r[1])
		if _, err := c.ReadAt(got, r[0]); err != nil {
			t.Fatalf("ReadAt(%d, %d): %v", r[0], r[1], err)
		}
		if !bytes.Equal(got, whole[r[0]:r[0]+r[1]]) {
			t.Errorf("ReadAt(off %d, len %d) differs from the whole content", r[0], r[1])
		}
	}
	sum := sha256.Sum256(whole)
	if got, want := c.SHA256(), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("SHA256() = %s, want %s", got, want)
	}
	if SHA256(42, 100_003) == SHA256(43, 100_003) {
		t.Error("papers 42 and 43 have the same content")
	}
}

// TestContentIsPinned fails if the generator changes: recorded checksums depend on it.
func TestContentIsPinned(t *testing.T) {
	if got, want := SHA256(1, 65536), "58574c6811efad7252533d8f9514b4e68e46e88907613669f894a92351fd59d6"; got != want {
		t.Errorf("SHA256(1, 65536) = %s, want %s (the generator changed)", got, want)
	}
}

// settled returns the stats once no request is in flight (a handler accounts its end just
// after the client has read the last byte).
func settled(t *testing.T, o *Origin) Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := o.WaitFor(ctx, func(s Stats) bool { return s.InFlight == 0 }); err != nil {
		t.Fatal(err)
	}
	return o.Stats()
}

func newServer(t *testing.T, f Faults) (*Origin, *httptest.Server) {
	t.Helper()
	o, err := New(Config{Faults: f})
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(o)
	t.Cleanup(s.Close)
	return o, s
}

func get(t *testing.T, c *http.Client, url string, hdr map[string]string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestServeFullAndRange(t *testing.T) {
	o, s := newServer(t, Faults{})
	c := s.Client()
	resp, body, err := get(t, c, s.URL+"/pdf/7?size=5000", map[string]string{"User-Agent": "t"})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET = %v, %v", resp, err)
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != SHA256(7, 5000) {
		t.Fatal("body does not match SHA256(7, 5000)")
	}
	etag := resp.Header.Get("ETag")
	resp, part, err := get(t, c, s.URL+"/pdf/7?size=5000", map[string]string{"Range": "bytes=1000-", "If-Range": etag})
	if err != nil || resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("ranged GET = %v, %v", resp, err)
	}
	if !bytes.Equal(part, body[1000:]) {
		t.Fatal("ranged body differs")
	}
	resp, _, err = get(t, c, s.URL+"/pdf/7?size=5000", map[string]string{"Range": "bytes=1000-", "If-Range": `"other"`})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET with a stale If-Range = %v, %v; want a full 200", resp, err)
	}
	st := settled(t, o)
	if st.Requests != 3 || st.CompleteBodies != 3 || st.DistinctComplete != 1 || st.InFlight != 0 {
		t.Errorf("stats = %+v", st)
	}
	if p := o.Paper(7); p.Requests != 3 || p.Completes != 3 || p.Size != 5000 {
		t.Errorf("paper 7 = %+v", p)
	}
}

func TestInjectedFailuresInOrder(t *testing.T) {
	o, s := newServer(t, Faults{RetryAfter: 3})
	c := s.Client()
	url := s.URL + "/pdf/3?size=20000&fail503=1&fail500=1&reset=1&truncate=1"
	resp, _, err := get(t, c, url, nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "3" {
		t.Fatalf("request 1 = %v, %v; want 503 with Retry-After 3", resp, err)
	}
	resp, _, err = get(t, c, url, nil)
	if err != nil || resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("request 2 = %v, %v; want 500", resp, err)
	}
	for i := 3; i <= 4; i++ {
		_, body, err := get(t, c, url, nil)
		if err == nil {
			t.Fatalf("request %d: no error, %d bytes; want a cut body", i, len(body))
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) && i == 4 {
			t.Errorf("request 4 (truncate): %v, want unexpected EOF", err)
		}
	}
	resp, body, err := get(t, c, url, nil)
	if err != nil || resp.StatusCode != http.StatusOK || int64(len(body)) != 20000 {
		t.Fatalf("request 5 = %v, %v; want the whole body", resp, err)
	}
	st := settled(t, o)
	if st.Resets != 1 || st.Truncated != 1 || st.CompleteBodies != 1 || st.Status["503"] != 1 || st.Status["500"] != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// TestPlain503 checks that retry_after=0 answers a plain 503, without Retry-After: a server
// error rather than a request to slow down (the fault suite's flaky host needs both kinds).
func TestPlain503(t *testing.T) {
	_, s := newServer(t, Faults{})
	url := s.URL + "/pdf/4?size=2000&fail503=2&retry_after=0"
	for i := 1; i <= 2; i++ {
		resp, _, err := get(t, s.Client(), url, nil)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("request %d = %v, %v; want 503", i, resp, err)
		}
		if v, ok := resp.Header["Retry-After"]; ok {
			t.Fatalf("request %d: Retry-After %q, want none", i, v)
		}
	}
	if resp, body, err := get(t, s.Client(), url, nil); err != nil || resp.StatusCode != http.StatusOK || len(body) != 2000 {
		t.Fatalf("request 3 = %v, %v; want the whole body", resp, err)
	}
}

func TestFlakyIsBoundedAndDeterministic(t *testing.T) {
	f := Faults{Flaky: 60, FlakyMax: 2}
	var first []failure
	for run := 0; run < 2; run++ {
		var seq []failure
		for n := uint64(0); n < 50; n++ {
			fails := 0
			for r := 0; r < 10; r++ {
				k, flaky := f.decide(n, r, fails)
				if flaky {
					fails++
				}
				seq = append(seq, k)
			}
			if fails > 2 {
				t.Fatalf("paper %d failed %d times, more than FlakyMax", n, fails)
			}
		}
		if run == 1 && fmt.Sprint(seq) != fmt.Sprint(first) {
			t.Fatal("flaky decisions are not deterministic")
		}
		first = seq
	}
}

func TestRateStallAndWaitFor(t *testing.T) {
	o, s := newServer(t, Faults{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, body, err := get(t, s.Client(), s.URL+"/pdf/1?size=4000&rate=40000&stall=50ms&stall_at=100", map[string]string{"User-Agent": "slow"})
		if err == nil && len(body) != 4000 {
			err = fmt.Errorf("got %d bytes", len(body))
		}
		done <- err
	}()
	if err := o.WaitFor(ctx, func(s Stats) bool { return s.InFlightByUA["slow"] == 1 }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := o.WaitFor(ctx, func(s Stats) bool { return s.InFlight == 0 && s.CompleteBodies == 1 }); err != nil {
		t.Fatal(err)
	}
}

func TestStatsEndpointAndBadRequests(t *testing.T) {
	o, s := newServer(t, Faults{})
	for _, path := range []string{"/pdf/1?size=x", "/pdf/1?size=3", "/pdf/1?latency=zz", "/pdf/1?flaky=101"} {
		resp, _, err := get(t, s.Client(), s.URL+path, nil)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s = %v, %v; want 400", path, resp, err)
		}
	}
	resp, body, err := get(t, s.Client(), s.URL+"/stats", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /stats = %v, %v", resp, err)
	}
	var st Stats
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	o.Reset()
	if got := o.Stats(); got.Requests != 0 {
		t.Errorf("after Reset, requests = %d", got.Requests)
	}
}

func TestTruncatedBodyCanBeResumed(t *testing.T) {
	o, s := newServer(t, Faults{})
	url := s.URL + "/pdf/9?size=10000&truncate=1"
	resp, part, err := get(t, s.Client(), url, nil)
	if err == nil {
		t.Fatal("the first response was not truncated")
	}
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Last-Modified") == "" {
		t.Fatalf("the truncated response has no validators: %v", resp.Header)
	}
	resp, rest, err := get(t, s.Client(), url, map[string]string{"Range": fmt.Sprintf("bytes=%d-", len(part)), "If-Range": etag})
	if err != nil || resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("resume = %v, %v; want 206", resp, err)
	}
	whole := append(part, rest...)
	sum := sha256.Sum256(whole)
	if hex.EncodeToString(sum[:]) != SHA256(9, 10000) {
		t.Fatalf("resumed body (%d bytes) differs from the content", len(whole))
	}
	if st := settled(t, o); st.CompleteBodies != 1 || st.DistinctComplete != 1 || st.Truncated != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestServesArxivStyleIDs(t *testing.T) {
	o, s := newServer(t, Faults{})
	c := s.Client()
	for _, id := range []string{"2301.00001", "2301.00001v2", "hep-th/9901001"} {
		resp, body, err := get(t, c, s.URL+"/pdf/"+id+"?size=4096", nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /pdf/%s = %v, %v", id, resp, err)
		}
		sum := sha256.Sum256(body)
		if hex.EncodeToString(sum[:]) != SHA256(PaperNumber(id), 4096) {
			t.Fatalf("/pdf/%s does not serve paper PaperNumber(%q)", id, id)
		}
	}
	if PaperNumber("2301.00001") == PaperNumber("2301.00001v2") || PaperNumber("42") != 42 {
		t.Fatal("PaperNumber: ids must map to distinct papers and numbers to themselves")
	}
	_ = settled(t, o)
}

// TestTimeline checks the request timeline on an injected clock: first and last request, last
// end, the in-flight integral and peak, and the idle gaps of a connection between requests.
func TestTimeline(t *testing.T) {
	base := time.Unix(1_000, 0)
	var (
		mu    sync.Mutex
		ticks []time.Duration // the clock's next readings, in order, after base
	)
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		if len(ticks) == 0 {
			t.Error("the clock was read more often than expected")
			return base
		}
		d := ticks[0]
		ticks = ticks[1:]
		return base.Add(d)
	}
	o, err := New(Config{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(ctx context.Context, remote, query string) int {
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/pdf/1?size=64"+query, nil)
		req.RemoteAddr = remote
		w := httptest.NewRecorder()
		o.ServeHTTP(w, req)
		return w.Code
	}
	// X (connection a) begins at 0 and waits (a latency it will not see through); Y (b) runs
	// from 10 to 20 meanwhile; X is cancelled at 30; Z (a again) runs from 70 to 75.
	ticks = []time.Duration{0, 10, 20, 30, 70, 75}
	ctx, cancel := context.WithCancel(t.Context())
	xDone := make(chan struct{})
	go func() {
		defer close(xDone)
		serve(ctx, "192.0.2.1:1", "&latency=1h")
	}()
	wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer wcancel()
	if err := o.WaitFor(wctx, func(s Stats) bool { return s.InFlight == 1 }); err != nil {
		t.Fatal(err)
	}
	if code := serve(t.Context(), "192.0.2.2:1", ""); code != http.StatusOK {
		t.Fatalf("Y: status %d", code)
	}
	cancel()
	<-xDone
	if code := serve(t.Context(), "192.0.2.1:1", ""); code != http.StatusOK {
		t.Fatalf("Z: status %d", code)
	}
	at := func(d time.Duration) int64 { return base.Add(d).UnixNano() }
	want := Timeline{
		FirstRequest: at(0), LastRequest: at(70), LastEnd: at(75),
		BusyNanos:   int64(30 + 10 + 5), // X 0–30, Y 10–20, Z 70–75
		MaxInFlight: 2, MaxInFlightAt: at(10),
		ConnGaps: 1, ConnGapNanos: 40, ConnGapMaxNanos: 40, // a: X ended at 30, Z began at 70
	}
	if got := o.Stats().Timeline; got != want {
		t.Errorf("timeline = %+v\nwant       %+v", got, want)
	}
	if got, want := want.AvgInFlight(), 45.0/75; got != want {
		t.Errorf("AvgInFlight = %v, want %v", got, want)
	}
	// A reset starts a new timeline.
	o.Reset()
	if got := o.Stats().Timeline; got != (Timeline{}) {
		t.Errorf("after Reset: timeline = %+v, want zero", got)
	}
	// A request that began before a reset and ends after it is not part of the new timeline:
	// W begins at 100, the origin is reset, W ends at 110 (before any new request), V runs
	// from 120 to 125.
	ticks = []time.Duration{100, 110, 120, 125}
	ctx, cancel = context.WithCancel(t.Context())
	wDone := make(chan struct{})
	go func() {
		defer close(wDone)
		serve(ctx, "192.0.2.3:1", "&latency=1h")
	}()
	if err := o.WaitFor(wctx, func(s Stats) bool { return s.InFlight == 1 }); err != nil {
		t.Fatal(err)
	}
	o.Reset()
	cancel()
	<-wDone
	if got := o.Stats().Timeline; got != (Timeline{}) {
		t.Errorf("a request of the previous timeline ended: timeline = %+v, want zero", got)
	}
	if code := serve(t.Context(), "192.0.2.4:1", ""); code != http.StatusOK {
		t.Fatalf("V: status %d", code)
	}
	want = Timeline{FirstRequest: at(120), LastRequest: at(120), LastEnd: at(125), BusyNanos: 5, MaxInFlight: 1, MaxInFlightAt: at(120)}
	if got := o.Stats().Timeline; got != want {
		t.Errorf("after a request of the previous timeline: timeline = %+v\nwant       %+v", got, want)
	}
}
