package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/clock"
)

// lines is the display for logs and programs: a progress line every interval, plus a line per
// failed paper (plain) or per finished paper (JSON).
type lines struct {
	tr       *Tracker
	json     bool
	clk      clock.Clock
	interval time.Duration

	mu  sync.Mutex // serialises writes
	out io.Writer

	stop chan struct{}
	done chan struct{}
	once sync.Once

	hostSaid map[string]string // host -> hostKey of the last host line printed (plain)
	pathOf   func(string) string
}

func newLines(opts Options, tr *Tracker, asJSON bool) *lines {
	l := &lines{tr: tr, json: asJSON, clk: opts.Clock, interval: opts.Interval, out: opts.Out, stop: make(chan struct{}), done: make(chan struct{}), pathOf: opts.PathOf}
	if asJSON {
		l.out = opts.JSONOut
	}
	go l.loop()
	return l
}

// loop prints a progress line every interval until Close.
func (l *lines) loop() {
	defer close(l.done)
	t := l.clk.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C():
			l.printProgress()
		}
	}
}

// Update implements Display.
func (l *lines) Update(resp *pb.WatchBatchResponse) {
	l.tr.Observe(resp)
	for _, u := range resp.GetPaperUpdates() {
		switch {
		case l.json && isTerminal(u.GetState()):
			rec := paperRecord{Type: "paper", ID: u.GetPaperId(), State: StateName(u.GetState()), Attempts: u.GetAttempts(),
				Size: u.GetSize(), Cached: u.GetCached(), Reason: ReasonName(u.GetLastFailureReason()), Error: u.GetLastError(),
				URL: u.GetUrl(), SHA256: u.GetSha256()}
			if u.GetState() == pb.PaperState_PAPER_STATE_SUCCEEDED && l.pathOf != nil {
				rec.Path = l.pathOf(u.GetPaperId())
			}
			l.writeJSON(rec)
		case !l.json && u.GetState() == pb.PaperState_PAPER_STATE_FAILED:
			l.writeLine(fmt.Sprintf("failed paper=%s reason=%s attempts=%d error=%s", quoteIfNeeded(u.GetPaperId()),
				cmpOr(ReasonName(u.GetLastFailureReason()), "unknown"), u.GetAttempts(), strconv.Quote(u.GetLastError())))
		}
	}
}

// Message implements Display.
func (l *lines) Message(msg string) {
	if l.json {
		l.writeJSON(messageRecord{Type: "message", Message: msg})
		return
	}
	l.writeLine(msg)
}

// Snapshot implements Display.
func (l *lines) Snapshot() Snapshot { return l.tr.Snapshot() }

// Close implements Display.
func (l *lines) Close() {
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		l.printProgress()
	})
}

func (l *lines) printProgress() {
	s := l.tr.Snapshot()
	if l.json {
		l.writeJSON(progressRecord{Type: "progress", BatchID: s.BatchID, State: s.State, Total: s.Total, Done: s.Done, Succeeded: s.Succeeded,
			Failed: s.Failed, Cancelled: s.Cancelled, Cached: s.Cached, Active: s.Downloading, Queued: s.Queued + s.RetryWait,
			Bytes: s.Bytes, Rate: int64(s.Rate), ElapsedSeconds: round1(s.Elapsed.Seconds()), ETASeconds: etaSeconds(s.ETA), Hosts: hostRecords(s)})
		return
	}
	l.writeLine(PlainLine(s))
	l.printHosts(s)
}

// printHosts prints a host line for every host whose condition changed since the last one
// printed (a host at full speed is printed only when it recovers).
func (l *lines) printHosts(s Snapshot) {
	if l.hostSaid == nil {
		l.hostSaid = map[string]string{}
	}
	seen := make(map[string]bool, len(s.Hosts))
	for _, h := range s.Hosts {
		seen[h.Name] = true
		key := hostKey(h, s.Now)
		prev, said := l.hostSaid[h.Name]
		if prev == key || (!said && h.Condition(s.Now) == HostOK) {
			continue
		}
		l.hostSaid[h.Name] = key
		l.writeLine(PlainHostLine(h, s.Now))
	}
	for name := range l.hostSaid {
		if !seen[name] {
			delete(l.hostSaid, name)
		}
	}
}

