package progress

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/clock"
)

// terminal is the live display: an overall bar (papers done, bytes, speed, ETA) and a bar per
// running download, redrawn in place by mpb.
type terminal struct {
	tr        *Tracker
	title     string
	p         *mpb.Progress
	overall   *mpb.Bar
	maxActive int

	cols      int // terminal width (0: unknown)
	rightW    int // width of the text after the bars
	nameW     int // width of a download's name
	clk       clock.Clock
	dirty     chan struct{}       // capacity 1: an update came since the bars were last set
	stop      chan struct{}       // closed by Close: loop returns
	done      chan struct{}       // closed when loop has returned
	mu        sync.Mutex          // guards what follows; mpb's decorators never take it
	bars      map[string]*mpb.Bar // running downloads on screen
	hostBars  []*mpb.Bar          // lines explaining slow hosts
	notesMu   sync.Mutex          // guards hostNotes only: the decorators take no other lock
	hostNotes []string            // the host lines' text, refreshed by setBars
	nextPrio  int
	closed    bool
	hidden    atomic.Int64 // running downloads not on screen (read by a decorator)
}

// barInterval is how often, at most, the bars are set from the latest update (mpb redraws
// every 150 ms anyway).
const barInterval = 150 * time.Millisecond

// maxHostLines bounds the lines that explain slow hosts.
const maxHostLines = 3

// Widths that keep the bars still while the numbers change: for wide terminals, and for
// narrow ones (under wideColumns) or unknown widths.
const (
	wideColumns      = 120
	overallRightWide = 64
	overallRightNarr = 34
	downloadNameWide = 28
	downloadNameNarr = 18
)

