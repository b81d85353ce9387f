package coordinator

import (
	"cmp"
	"slices"
	"time"
)

// Prefetch. A fetcher announces a prefetch window in its Hello (Hello.prefetch): how many
// leases it takes beyond its running downloads. The coordinator fills it with successors: a
// successor S is leased as the follower of a running download lease P (its predecessor) of
// the same stream and the same host, sent with Assign.after_lease_id = P. S consumes no
// credit: the fetcher starts S in P's slot when P's body is in, so a freed slot starts its next
// download without a round trip to the coordinator. A waiting successor may itself be
// followed (a chain P ← S ← S2, bounded by the window): a window larger than the running
// downloads is filled breadth-first, one successor per running lease, then one per waiting
// successor, and so on. S2 then starts in S's slot when S's body is in, even when the
// coordinator's Assign of S's own successor would arrive too late (a slow commit, a loaded
// machine).
//
// Politeness (the accounting the fetcher-gateway protocol promises): a host's concurrency
// (host.active) counts the leases that hold one of its slots (lease.counted). A normal lease
// holds one from its Assign until its body_received (or its end); a successor holds none while
// it waits, and takes over P's when P's body_received arrives (passSlot: P's decrement and S's
// increment cancel out). The fetcher starts S only after P's body is in, and reports P's
// body_received before S's started on the same stream, so every HTTP exchange a fetcher runs is
// counted by its host, at the latest from its start: exchanges in flight ≤ host.active ≤ the
// host's limit. When P's body is in but the host may not start another request (its limit
// shrank after a 429, a pause, an open breaker), S is cancelled and re-queued instead. Per-host
// delays are measured between request starts, whose time the fetcher picks for a successor:
// hosts with a per-host delay get no successors. A successor of a waiting successor holds
// no slot either until its own predecessor's body_received passes it one.
//
// Lifecycle. A successor whose predecessor ends without its body received (failed, cancelled,
// reclaimed, its stream gone) is void: the fetcher reports it ABORTED before any started event
// (a hand-back) and the coordinator re-queues it (handBack) without counting a failure and
// without the lost-lease cap (it never ran; its attempt number is spent all the same, as lease
// ids are never reused). A successor has no deadline while it waits (its predecessor's
// deadlines bound it); its start and hard deadlines run from its predecessor's end
// (lease.readyAt). A waiting successor is never re-announced: the fetcher drops it when its
// stream breaks, and the coordinator re-queues it with the stream's other leases. Draining
// re-queues every lease not started, successors included.
//
// Reclaim. A successor waits as long as its predecessor's download: behind a slow one (a
// stalled origin, a large body) that is up to the stall timeout or the lease's timeout, while
// another stream may sit idle with credits and nothing queued it may take (at a batch's tail,
// the batch then ends a slow download later than it could). So when schedule leaves credits
// unused, reclaimForIdle cancels waiting successors that waited reclaimAfter (2s), as many as
// the credits not already matched by a reclaim in flight: only a chain's last link (cancelling
// a link voids the links behind it), only one whose predecessor's body is not in (one whose
// predecessor's body is in holds the host slot and starts at once), and only of a host whose
// politeness would let the idle stream start it now (below its limit counting the reclaims in
// flight, not paused; a successor's host has no per-host delay). A reclaimed successor stays
// leased, and its host counting, until the fetcher answers the Cancel: the paper is re-queued
// (handBack: no failure counted) when the fetcher's hand-back arrives (failed ABORTED), and
// schedule then leases it with the idle credit. Waiting for that answer costs one round trip
// but keeps every guarantee above when the Cancel crosses the predecessor's body_received: the
// fetcher may then have started the successor in the predecessor's slot, which the coordinator
// counts against its host (passSlot) exactly as for a successor never reclaimed, and the Cancel
// aborts that running download, whose ABORTED failure is a hand-back too (lease.reclaimed), so
// the paper has one lease at a time, is never downloaded twice at once, and ends in exactly one
// terminal state with no failure counted; had the download completed before the Cancel arrived,
// its completion stands. Re-queuing at the Cancel instead (as draining does) would lease the
// paper to the idle stream while the old lease might still run uncounted. The wait keeps that
// crossing rare: reclaiming at once took back successors of downloads a few milliseconds from
// their end, and the race then cost a request (the fault suite's TestFlakyHost, two fetchers of
// 4 slots on a host limited to 4, saw a paper requested 4 times instead of 3). A scan that
// found nothing to take is not repeated until a host slot frees, a paper is queued, credits
// arrive, a successor is leased (stealGen) or a successor it found too young comes of age
// (stealAt, in nextWake); a pause that merely expires waits for the next of these.

