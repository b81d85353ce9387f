package progress

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// terminal is the live display: an overall bar (papers done, bytes, speed, ETA) and a bar per
// running download, redrawn in place by mpb.
type terminal struct {
	tr        *Tracker
	title     string
	p         *mpb.Progress
	overall   *mpb.Bar
	maxActive int

	mu     sync.Mutex
	bars   map[string]*mpb.Bar // running downloads on screen
	hidden int                 // running downloads not on screen
	closed bool
}

func newTerminal(opts Options, tr *Tracker) *terminal {
	t := &terminal{tr: tr, title: opts.Title, bars: map[string]*mpb.Bar{}, maxActive: 8}
	if t.title == "" {
		t.title = "papers"
	}
	if f, ok := opts.Out.(*os.File); ok {
		if _, rows := terminalSize(f); rows > 0 {
			t.maxActive = max(0, min(t.maxActive, rows-4))
		}
	}
	t.p = mpb.New(mpb.WithConsoleWriter(newCRConsole(opts.Out)), mpb.WithRefreshRate(150*time.Millisecond), mpb.WithAutoRefresh())
	style := mpb.BarStyle().Lbound("[").Filler("=").Tip(">").Padding(" ").Rbound("]")
	t.overall = t.p.New(0, style,
		mpb.PrependDecorators(decor.Any(t.overallLeft, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(decor.Any(t.overallRight)),
	)
	if opts.Total > 0 {
		t.overall.SetTotal(opts.Total, false)
	}
	return t
}

func (t *terminal) overallLeft(decor.Statistics) string {
	s := t.tr.Snapshot()
	return fmt.Sprintf("%s %d/%d", t.title, s.Done, s.Total)
}

func (t *terminal) overallRight(decor.Statistics) string {
	s := t.tr.Snapshot()
	var b strings.Builder
	fmt.Fprintf(&b, " %s  %s", FormatBytes(s.Bytes), FormatRate(s.Rate))
	if s.ETA > 0 {
		fmt.Fprintf(&b, "  ETA %s", FormatDuration(s.ETA))
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
	t.mu.Lock()
	hidden := t.hidden
	t.mu.Unlock()
	if hidden > 0 {
		fmt.Fprintf(&b, "  (+%d more running)", hidden)
	}
	return b.String()
}

// Update implements Display.
func (t *terminal) Update(resp *pb.WatchBatchResponse) {
	t.tr.Observe(resp)
	for _, u := range resp.GetPaperUpdates() {
		if u.GetState() == pb.PaperState_PAPER_STATE_FAILED {
			t.Message("✗ " + failureLine(u))
		}
	}
	s := t.tr.Snapshot()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.overall.SetTotal(s.Total, false)
	t.overall.SetCurrent(s.Done)

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
	t.hidden = 0
	for _, d := range s.Downloads {
		bar, ok := t.bars[d.PaperID]
		if !ok {
			if len(t.bars) >= t.maxActive {
				t.hidden++
				continue
			}
			bar = t.newDownloadBar(d.PaperID)
			t.bars[d.PaperID] = bar
		}
		bar.SetTotal(max(d.Total, 0), false)
		bar.SetCurrent(d.Bytes)
	}
}

// newDownloadBar adds the line of one running download: its id, a bar, bytes and speed.
func (t *terminal) newDownloadBar(id string) *mpb.Bar {
	name := "  " + truncate(id, 28)
	style := mpb.BarStyle().Lbound("[").Filler("-").Tip(">").Padding(" ").Rbound("]")
	return t.p.New(0, style,
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(decor.Any(func(st decor.Statistics) string {
			rate := 0.0
			for _, d := range t.tr.Snapshot().Downloads {
				if d.PaperID == id {
					rate = d.Rate
				}
			}
			if st.Total > 0 {
				return fmt.Sprintf(" %s / %s  %s", FormatBytes(st.Current), FormatBytes(st.Total), FormatRate(rate))
			}
			return fmt.Sprintf(" %s  %s", FormatBytes(st.Current), FormatRate(rate))
		})),
	)
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
	for id, bar := range t.bars {
		bar.Abort(true)
		delete(t.bars, id)
	}
	t.hidden = 0
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