func newTerminal(opts Options, tr *Tracker) *terminal {
	t := &terminal{tr: tr, title: opts.Title, bars: map[string]*mpb.Bar{}, maxActive: 8, clk: opts.Clock,
		dirty: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if t.title == "" {
		t.title = "papers"
	}
	if f, ok := opts.Out.(*os.File); ok {
		cols, rows := terminalSize(f)
		if rows > 0 {
			t.maxActive = max(1, min(t.maxActive, rows-4-maxHostLines))
		}
		t.cols = cols
	}
	t.rightW, t.nameW = overallRightNarr, downloadNameNarr
	if t.cols >= wideColumns {
		t.rightW, t.nameW = overallRightWide, downloadNameWide
	}
	t.p = mpb.New(mpb.WithConsoleWriter(newCRConsole(opts.Out)), mpb.WithRefreshRate(150*time.Millisecond), mpb.WithAutoRefresh())
	style := mpb.BarStyle().Lbound("[").Filler("=").Tip(">").Padding(" ").Rbound("]")
	t.overall = t.p.New(0, style, mpb.BarPriority(0),
		mpb.PrependDecorators(decor.Any(t.overallLeft, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(decor.Any(t.overallRight)),
	)
	t.nextPrio = 100
	if opts.Total > 0 {
		t.overall.SetTotal(opts.Total, false)
	}
	go t.loop()
	return t
}

// loop sets the bars from the latest update, at most once per barInterval, until Close. The
// bars are mpb's: each call waits for mpb's render loop, which may be slow (a slow terminal),
// so they are never set on the caller of Update (the watch stream of `get`).
func (t *terminal) loop() {
	defer close(t.done)
	for {
		select {
		case <-t.stop:
			return
		case <-t.dirty:
		}
		t.setBars()
		pause := t.clk.NewTimer(barInterval)
		select {
		case <-t.stop:
			pause.Stop()
			return
		case <-pause.C():
		}
	}
}

func (t *terminal) overallLeft(decor.Statistics) string {
	s := t.tr.Snapshot()
	digits := len(fmt.Sprint(s.Total))
	return fmt.Sprintf("%s %*d/%d", t.title, digits, s.Done, s.Total)
}

func (t *terminal) overallRight(decor.Statistics) string {
	s := t.tr.Snapshot()
	var b strings.Builder
	fmt.Fprintf(&b, " %s  %s", FormatBytes(s.Bytes), FormatRate(s.Rate))
	switch {
	case s.ETA > 0:
		fmt.Fprintf(&b, "  ETA %s", FormatDuration(s.ETA))
	case s.ETA < 0 && s.Done < s.Total && s.Elapsed > 2*time.Second:
		b.WriteString("  ETA ?")
	}
	if s.Failed > 0 {
		fmt.Fprintf(&b, "  %d failed", s.Failed)
	}
	if s.RetryWait > 0 {
		fmt.Fprintf(&b, "  %d waiting to retry", s.RetryWait)
	}
	if s.Cached > 0 {
		fmt.Fprintf(&b, "  %d cached", s.Cached)
	}
	if hidden := t.hidden.Load(); hidden > 0 {
		fmt.Fprintf(&b, "  (+%d more running)", hidden)
	}
	// A fixed width keeps the bar from changing length as the numbers change.
	return fixWidth(b.String(), t.rightW)
}

// fixWidth pads s with spaces, or cuts it (ending in "…"), to exactly n runes: text of a
// fixed width beside a bar keeps the bar's length and position still.
func fixWidth(s string, n int) string {
	k := utf8.RuneCountInString(s)
	switch {
	case k < n:
		return s + strings.Repeat(" ", n-k)
	case k > n && n > 0:
		return string([]rune(s)[:n-1]) + "…"
	}
	return s
}

// fit shortens s to the terminal's width, so that a line never wraps (a wrapped line breaks
// the redraw).
func (t *terminal) fit(s string) string {
	if t.cols > 1 && utf8.RuneCountInString(s) > t.cols-1 {
		r := []rune(s)
		return string(r[:t.cols-2]) + "…"
	}
	return s
}

// updateHostLines shows a line for each host that is not at full speed (at most
// maxHostLines): paused until when and why, throttled, or bound by the per-host delay. t.mu
// is held.
func (t *terminal) updateHostLines(s Snapshot) {
	slow := s.SlowHosts()
	notes := make([]string, 0, maxHostLines)
	for i, h := range slow {
		if i == maxHostLines-1 && len(slow) > maxHostLines {
			notes = append(notes, fmt.Sprintf("  … and %d more slow hosts", len(slow)-i))
			break
		}
		notes = append(notes, "  ⏸ "+h.Note(s.Now))
	}
	t.notesMu.Lock()
	t.hostNotes = notes
	t.notesMu.Unlock()
	for len(t.hostBars) < len(notes) {
		i := len(t.hostBars)
		bar := t.p.New(0, mpb.NopStyle(), mpb.BarPriority(1+i),
			mpb.PrependDecorators(decor.Any(func(decor.Statistics) string {
				t.notesMu.Lock()
				defer t.notesMu.Unlock()
				if i < len(t.hostNotes) {
					return t.fit(t.hostNotes[i])
				}
				return ""
			})))
		t.hostBars = append(t.hostBars, bar)
	}
	for len(t.hostBars) > len(notes) {
		last := t.hostBars[len(t.hostBars)-1]
		last.Abort(true)
		t.hostBars = t.hostBars[:len(t.hostBars)-1]
	}
}

// Update implements Display. It records the update and returns: loop sets the bars.
func (t *terminal) Update(resp *pb.WatchBatchResponse) {
	t.tr.Observe(resp)
	for _, u := range resp.GetPaperUpdates() {
		if u.GetState() == pb.PaperState_PAPER_STATE_FAILED {
			t.Message("✗ " + failureLine(u))
		}
	}
	select {
	case t.dirty <- struct{}{}:
	default: // already marked
	}
}

// setBars sets the overall bar, the host lines and a bar per running download from the
// latest snapshot (loop).
func (t *terminal) setBars() {
	s := t.tr.Snapshot()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.overall.SetTotal(s.Total, false)
	t.overall.SetCurrent(s.Done)
	t.updateHostLines(s)
	running := make(map[string]bool, len(s.Downloads))
	for _, d := range s.Downloads {
		running[d.PaperID] = true
	}
	for id, bar := range t.bars {
		if !running[id] {
			bar.Abort(true)
			delete(t.bars, id)
		}
	}
	hidden := int64(0)
	for _, d := range s.Downloads {
		bar, ok := t.bars[d.PaperID]
		if !ok {
			if len(t.bars) >= t.maxActive {
				hidden++
				continue
			}
			bar = t.newDownloadBar(d.PaperID)
			t.bars[d.PaperID] = bar
		}
		bar.SetTotal(max(d.Total, 0), false)
		bar.SetCurrent(d.Bytes)
	}
	if len(t.bars) == 0 {
		hidden = 0 // "+N more" only below rows that are on screen
	}
	t.hidden.Store(hidden)
}

// newDownloadBar adds the line of one running download: its id, a bar, bytes and speed.
func (t *terminal) newDownloadBar(id string) *mpb.Bar {
	name := "  " + truncate(id, t.nameW)
	style := mpb.BarStyle().Lbound("[").Filler("-").Tip(">").Padding(" ").Rbound("]")
	t.nextPrio++
	return t.p.New(0, style, mpb.BarPriority(t.nextPrio),
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(decor.Any(func(st decor.Statistics) string {
			var d Download
			for _, x := range t.tr.Snapshot().Downloads {
				if x.PaperID == id {
					d = x
				}
			}
			return fixWidth(" "+downloadText(d, st.Current, st.Total), t.rightW)
		})),
	)
}

// downloadText describes a running download after its bar: its state until bytes flow
// ("connecting", "attempt 2"), then bytes, size and speed (no "0 B/s" for a file that arrived
// between two updates).
func downloadText(d Download, current, total int64) string {
	var b strings.Builder
	switch {
	case current == 0 && total <= 0:
		b.WriteString("connecting")
	case total > 0:
		fmt.Fprintf(&b, "%s / %s", FormatBytes(current), FormatBytes(total))
	default:
		b.WriteString(FormatBytes(current))
	}
	if d.Rate >= 1 && current > 0 {
		fmt.Fprintf(&b, "  %s", FormatRate(d.Rate))
	}
	if d.Attempt > 1 {
		fmt.Fprintf(&b, "  (attempt %d)", d.Attempt)
	}
	return b.String()
}

// Message implements Display.
func (t *terminal) Message(msg string) {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return
	}
	_, _ = t.p.Write([]byte(strings.TrimRight(msg, "\n") + "\n"))
}

// Snapshot implements Display.
func (t *terminal) Snapshot() Snapshot { return t.tr.Snapshot() }

// Close implements Display.
func (t *terminal) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	t.mu.Unlock()
	close(t.stop)
	<-t.done
	t.mu.Lock()
	for id, bar := range t.bars {
		bar.Abort(true)
		delete(t.bars, id)
	}
	for _, bar := range t.hostBars {
		bar.Abort(true)
	}
	t.hostBars = nil
	t.hidden.Store(0)
	t.mu.Unlock()
	s := t.tr.Snapshot()
	t.overall.SetTotal(s.Total, false)
	t.overall.SetCurrent(s.Done)
	if s.Done >= s.Total {
		t.overall.SetTotal(-1, true)
	} else {
		t.overall.Abort(true) // interrupted: the caller prints where the run stopped
	}
	t.p.Wait()
}

// truncate shortens s to n runes with an ellipsis, padding it to n.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) > n {
		r := []rune(s)
		s = string(r[:n-1]) + "…"
	}
	return s + strings.Repeat(" ", n-utf8.RuneCountInString(s))
}