// maxCandidateSlack bounds the stale entries of a conn's candidate list (fetcherConn.cands)
// beyond its live leases before it is compacted.
const maxCandidateSlack = 64

// noteCandidate records l, a lease of c now holding a host slot, as a possible predecessor
// (appended to c.cands); it reports whether it did.
func (e *engine) noteCandidate(c *fetcherConn, l *lease) bool {
	if c.prefetch == 0 || l.resolve != nil || e.hosts[e.papers[l.idx].host].delay != 0 {
		return false // no window, a resolution step, or a host with a per-host delay (never prefetchable)
	}
	c.candsIdle = false
	if len(c.cands) >= 2*len(c.leases)+maxCandidateSlack {
		e.compactCandidates(c)
	}
	c.cands = append(c.cands, l)
	return true
}

// mayPrecede reports whether l, listed in c.cands, may still get a successor: a live download
// lease of c holding a host slot or waiting for one (a successor: chains), without a
// successor, of a host without a per-host delay.
func (e *engine) mayPrecede(c *fetcherConn, l *lease) bool {
	return e.leases[l.idx] == l && l.conn == c && (l.counted || l.waiting()) && l.succ == nil && l.resolve == nil && !l.reclaimed &&
		e.hosts[e.papers[l.idx].host].delay == 0
}

func (e *engine) compactCandidates(c *fetcherConn) {
	keep := c.cands[:0]
	for _, l := range c.cands {
		if e.mayPrecede(c, l) {
			keep = append(keep, l)
		}
	}
	clear(c.cands[len(keep):])
	c.cands = keep
}

// prefetchable reports whether a successor may be leased for host h: it has queued papers,
// no per-host delay, is healthy (no pause, breaker closed) and not above its limit.
func prefetchable(h *host, now time.Time) bool {
	return h.queued() > 0 && h.delay == 0 && !h.br.open && !h.pausedUntil.After(now) && h.active <= h.limit
}

// schedulePrefetch fills the prefetch windows of the streams that have room, with successors
// of their running leases whose host has queued papers.
func (e *engine) schedulePrefetch(now time.Time) {
	if e.counts[stateQueued] == 0 || e.undelayedHosts == 0 {
		return // nothing to lease, or every host has a per-host delay (the default)
	}
	for _, c := range e.conns {
		if !c.closed && !c.draining && c.waiting < c.prefetch && (!c.candsIdle || c.idleGen != e.queueGen) {
			e.fillWindow(c, now)
		}
	}
}

// fillWindow leases successors of c's candidates until c's window is full: one per
// candidate and pass; the new successors are candidates of the next pass (breadth-first
// chains), which looks at them only (the others were looked at in this iteration already). A
// scan that looked at every candidate and found none whose host has queued papers marks c idle
// (candsIdle): the next scan waits for a new candidate of c or a queue that grows (queueGen),
// instead of looking at every running lease of c in every iteration.
func (e *engine) fillWindow(c *fetcherConn, now time.Time) {
	gen, idle := e.queueGen, true
	for from := 0; c.waiting < c.prefetch; {
		added, passIdle := e.fillPass(c, from, now)
		idle = idle && passIdle
		if len(added) == 0 {
			c.candsIdle, c.idleGen = idle, gen
			return
		}
		noted := 0
		for _, s := range added {
			if e.noteCandidate(c, s) {
				noted++
			}
		}
		from = len(c.cands) - noted // the new successors, at the end (compaction keeps them)
	}
}

