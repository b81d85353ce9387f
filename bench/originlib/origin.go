package originlib

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultSize is the size of a paper requested without ?size=.
const DefaultSize = 64 << 10

// Config configures an Origin.
type Config struct {
	// Faults applies to every request that does not override a field in its query.
	Faults Faults
	// DefaultSize is the size of a paper requested without ?size= (0: DefaultSize).
	DefaultSize int64
	// MaxSize bounds ?size= (0: 8 GiB).
	MaxSize int64
	// Logger receives one debug line per request and errors (nil: discard).
	Logger *slog.Logger
	// Now is the clock of Stats.Timeline (nil: time.Now). The injected faults (latency, rate,
	// stall) always wait on the real clock.
	Now func() time.Time
}

// maxTrackedConns bounds the idle connections whose last response's end is remembered for
// Timeline.ConnGaps.
const maxTrackedConns = 4096

// modTime is the Last-Modified of every paper (fixed, so If-Range dates are stable too).
var modTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Origin is the http.Handler of a deterministic PDF origin. It is safe for concurrent use.
type Origin struct {
	cfg Config
	mux *http.ServeMux

	mu      sync.Mutex
	st      Stats
	papers  map[uint64]*PaperStats
	flaky   map[uint64]int   // flaky failures per paper
	idle    map[string]int64 // per remote address: when its last response ended (Unix ns), while idle
	changed chan struct{}    // closed and replaced on every counter change
}

// New returns an Origin.
func New(cfg Config) (*Origin, error) {
	if err := cfg.Faults.Validate(); err != nil {
		return nil, fmt.Errorf("originlib: default faults: %w", err)
	}
	if cfg.DefaultSize <= 0 {
		cfg.DefaultSize = DefaultSize
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = 8 << 30
	}
	if cfg.Faults.FlakyMax == 0 {
		cfg.Faults.FlakyMax = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	o := &Origin{cfg: cfg, mux: http.NewServeMux(), changed: make(chan struct{})}
	o.resetLocked()
	o.mux.HandleFunc("GET /pdf/{id...}", o.servePDF)
	o.mux.HandleFunc("GET /stats", o.serveStats)
	o.mux.HandleFunc("POST /reset", o.serveReset)
	o.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return o, nil
}

// ServeHTTP implements http.Handler.
func (o *Origin) ServeHTTP(w http.ResponseWriter, r *http.Request) { o.mux.ServeHTTP(w, r) }

// Stats returns a snapshot of the counters.
func (o *Origin) Stats() Stats {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.st
	s.InFlightByUA = maps.Clone(o.st.InFlightByUA)
	s.Status = maps.Clone(o.st.Status)
	return s
}

// Paper returns what the origin saw of paper n.
func (o *Origin) Paper(n uint64) PaperStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p := o.papers[n]; p != nil {
		return *p
	}
	return PaperStats{}
}

// Papers returns what the origin saw of every paper requested so far.
func (o *Origin) Papers() map[uint64]PaperStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[uint64]PaperStats, len(o.papers))
	for n, p := range o.papers {
		out[n] = *p
	}
	return out
}

// Changed returns a channel that is closed at the next change of any counter. Wait on it
// to react to progress without polling:
//
//	for ch := o.Changed(); !cond(o.Stats()); ch = o.Changed() { <-ch }
//
// (take the channel before checking the condition, as above).
func (o *Origin) Changed() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changed
}

// WaitFor blocks until cond holds for the origin's stats, or ctx ends.
func (o *Origin) WaitFor(ctx context.Context, cond func(Stats) bool) error {
	for {
		ch := o.Changed()
		if cond(o.Stats()) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("origin: waiting for a condition: %w", context.Cause(ctx))
		}
	}
}

// Reset clears every counter except the requests in flight, and the per-paper request counts
// (so "first K requests" faults start over).
func (o *Origin) Reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.resetLocked()
	o.notifyLocked()
}

func (o *Origin) resetLocked() {
	inFlight, byUA := o.st.InFlight, o.st.InFlightByUA
	if byUA == nil {
		byUA = map[string]int64{}
	}
	o.st = Stats{InFlight: inFlight, InFlightByUA: byUA, Status: map[string]int64{}}
	o.papers = map[uint64]*PaperStats{}
	o.flaky = map[uint64]int{}
	o.idle = map[string]int64{}
}

func (o *Origin) notifyLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

