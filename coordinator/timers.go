package coordinator

import (
	"container/heap"
	"time"
)

// Timers: what is due at a given time (retries, lease deadlines, the reconnect grace,
// retention, deletion slices) and when the loop must wake up next.

// tick handles everything due at now: retry timers, lease expiry, the reconnect grace.
func (e *engine) tick(now time.Time) {
	ns := now.UnixNano()
	for len(e.retry) > 0 && e.retry[0].at <= ns {
		it := heap.Pop(&e.retry).(retryItem)
		p := &e.papers[it.idx]
		if p.state != stateRetryWait || p.nextAttempt() != it.at {
			continue
		}
		e.enqueue(it.idx, now)
	}
	e.reclaimLeases(now)
	if len(e.orphans) > 0 && !now.Before(e.graceUntil) {
		for _, l := range mapValues(e.orphans) {
			e.requeue(l, "not re-announced after restart", now)
		}
	}
	e.applyRetention(now)
	e.advanceDeletions()
}

// nextWake is when tick or schedule next has something to do (zero: nothing pending).
func (e *engine) nextWake() time.Time {
	var t time.Time
	earliest := func(c time.Time) {
		if t.IsZero() || c.Before(t) {
			t = c
		}
	}
	if len(e.retry) > 0 {
		earliest(time.Unix(0, e.retry[0].at))
	}
	if len(e.sleeping) > 0 {
		earliest(e.sleeping[0].wakeAt)
	}
	if !e.nextLeaseScan.IsZero() {
		earliest(e.nextLeaseScan)
	}
	if len(e.orphans) > 0 {
		earliest(e.graceUntil)
	}
	if e.cfg.Retention > 0 && !e.nextRetention.IsZero() {
		earliest(e.nextRetention)
	}
	if len(e.released) > 0 {
		earliest(time.Unix(0, 0)) // now: papers whose download ended look up the cache
	}
	if len(e.deletions) > 0 {
		earliest(time.Unix(0, 0)) // now: the next slice
	}
	if !e.stealAt.IsZero() {
		earliest(e.stealAt) // a waiting successor may be reclaimed for an idle stream (prefetch.go)
	}
	return t
}