// hostRecord is a host that is not at full speed, in a {"type":"progress"} JSON line.
type hostRecord struct {
	Host        string `json:"host"`
	State       string `json:"state"`
	Remaining   int64  `json:"remaining"`
	Limit       int    `json:"concurrency_limit,omitempty"`
	MaxLimit    int    `json:"max_concurrency,omitempty"`
	DelayMS     int64  `json:"delay_ms,omitempty"`
	PausedUntil string `json:"paused_until,omitempty"`
	PauseCause  string `json:"pause_cause,omitempty"`
}

// hostRecords lists the slow hosts of s for JSON.
func hostRecords(s Snapshot) []hostRecord {
	var out []hostRecord
	for _, h := range s.SlowHosts() {
		r := hostRecord{Host: h.Name, Remaining: h.Remaining, Limit: h.Limit, MaxLimit: h.MaxLimit, DelayMS: h.Delay.Milliseconds()}
		switch h.Condition(s.Now) {
		case HostPaused:
			r.State, r.PausedUntil, r.PauseCause = "paused", h.PausedUntil.UTC().Format(time.RFC3339), h.PauseCause
		case HostThrottled:
			r.State = "throttled"
		case HostDelayBound:
			r.State = "delay_bound"
		}
		out = append(out, r)
	}
	return out
}

// PlainLine formats a snapshot as the stable progress line of the plain display:
//
//	progress done=120/2000 succeeded=117 failed=3 cached=10 active=16 bytes=12.3MiB rate=1.2MiB/s elapsed=10.2s eta=2m03s
func PlainLine(s Snapshot) string {
	eta := "?"
	if s.ETA >= 0 {
		eta = FormatDuration(s.ETA)
	}
	return fmt.Sprintf("progress done=%d/%d succeeded=%d failed=%d cached=%d active=%d bytes=%s rate=%s elapsed=%s eta=%s",
		s.Done, s.Total, s.Succeeded, s.Failed, s.Cached, s.Downloading,
		strings.ReplaceAll(FormatBytes(s.Bytes), " ", ""), strings.ReplaceAll(FormatRate(s.Rate), " ", ""), FormatDuration(s.Elapsed), eta)
}

func (l *lines) writeLine(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.out, s)
}

func (l *lines) writeJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return // the records are plain structs; Marshal cannot fail
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.out.Write(append(b, '\n'))
}

// progressRecord is a {"type":"progress"} JSON line.
type progressRecord struct {
	Type           string  `json:"type"`
	BatchID        string  `json:"batch_id,omitempty"`
	State          string  `json:"state,omitempty"`
	Total          int64   `json:"total"`
	Done           int64   `json:"done"`
	Succeeded      int64   `json:"succeeded"`
	Failed         int64   `json:"failed"`
	Cancelled      int64   `json:"cancelled"`
	Cached         int64   `json:"cached"`
	Active         int64   `json:"active"`
	Queued         int64   `json:"queued"`
	Bytes          int64   `json:"bytes"`
	Rate           int64   `json:"bytes_per_second"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	ETASeconds     *int64  `json:"eta_seconds"`
	// Hosts are the hosts not at full speed (paused, throttled, bound by the per-host delay).
	Hosts []hostRecord `json:"hosts,omitempty"`
}

// paperRecord is a {"type":"paper"} JSON line, for a paper that reached a terminal state.
type paperRecord struct {
	Type     string `json:"type"`
	ID       string `json:"id"`
	State    string `json:"state"`
	Attempts int32  `json:"attempts"`
	Size     int64  `json:"size,omitempty"`
	Cached   bool   `json:"cached,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Error    string `json:"error,omitempty"`
	URL      string `json:"url,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	Path     string `json:"path,omitempty"`
}

// messageRecord is a {"type":"message"} JSON line.
type messageRecord struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

func isTerminal(s pb.PaperState) bool {
	return s == pb.PaperState_PAPER_STATE_SUCCEEDED || s == pb.PaperState_PAPER_STATE_FAILED || s == pb.PaperState_PAPER_STATE_CANCELLED
}

func etaSeconds(d time.Duration) *int64 {
	if d < 0 {
		return nil
	}
	v := int64(d.Seconds())
	return &v
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// quoteIfNeeded quotes s when it contains spaces, quotes or control characters, so that
// key=value lines stay splittable.
func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"=\\") || strconv.Quote(s) != `"`+s+`"` {
		return strconv.Quote(s)
	}
	return s
}
