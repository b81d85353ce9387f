// Package progress shows how a batch is doing while paperfetch downloads it: a live terminal
// display (an overall bar and a line per running download) when standard error is a terminal,
// stable key=value lines when it is not, JSON lines for programs, or nothing but errors.
//
// Every display consumes the coordinator's WatchBatch updates; none of them talks to the
// network itself.
package progress

import (
	"fmt"
	"math"
	"strings"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// FormatBytes renders a byte count with binary units: "0 B", "512 B", "1.5 KiB", "12.3 MiB".
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// FormatRate renders bytes per second, e.g. "3.4 MiB/s".
func FormatRate(bps float64) string {
	if bps <= 0 || math.IsNaN(bps) || math.IsInf(bps, 0) {
		return "0 B/s"
	}
	return FormatBytes(int64(bps)) + "/s"
}

// FormatDuration renders a duration compactly for humans: "850ms", "12s", "3m04s", "2h05m".
func FormatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "?"
	case d == 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// StateName is the lowercase name of a paper state: "queued", "succeeded"...
func StateName(s pb.PaperState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "PAPER_STATE_"))
}

// BatchStateName is the lowercase name of a batch state: "open", "running"...
func BatchStateName(s pb.BatchState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "BATCH_STATE_"))
}

// ReasonName is the lowercase name of a failure reason ("not_found"), or "" when unset.
func ReasonName(r pb.FailureReason) string {
	if r == pb.FailureReason_FAILURE_REASON_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(r.String(), "FAILURE_REASON_"))
}

// ParseState parses a paper state name as printed by StateName (case-insensitive; "done" and
// "ok" mean succeeded, "running" means downloading).
func ParseState(s string) (pb.PaperState, error) {
	name := strings.ToUpper(strings.TrimSpace(s))
	switch name {
	case "OK", "DONE", "SUCCESS":
		name = "SUCCEEDED"
	case "RUNNING", "ACTIVE":
		name = "DOWNLOADING"
	case "RETRY", "RETRYING":
		name = "RETRY_WAIT"
	case "CANCELED":
		name = "CANCELLED"
	}
	v, ok := pb.PaperState_value["PAPER_STATE_"+name]
	if !ok || v == 0 {
		return 0, fmt.Errorf("unknown paper state %q (want queued, retry_wait, downloading, succeeded, failed or cancelled)", s)
	}
	return pb.PaperState(v), nil
}
