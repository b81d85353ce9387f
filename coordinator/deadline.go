package coordinator

import (
	"fmt"
	"time"
)

// Lease deadlines. A lease is reclaimed (its fetcher gets a Cancel and the paper is re-queued)
// at the first of:
//
//   - expiry: LeaseTTL after the lease's own last event (or its Assign or adoption). Only the
//     lease's events renew it, not heartbeats or other leases' events: fetchers send a
//     progress event for every running lease at least every heartbeat interval.
//   - start: StartTimeout after the Assign without a started event.
//   - deadline: the download timeout sent in the Assign plus DeadlineGrace after the Assign,
//     however chatty the fetcher is.
//
// For a successor (prefetch.go), start and deadline run from the end of its predecessor
// instead of the Assign, and it has no deadline while it waits: its predecessor's deadlines bound it.
//
// A lease whose completion is being verified is left alone (the check is bounded by
// verifyTimeout), and orphans wait for ReconnectGrace instead. A stream with a lease reclaimed
// as not started or past its deadline is closed with FAILED_PRECONDITION (its other leases are
// re-queued): a working fetcher never lets that happen. Leases are scanned at most
// once per leaseScanInterval, when the earliest deadline seen at the last scan has passed.

// leaseScanInterval bounds how often the loop scans the leases for deadlines.
const leaseScanInterval = time.Second

// Causes of reclaimed leases (metric label and Cancel reason).
const (
	reclaimExpired    = "expired"
	reclaimNotStarted = "not_started"
	reclaimDeadline   = "deadline"
)

// leaseDue returns when l must be reclaimed and why.
func (e *engine) leaseDue(l *lease) (time.Time, string) {
	at, why := l.renewedAt.Add(e.cfg.LeaseTTL), reclaimExpired
	if !l.started {
		if s := l.readyAt.Add(e.cfg.StartTimeout); s.Before(at) {
			at, why = s, reclaimNotStarted
		}
	}
	if d := l.readyAt.Add(e.downloadTimeout + e.cfg.DeadlineGrace); d.Before(at) {
		at, why = d, reclaimDeadline
	}
	return at, why
}

// noteLeaseDue makes sure the next scan happens no later than l's due time. A successor
// waiting for its predecessor has no deadline of its own (see prefetch.go).
func (e *engine) noteLeaseDue(l *lease) {
	if l.pred != nil {
		return
	}
	at, _ := e.leaseDue(l)
	if e.nextLeaseScan.IsZero() || at.Before(e.nextLeaseScan) {
		e.nextLeaseScan = at
	}
}

// reclaimLeases re-queues the leases past their due time.
func (e *engine) reclaimLeases(now time.Time) {
	if e.nextLeaseScan.IsZero() || now.Before(e.nextLeaseScan) {
		return
	}
	// Leases a reclaim releases (successors of reclaimed predecessors, prefetch.go) note their
	// due time during the scan, possibly after the scan passed them: it is kept below.
	e.nextLeaseScan = time.Time{}
	var next time.Time
	for _, l := range mapValues(e.leases) {
		if e.leases[l.idx] != l || l.conn == nil || l.conn.closed || l.verifying || l.pred != nil {
			continue // ended meanwhile (its stream was closed below), orphan, being verified, or a waiting successor
		}
		at, why := e.leaseDue(l)
		if now.Before(at) {
			if next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		e.m.leaseReclaims.WithLabelValues(why).Inc()
		reason := "lease " + why
		switch why {
		case reclaimNotStarted:
			reason = "no started event within " + e.cfg.StartTimeout.String() + " of the Assign"
		case reclaimDeadline:
			reason = "download deadline (" + e.downloadTimeout.String() + " + " + e.cfg.DeadlineGrace.String() + " grace) exceeded"
		}
		c := l.conn
		e.log.Info("lease reclaimed", "fetcher", c.id, "lease", l.name(), "paper", l.paperID, "cause", why)
		e.sendCancel(c, l, reason)
		e.requeue(l, reason, now)
		if why != reclaimExpired {
			// A fetcher starts what it is assigned at once, and its own watchdog ends a
			// download at the timeout: one that does neither is broken (or lying). Its stream
			// is closed (FAILED_PRECONDITION) so that it gets no more work until it reconnects.
			c.kill(fmt.Errorf("%w: %s", errPrecondition, reason))
			e.dropConn(c, "lease "+why, now)
		}
	}
	if noted := e.nextLeaseScan; !noted.IsZero() && (next.IsZero() || noted.Before(next)) {
		next = noted
	}
	if !next.IsZero() && next.Before(now.Add(leaseScanInterval)) {
		next = now.Add(leaseScanInterval)
	}
	e.nextLeaseScan = next
}