// fillPass is one pass of fillWindow over c.cands[from:]; it returns the successors leased
// and whether it looked at every candidate without finding one whose host has queued papers.
func (e *engine) fillPass(c *fetcherConn, from int, now time.Time) (added []*lease, idle bool) {
	idle = true
	keep := c.cands[from:from]
	i := from
	for ; i < len(c.cands) && c.waiting < c.prefetch; i++ {
		p := c.cands[i]
		e.candidatesSeen++
		if !e.mayPrecede(c, p) {
			continue
		}
		h := e.hosts[e.papers[p.idx].host]
		if !prefetchable(h, now) {
			// A pause, an open breaker or a shrunk limit ends without a queue growing.
			idle = idle && h.queued() == 0
			keep = append(keep, p)
			continue
		}
		idx, spec, ok := e.popForLease(h, now)
		if !ok {
			keep = append(keep, p)
			continue
		}
		e.claimDOI(idx, spec)
		added = append(added, e.assign(idx, h, c, spec, p, now))
	}
	idle = idle && i == len(c.cands)
	keep = append(keep, c.cands[i:]...)
	n := from + len(keep)
	clear(c.cands[n:])
	c.cands = c.cands[:n]
	return added, idle
}

// unlinkPred detaches l from its predecessor; a successor that was still waiting leaves its
// stream's window, and a predecessor still running may get another successor.
func (e *engine) unlinkPred(l *lease) {
	p := l.pred
	if p == nil {
		return
	}
	l.pred, p.succ = nil, nil
	if !l.counted && l.conn != nil {
		l.conn.waiting--
	}
	if p.conn != nil && e.mayPrecede(p.conn, p) {
		e.noteCandidate(p.conn, p)
	}
}

// passSlot hands the host slot of p, whose HTTP exchange just ended, to its successor s (the
// fetcher starts s once p's body is in). When the host may not start a request now (its limit
// shrank, a pause, an open breaker), s is cancelled and re-queued instead.
func (e *engine) passSlot(p, s *lease, h *host, now time.Time) {
	if s.counted {
		return
	}
	if s.conn != nil {
		s.conn.waiting--
	}
	if h.active >= h.limit || h.br.open || h.pausedUntil.After(now) {
		s.pred, p.succ = nil, nil
		e.sendCancel(s.conn, s, "host may not start another request")
		e.handBack(s, "host may not start another request", now)
		return
	}
	s.counted = true
	h.active++
	e.m.successorsSlotTaken.Inc()
	e.noteCandidate(s.conn, s)
}

// predecessorEnded releases the successor s of p, which ended: s runs on its own (its
// deadlines start now) when it took over p's host slot, and is void otherwise (p ended
// without its body received): cancelled and re-queued.
func (e *engine) predecessorEnded(p, s *lease, now time.Time) {
	if !s.counted {
		e.unlinkPred(s)
		e.sendCancel(s.conn, s, "its predecessor ended without its body received")
		e.handBack(s, "predecessor ended without its body received", now)
		return
	}
	s.pred, p.succ = nil, nil
	s.readyAt, s.renewedAt = now, now
	e.noteLeaseDue(s)
}

// startedEarly counts a successor whose fetcher reported it started before its
// predecessor's body_received (a fetcher that breaks the protocol): it holds a host slot from
// now on, on its own.
func (e *engine) startedEarly(s *lease, now time.Time) {
	if s.pred == nil || s.counted {
		return
	}
	e.unlinkPred(s)
	s.counted = true
	s.readyAt = now
	e.noteLeaseDue(s)
	e.hosts[e.papers[s.idx].host].active++
}

// handBack re-queues the paper of lease l, which never started (a void successor, or one the
// fetcher handed back): no failure is counted, and only maxLeasesPerPaper caps its leases.
func (e *engine) handBack(l *lease, why string, now time.Time) {
	e.m.successors.WithLabelValues("handed_back").Inc()
	e.endLease(l, now)
	if e.leasesExhausted(l, true, why, now) {
		return
	}
	if e.debug() {
		e.log.Debug("lease handed back", "batch", e.batches[l.batch].id, "paper", l.paperID, "lease", l.name(), "reason", why)
	}
	e.enqueue(l.idx, now)
}