func (o *Origin) serveStats(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(o.Stats()); err != nil {
		o.cfg.Logger.Debug("write stats", "err", err)
	}
}

func (o *Origin) serveReset(w http.ResponseWriter, _ *http.Request) {
	o.Reset()
	w.WriteHeader(http.StatusNoContent)
}

// begin accounts a new request for paper n, arrived on the connection from remote, and decides
// its failure; it returns when the request began (Unix ns), for end.
func (o *Origin) begin(n uint64, ua, remote string, f Faults) (failure, int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.cfg.Now().UnixNano()
	o.st.Requests++
	o.st.InFlight++
	o.st.InFlightByUA[ua]++
	tl := &o.st.Timeline
	if tl.FirstRequest == 0 {
		tl.FirstRequest = now
	}
	tl.LastRequest = now
	if o.st.InFlight > tl.MaxInFlight {
		tl.MaxInFlight, tl.MaxInFlightAt = o.st.InFlight, now
	}
	if ended, ok := o.idle[remote]; ok {
		delete(o.idle, remote)
		gap := max(now-ended, 0)
		tl.ConnGaps++
		tl.ConnGapNanos += gap
		tl.ConnGapMaxNanos = max(tl.ConnGapMaxNanos, gap)
	}
	p := o.papers[n]
	if p == nil {
		p = &PaperStats{}
		o.papers[n] = p
	}
	kind, flaky := f.decide(n, p.Requests, o.flaky[n])
	p.Requests++
	if flaky {
		o.flaky[n]++
	}
	if kind != failNone {
		p.Failures++
	}
	o.notifyLocked()
	return kind, now
}

// end accounts the end of a request for paper n that began at began (Unix ns, from begin) on
// the connection from remote.
func (o *Origin) end(n uint64, ua, remote string, began int64, rec *recorder, kind failure, size int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.cfg.Now().UnixNano()
	o.st.InFlight--
	tl := &o.st.Timeline
	if tl.FirstRequest != 0 && began >= tl.FirstRequest { // else it began before a reset
		tl.LastEnd = now
		tl.BusyNanos += max(now-began, 0)
	}
	if len(o.idle) >= maxTrackedConns {
		clear(o.idle)
	}
	o.idle[remote] = now
	if o.st.InFlightByUA[ua]--; o.st.InFlightByUA[ua] <= 0 {
		delete(o.st.InFlightByUA, ua)
	}
	if rec.status != 0 {
		o.st.Status[strconv.Itoa(rec.status)]++
	}
	o.st.BytesSent += rec.written
	switch kind {
	case failReset:
		o.st.Resets++
	case failTruncate:
		o.st.Truncated++
	}
	if kind == failNone && rec.complete(size) {
		o.st.CompleteBodies++
		p := o.papers[n]
		if p == nil { // Reset while the request ran.
			p = &PaperStats{}
			o.papers[n] = p
		}
		if p.Completes == 0 {
			o.st.DistinctComplete++
		}
		p.Completes++
		p.Size = size
	}
	o.notifyLocked()
}

func (o *Origin) servePDF(w http.ResponseWriter, r *http.Request) {
	n := PaperNumber(r.PathValue("id"))
	size := o.cfg.DefaultSize
	var err error
	if v := r.URL.Query().Get("size"); v != "" {
		size, err = strconv.ParseInt(v, 10, 64)
		if err != nil || size < int64(len(Header)) || size > o.cfg.MaxSize {
			http.Error(w, fmt.Sprintf("size must be an integer in [%d, %d]", len(Header), o.cfg.MaxSize), http.StatusBadRequest)
			return
		}
	}
	f, err := o.cfg.Faults.WithQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ua := r.UserAgent()
	rec := &recorder{ResponseWriter: w}
	kind, began := o.begin(n, ua, r.RemoteAddr, f)
	defer func() { o.end(n, ua, r.RemoteAddr, began, rec, kind, size) }()
	ctx := r.Context()
	if err := wait(ctx, f.Latency); err != nil {
		return
	}
	content := NewContent(n, size)
	h := rec.Header()
	switch kind {
	case fail503:
		if f.RetryAfter > 0 {
			h.Set("Retry-After", strconv.Itoa(f.RetryAfter))
		}
		http.Error(rec, "origin: injected 503", http.StatusServiceUnavailable)
		return
	case fail500:
		http.Error(rec, "origin: injected 500", http.StatusInternalServerError)
		return
	}
	// Validators, so that a client can resume a cut body with Range/If-Range.
	h.Set("Content-Type", "application/pdf")
	h.Set("ETag", fmt.Sprintf(`"pf-%d-%d"`, n, size))
	h.Set("Last-Modified", modTime.Format(http.TimeFormat))
	if kind == failReset || kind == failTruncate {
		o.cut(rec, r, content, kind)
		return
	}
	body := &bodyReader{ctx: ctx, content: content, faults: f, rc: http.NewResponseController(rec)}
	http.ServeContent(rec, r, "", modTime, body)
}

