package fetcher

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"github.com/paperfetch/paperfetch/internal/clock"
)

// watchdog enforces a download's overall deadline and its stall timeout on the injected clock:
// it cancels the download's context with errDeadline or errStalled as the cause. One timer
// serves both: it fires at the deadline or at the next stall check (every stall/4), whichever
// comes first (a timer and a ticker per download cost 3 allocations more).
type watchdog struct {
	clk      clock.Clock
	cancel   context.CancelCauseFunc
	deadline time.Time // zero: no overall deadline
	stall    time.Duration
	last     atomic.Int64 // clock time (UnixNano) of the last byte; 0 while not armed
	stopc    chan struct{}
	done     chan struct{}
}

// startWatchdog starts the watchdog goroutine; the caller must call stop.
func startWatchdog(ctx context.Context, clk clock.Clock, cancel context.CancelCauseFunc, timeout, stall time.Duration) *watchdog {
	w := &watchdog{clk: clk, cancel: cancel, stall: stall, stopc: make(chan struct{}), done: make(chan struct{})}
	now := clk.Now()
	if timeout > 0 {
		w.deadline = now.Add(timeout)
	}
	var t clock.Timer
	if timeout > 0 || stall > 0 {
		t = clk.NewTimer(w.next(now))
	}
	go w.run(ctx, t)
	return w
}

// next returns how long after now the timer fires next: at the deadline or at the next stall
// check, whichever comes first.
func (w *watchdog) next(now time.Time) time.Duration {
	d := time.Duration(math.MaxInt64)
	if w.stall > 0 {
		d = max(w.stall/4, time.Millisecond)
	}
	if !w.deadline.IsZero() {
		d = min(d, w.deadline.Sub(now))
	}
	return d
}

func (w *watchdog) run(ctx context.Context, t clock.Timer) {
	defer close(w.done)
	var fire <-chan time.Time
	if t != nil {
		defer t.Stop()
		fire = t.C()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.stopc:
			return
		case <-fire:
			now := w.clk.Now()
			if !w.deadline.IsZero() && !now.Before(w.deadline) {
				w.cancel(errDeadline)
				return
			}
			if last := w.last.Load(); w.stall > 0 && last != 0 && now.UnixNano()-last >= int64(w.stall) {
				w.cancel(errStalled)
				return
			}
			t.Reset(w.next(now))
		}
	}
}

// touch records that bytes arrived (and arms the stall check).
func (w *watchdog) touch() { w.last.Store(w.clk.Now().UnixNano()) }

// disarm suspends the stall check (e.g. while waiting for response headers, which have their
// own timeout).
func (w *watchdog) disarm() { w.last.Store(0) }

// stop ends the watchdog goroutine and waits for it.
func (w *watchdog) stop() {
	close(w.stopc)
	<-w.done
}
