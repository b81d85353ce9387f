package fetcher

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/paperfetch/paperfetch/internal/clock"
)

// watchdog enforces a download's overall deadline and its stall timeout on the injected clock:
// it cancels the download's context with errDeadline or errStalled as the cause.
type watchdog struct {
	clk     clock.Clock
	cancel  context.CancelCauseFunc
	timeout time.Duration
	stall   time.Duration
	last    atomic.Int64 // clock time (UnixNano) of the last byte; 0 while not armed
	stopc   chan struct{}
	done    chan struct{}
}

// startWatchdog starts the watchdog goroutine; the caller must call stop.
func startWatchdog(ctx context.Context, clk clock.Clock, cancel context.CancelCauseFunc, timeout, stall time.Duration) *watchdog {
	w := &watchdog{clk: clk, cancel: cancel, timeout: timeout, stall: stall, stopc: make(chan struct{}), done: make(chan struct{})}
	var deadline clock.Timer
	if timeout > 0 {
		deadline = clk.NewTimer(timeout)
	}
	var tick clock.Ticker
	if stall > 0 {
		tick = clk.NewTicker(max(stall/4, time.Millisecond))
	}
	go w.run(ctx, deadline, tick)
	return w
}

func (w *watchdog) run(ctx context.Context, deadline clock.Timer, tick clock.Ticker) {
	defer close(w.done)
	var deadlineC, tickC <-chan time.Time
	if deadline != nil {
		defer deadline.Stop()
		deadlineC = deadline.C()
	}
	if tick != nil {
		defer tick.Stop()
		tickC = tick.C()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.stopc:
			return
		case <-deadlineC:
			w.cancel(errDeadline)
			return
		case <-tickC:
			last := w.last.Load()
			if last != 0 && w.clk.Now().UnixNano()-last >= int64(w.stall) {
				w.cancel(errStalled)
				return
			}
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
