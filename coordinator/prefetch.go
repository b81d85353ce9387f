package coordinator

import (
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
	return e.leases[l.idx] == l && l.conn == c && (l.counted || l.waiting()) && l.succ == nil && l.resolve == nil &&
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
