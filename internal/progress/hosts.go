package progress

import (
	"fmt"
	"math"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// HostCondition is why a host is not downloading at full speed.
type HostCondition int

const (
	// HostOK means the host runs at its configured concurrency without waiting.
	HostOK HostCondition = iota
	// HostPaused means the host is paused (it sent Retry-After, or its circuit breaker opened).
	HostPaused
	// HostThrottled means its concurrency was lowered after it answered 429 or 503.
	HostThrottled
	// HostDelayBound means the per-host delay between requests bounds its speed.
	HostDelayBound
)

// Host is the politeness state of one host the batch waits on (from WatchBatchResponse.hosts).
type Host struct {
	// Name is host[:port].
	Name string
	// Remaining counts the batch's unfinished papers on the host.
	Remaining int64
	// Active is the number of downloads running from it; Limit the current concurrency limit,
	// MaxLimit the configured one.
	Active, Limit, MaxLimit int
	// Delay is the per-host delay between request starts (0: none).
	Delay time.Duration
	// PausedUntil is the end of a pause (zero when not paused), PauseCause its cause.
	PausedUntil time.Time
	PauseCause  string
}

// hostFromProto converts a wire host state.
func hostFromProto(h *pb.HostState) Host {
	out := Host{Name: h.GetHost(), Remaining: h.GetRemaining(), Active: int(h.GetActive()), Limit: int(h.GetConcurrencyLimit()),
		MaxLimit: int(h.GetMaxConcurrency()), Delay: h.GetDelay().AsDuration(), PauseCause: h.GetPauseCause()}
	if h.GetPausedUntil() != nil {
		out.PausedUntil = h.GetPausedUntil().AsTime()
	}
	return out
}

// Condition says why the host is not at full speed at now.
func (h Host) Condition(now time.Time) HostCondition {
	switch {
	case h.PausedUntil.After(now):
		return HostPaused
	case h.Limit > 0 && h.Limit < h.MaxLimit:
		return HostThrottled
	case h.Delay > 0 && h.Remaining > int64(h.Active) && h.Active < max(h.Limit, 1):
		return HostDelayBound
	}
	return HostOK
}

// MinTimeLeft is the least time the host needs for its remaining papers: the rest of a pause,
// plus one per-host delay per paper not yet started.
func (h Host) MinTimeLeft(now time.Time) time.Duration {
	var d time.Duration
	if h.PausedUntil.After(now) {
		d = h.PausedUntil.Sub(now)
	}
	if h.Delay > 0 {
		waiting := max(h.Remaining-int64(h.Active), 0)
		if waiting > 0 && float64(h.Delay)*float64(waiting) < math.MaxInt64/2 {
			d += h.Delay * time.Duration(waiting)
		}
	}
	return d
}

// pauseWhy explains a pause cause.
func pauseWhy(cause string) string {
	switch cause {
	case "retry_after":
		return "the host asked to wait (Retry-After)"
	case "retry_after_capped":
		return "the host asked to wait longer than the cap"
	case "circuit_breaker":
		return "repeated failures: circuit breaker"
	case "":
		return "paused"
	}
	return cause
}

// Note describes the host's condition for people, e.g. "example.org paused for 1m20s more
// (the host asked to wait (Retry-After)), 40 papers wait"; "" when the host is at full speed.
func (h Host) Note(now time.Time) string {
	switch h.Condition(now) {
	case HostPaused:
		return fmt.Sprintf("%s paused for %s more (%s), %d paper%s wait", h.Name, FormatDuration(h.PausedUntil.Sub(now).Round(time.Second)),
			pauseWhy(h.PauseCause), h.Remaining, plural(h.Remaining))
	case HostThrottled:
		return fmt.Sprintf("%s slowed to %d of %d connections (it answered 429/503), %d paper%s left", h.Name, h.Limit, h.MaxLimit, h.Remaining, plural(h.Remaining))
	case HostDelayBound:
		return fmt.Sprintf("%s: 1 request per %s (--per-host-delay), %d paper%s left, at least %s", h.Name, FormatDuration(h.Delay), h.Remaining,
			plural(h.Remaining), FormatDuration(h.MinTimeLeft(now).Round(time.Second)))
	}
	return ""
}

// PlainHostLine is the stable key=value line of a host's condition in the plain display:
//
//	host example.org state=paused until=2026-11-30T12:03:04Z cause=retry_after remaining=40
//	host example.org state=throttled limit=4/16 remaining=40
//	host example.org state=delay_bound delay=1s remaining=2000 min_left=33m20s
//	host example.org state=ok remaining=12
func PlainHostLine(h Host, now time.Time) string {
	switch h.Condition(now) {
	case HostPaused:
		return fmt.Sprintf("host %s state=paused until=%s cause=%s remaining=%d", quoteIfNeeded(h.Name), h.PausedUntil.UTC().Format(time.RFC3339),
			cmpOr(h.PauseCause, "unknown"), h.Remaining)
	case HostThrottled:
		return fmt.Sprintf("host %s state=throttled limit=%d/%d remaining=%d", quoteIfNeeded(h.Name), h.Limit, h.MaxLimit, h.Remaining)
	case HostDelayBound:
		return fmt.Sprintf("host %s state=delay_bound delay=%s remaining=%d min_left=%s", quoteIfNeeded(h.Name), h.Delay, h.Remaining,
			FormatDuration(h.MinTimeLeft(now).Round(time.Second)))
	}
	return fmt.Sprintf("host %s state=ok remaining=%d", quoteIfNeeded(h.Name), h.Remaining)
}

// hostKey identifies what a host line says, so that it is printed again only when it changes.
func hostKey(h Host, now time.Time) string {
	switch c := h.Condition(now); c {
	case HostPaused:
		return fmt.Sprintf("paused %d %s", h.PausedUntil.Unix(), h.PauseCause)
	case HostThrottled:
		return fmt.Sprintf("throttled %d/%d", h.Limit, h.MaxLimit)
	default:
		return fmt.Sprint(int(c))
	}
}