// reclaimAfter is how long a successor waits before reclaimForIdle may take it back: longer
// than most downloads, so that a successor behind a download about to end is left alone (its
// reclaim would most likely cross that download's body_received: the fetcher would start it,
// and the Cancel abort it, a request wasted), and short beside a slow download's duration
// (up to the stall timeout or the lease's timeout: a minute or more).
const reclaimAfter = 2 * time.Second

// reclaimForIdle takes back waiting successors for the streams whose credits found nothing
// to lease (schedule left credits over): a successor waiting behind a slow download would
// wait as long as that download while another stream sits idle (at a batch's tail, a slow
// download's whole duration). It cancels, at most as many as the idle credits not already
// matched by a reclaim in flight, successors that reclaimable allows and that waited
// reclaimAfter; each stays leased (reclaimed) until the fetcher's hand-back re-queues it (see
// the Reclaim paragraph above). A scan is not repeated until stealGen changes or, when it
// found successors too young, the first of them comes of age (stealAt, a wake-up of the loop).
func (e *engine) reclaimForIdle(now time.Time) {
	budget := e.credits - e.reclaiming
	if budget <= 0 {
		e.stealAt = time.Time{} // credits arriving change stealGen
		return
	}
	if e.stealSeen == e.stealGen && (e.stealAt.IsZero() || now.Before(e.stealAt)) {
		return
	}
	e.stealSeen, e.stealAt = e.stealGen, time.Time{}
	// The candidates are taken oldest first (assigned earliest; then by paper index), not in
	// the leases maps' random order: the engine decides the same for the same events (two
	// engines fed the same events, batched or not, send the same Cancels).
	cands := e.reclaimCands[:0]
	for _, c := range e.conns {
		if c.closed || c.draining || c.waiting == 0 {
			continue
		}
		for _, l := range c.leases {
			if !e.reclaimable(l, now) {
				continue
			}
			if at := l.assignedAt.Add(reclaimAfter); now.Before(at) {
				if e.stealAt.IsZero() || at.Before(e.stealAt) {
					e.stealAt = at
				}
				continue
			}
			cands = append(cands, l)
		}
	}
	slices.SortFunc(cands, func(a, b *lease) int {
		if c := a.assignedAt.Compare(b.assignedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.idx, b.idx)
	})
	for i, l := range cands {
		cands[i] = nil // no lease kept alive by the scratch slice
		if budget == 0 || !e.reclaimable(l, now) {
			continue // the budget is spent, or the host's limit is reached by the reclaims just made
		}
		h := e.hosts[e.papers[l.idx].host]
		l.reclaimed = true
		e.reclaiming++
		h.reclaiming++
		e.m.successors.WithLabelValues("reclaimed").Inc()
		e.sendCancel(l.conn, l, "reclaimed for an idle fetcher")
		if e.debug() {
			e.log.Debug("successor reclaimed", "batch", e.batches[l.batch].id, "paper", l.paperID, "lease", l.name(), "fetcher", l.conn.id)
		}
		budget--
	}
	e.reclaimCands = cands[:0]
}

// reclaimable reports whether reclaimForIdle may take back l (once it waited reclaimAfter): a
// waiting successor, not yet reclaimed, at the end of its chain (a reclaimed link voids the
// links behind it on the fetcher), whose predecessor's body is not in (otherwise it holds, or
// is about to hold, the predecessor's host slot and starts at once), of a host that would let
// an idle stream start it now: below its limit once the reclaims in flight are counted, not
// paused.
func (e *engine) reclaimable(l *lease, now time.Time) bool {
	if !l.waiting() || l.counted || l.reclaimed || l.succ != nil || l.pred == nil || l.pred.received || e.leases[l.idx] != l {
		return false
	}
	h := e.hosts[e.papers[l.idx].host]
	return h.active+h.reclaiming < h.limit && !h.pausedUntil.After(now)
}
