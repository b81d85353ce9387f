package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/clock"
)

// Mode selects a display.
type Mode int

const (
	// ModeAuto picks ModeTerminal when the output is a terminal, else ModePlain.
	ModeAuto Mode = iota
	// ModeTerminal is the live display with progress bars.
	ModeTerminal
	// ModePlain prints a stable key=value progress line periodically, and failures as they happen.
	ModePlain
	// ModeJSON prints JSON lines: periodic progress and every paper that finishes.
	ModeJSON
	// ModeQuiet prints only failures and messages.
	ModeQuiet
)

// Display shows the progress of one batch. Its methods are safe for concurrent use; Close must
// be called exactly once, after the last Update.
type Display interface {
	// Update feeds one WatchBatch update.
	Update(resp *pb.WatchBatchResponse)
	// Message prints a line for the user (a warning, an input error) without garbling the
	// display. JSON displays write it as {"type":"message"} to keep stdout parseable.
	Message(msg string)
	// Snapshot returns the progress so far.
	Snapshot() Snapshot
	// Close renders the final state and stops the display's goroutines.
	Close()
}

// Options configures New.
type Options struct {
	// Mode of display; ModeAuto decides by looking at Out.
	Mode Mode
	// Out receives the human display (standard error).
	Out io.Writer
	// JSONOut receives the JSON lines of ModeJSON (standard output).
	JSONOut io.Writer
	// Interval between plain and JSON progress lines; 0 means 2s.
	Interval time.Duration
	// Total is the number of papers expected, when known before the batch knows it.
	Total int64
	// Clock drives the periodic output and the elapsed time; nil means the wall clock.
	Clock clock.Clock
	// Title names the batch in the terminal display (e.g. "papers").
	Title string
	// PathOf, when set, gives the output file of a succeeded paper, for the JSON paper records.
	PathOf func(paperID string) string
}

// New returns the display chosen by opts.
func New(opts Options) Display {
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.JSONOut == nil {
		opts.JSONOut = io.Discard
	}
	tr := NewTracker(opts.Clock)
	tr.SetTotal(opts.Total)
	mode := opts.Mode
	if mode == ModeAuto {
		mode = ModePlain
		if f, ok := opts.Out.(*os.File); ok && IsTerminal(f) && os.Getenv("TERM") != "dumb" {
			mode = ModeTerminal
		}
	}
	switch mode {
	case ModeTerminal:
		return newTerminal(opts, tr)
	case ModeJSON:
		return newLines(opts, tr, true)
	case ModeQuiet:
		return newQuiet(opts, tr)
	}
	return newLines(opts, tr, false)
}

// failureLine describes a failed paper in one line.
func failureLine(u *pb.PaperUpdate) string {
	var b strings.Builder
	fmt.Fprintf(&b, "failed %s", u.GetPaperId())
	if r := ReasonName(u.GetLastFailureReason()); r != "" {
		fmt.Fprintf(&b, " (%s", r)
		if u.GetAttempts() > 0 {
			fmt.Fprintf(&b, ", %d attempt%s", u.GetAttempts(), plural(int64(u.GetAttempts())))
		}
		b.WriteString(")")
	}
	if e := u.GetLastError(); e != "" {
		fmt.Fprintf(&b, ": %s", e)
	}
	return b.String()
}

func plural(n int64) string {
	if n == 1 {
		return ""
	}
	return "s"
}
