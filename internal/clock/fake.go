package clock

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Fake is a manually advanced clock for tests. Timers and tickers fire (in deadline order)
// when Advance moves the time past their deadline. It is safe for concurrent use.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*fakeWaiter
	armed   chan struct{} // closed (and cleared) when a timer or ticker is armed; nil if nobody waits
}

var _ Clock = (*Fake)(nil)

type fakeWaiter struct {
	clock    *Fake
	deadline time.Time
	period   time.Duration  // > 0 for tickers
	ch       chan time.Time // nil for AfterFunc timers
	fn       func()         // set for AfterFunc timers: called in a goroutine when it fires
	active   bool
}

// NewFake returns a fake clock set to start.
func NewFake(start time.Time) *Fake { return &Fake{now: start} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires when the fake time reaches Now()+d.
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &fakeWaiter{clock: f, deadline: f.now.Add(d), ch: make(chan time.Time, 1), active: true}
	f.waiters = append(f.waiters, w)
	f.armedLocked()
	f.fireLocked()
	return fakeTimer{w}
}

// AfterFunc returns a timer that calls f in its own goroutine when the fake time reaches
// Now()+d (and again after each Reset); its C is nil.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &fakeWaiter{clock: f, deadline: f.now.Add(d), fn: fn, active: true}
	f.waiters = append(f.waiters, w)
	f.armedLocked()
	f.fireLocked()
	return fakeTimer{w}
}

// NewTicker returns a ticker firing every d of fake time.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive ticker period")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &fakeWaiter{clock: f, deadline: f.now.Add(d), period: d, ch: make(chan time.Time, 1), active: true}
	f.waiters = append(f.waiters, w)
	f.armedLocked()
	return fakeTicker{w}
}

// Advance moves the fake time forward by d, firing every timer and ticker whose deadline passes.
// Like time.Ticker, a ticker whose channel is full drops ticks.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	f.fireLocked()
}

// Set moves the fake time to t (which must not be before Now) and fires what is due.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t.After(f.now) {
		f.now = t
	}
	f.fireLocked()
}

// Waiters returns how many timers and tickers are active: tests use it to wait until the code
// under test has armed its timer before advancing (see also WaitForWaiters).
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.waitersLocked()
}

// WaitForWaiters blocks until at least n timers and tickers are active, so that a test can
// advance the time only once the code under test has armed its timer, without polling. It
// returns ctx.Err() if ctx ends first.
func (f *Fake) WaitForWaiters(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		if f.waitersLocked() >= n {
			f.mu.Unlock()
			return nil
		}
		if f.armed == nil {
			f.armed = make(chan struct{})
		}
		armed := f.armed
		f.mu.Unlock()
		select {
		case <-armed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// armedLocked wakes WaitForWaiters after a timer or ticker was armed.
func (f *Fake) armedLocked() {
	if f.armed != nil {
		close(f.armed)
		f.armed = nil
	}
}

func (f *Fake) waitersLocked() int {
	n := 0
	for _, w := range f.waiters {
		if w.active {
			n++
		}
	}
	return n
}

func (f *Fake) fireLocked() {
	sort.SliceStable(f.waiters, func(i, j int) bool { return f.waiters[i].deadline.Before(f.waiters[j].deadline) })
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if !w.active {
			continue
		}
		for w.active && !w.deadline.After(f.now) {
			if w.fn != nil {
				go w.fn()
			} else {
				select {
				case w.ch <- w.deadline:
				default:
				}
			}
			if w.period > 0 {
				w.deadline = w.deadline.Add(w.period)
			} else {
				w.active = false
			}
		}
		if w.active {
			kept = append(kept, w)
		}
	}
	f.waiters = kept
}

type fakeTimer struct{ w *fakeWaiter }

func (t fakeTimer) C() <-chan time.Time { return t.w.ch }

func (t fakeTimer) Stop() bool {
	f := t.w.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	was := t.w.active
	t.w.active = false
	return was
}

func (t fakeTimer) Reset(d time.Duration) bool {
	f := t.w.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	was := t.w.active
	t.w.deadline = f.now.Add(d)
	if !was {
		t.w.active = true
		f.waiters = append(f.waiters, t.w)
		f.armedLocked()
	}
	f.fireLocked()
	return was
}

type fakeTicker struct{ w *fakeWaiter }

func (t fakeTicker) C() <-chan time.Time { return t.w.ch }

func (t fakeTicker) Stop() {
	f := t.w.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	t.w.active = false
}