// cut declares the full length, sends half the body, then closes (kind failTruncate) or
// resets (failReset) the connection.
func (o *Origin) cut(rec *recorder, r *http.Request, content *Content, kind failure) {
	h := rec.Header()
	h.Set("Content-Length", strconv.FormatInt(content.Size(), 10))
	rec.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		if _, err := io.Copy(rec, io.NewSectionReader(content, 0, content.Size()/2)); err != nil {
			return
		}
	}
	rc := http.NewResponseController(rec)
	if err := rc.Flush(); err != nil {
		return
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		o.cfg.Logger.Error("hijack for an injected failure", "kind", kind.String(), "err", err)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok && kind == failReset {
		_ = tc.SetLinger(0) // Close sends RST.
	}
	_ = conn.Close()
}

// wait pauses for d unless ctx ends first (origin-side fault simulation, not synchronisation).
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recorder captures the status, the Content-Range and the body bytes written.
type recorder struct {
	http.ResponseWriter
	status       int
	written      int64
	contentRange string
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
		r.contentRange = r.Header().Get("Content-Range")
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	n, err := r.ResponseWriter.Write(p)
	r.written += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// complete reports whether the response delivered a file of size bytes through its last byte.
func (r *recorder) complete(size int64) bool {
	switch r.status {
	case http.StatusOK:
		return r.written == size
	case http.StatusPartialContent:
		var first, last, total int64
		cr := strings.TrimSpace(r.contentRange)
		if _, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &first, &last, &total); err != nil {
			return false
		}
		return total == size && last == size-1 && r.written == last-first+1
	}
	return false
}

// bodyReader is the io.ReadSeeker given to http.ServeContent: the content, throttled and
// stalled as the faults say.
type bodyReader struct {
	ctx     context.Context
	content *Content
	faults  Faults
	rc      *http.ResponseController
	pos     int64
	stalled bool
	start   time.Time
	sent    int64 // bytes read since start (for the rate)
}

func (b *bodyReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += b.pos
	case io.SeekEnd:
		offset += b.content.Size()
	default:
		return 0, errors.New("originlib: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("originlib: negative position")
	}
	b.pos = offset
	return offset, nil
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.pos >= b.content.Size() {
		return 0, io.EOF
	}
	f := b.faults
	if f.Stall > 0 && !b.stalled {
		at := f.StallAt
		if at == 0 {
			at = b.content.Size() / 2
		}
		switch {
		case b.pos == at:
			b.stalled = true
			_ = b.rc.Flush()
			if err := wait(b.ctx, f.Stall); err != nil {
				return 0, err
			}
		case b.pos < at && b.pos+int64(len(p)) > at:
			p = p[:at-b.pos]
		}
	}
	if f.Rate > 0 {
		if b.start.IsZero() {
			b.start = time.Now()
		}
		chunk := max(f.Rate/20, 1)
		if int64(len(p)) > chunk {
			p = p[:chunk]
		}
		due := b.start.Add(time.Duration(float64(b.sent) / float64(f.Rate) * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			_ = b.rc.Flush()
			if err := wait(b.ctx, d); err != nil {
				return 0, err
			}
		}
	}
	n, err := b.content.ReadAt(p, b.pos)
	b.pos += int64(n)
	b.sent += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// PaperNumber maps the id in a /pdf/ID path to the paper number that seeds its content: a
// decimal number is itself; any other id (an arXiv id such as 2301.00001 or hep-th/9901001) is
// its 64-bit FNV-1a hash with the top bit set, so it never collides with a small number.
func PaperNumber(id string) uint64 {
	if n, err := strconv.ParseUint(id, 10, 64); err == nil {
		return n
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return h.Sum64() | 1<<63
}
