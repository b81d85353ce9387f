package coordinator

import (
	"container/heap"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/redact"
)

// Scheduling: the hosts (their politeness: delay, concurrency, pauses) and the leasing of
// queued papers to fetchers with credit, host by host in round-robin order.

// hostKey is the politeness key of a URL: its lower-case host[:port].
func hostKey(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "invalid"
	}
	return strings.ToLower(u.Host)
}

func (e *engine) internHost(name string) uint32 {
	if i, ok := e.hostByName[name]; ok {
		return i
	}
	i := uint32(len(e.hosts))
	e.addHost(i, name)
	e.ws.hosts = append(e.ws.hosts, hostWrite{idx: i, name: name})
	return i
}

func (e *engine) addHost(i uint32, name string) {
	delay, conc := e.cfg.hostLimits(name)
	h := &host{idx: i, name: name, limit: conc, maxLimit: conc, delay: delay}
	if delay == 0 {
		e.undelayedHosts++ // hosts that may get prefetched successors (prefetch.go)
	}
	for uint32(len(e.hosts)) <= i {
		e.hosts = append(e.hosts, nil)
	}
	e.hosts[i] = h
	e.hostByName[name] = i
}

// refreshHost puts h in the ready ring or the sleeping heap when it has work and may start
// a request now or later. Hosts at their concurrency limit are refreshed when a lease ends.
func (e *engine) refreshHost(h *host, now time.Time) {
	if h.delay == 0 && h.queued() > 0 {
		e.queueGen++ // every push of a queued paper is followed by a refresh
	}
	e.stealGen++ // a lease ended, a slot freed or a paper queued (reclaimForIdle)
	if h.inReady || h.queued() == 0 || h.active >= h.limit {
		return
	}
	at := h.readyAt()
	if !at.After(now) {
		if h.inSleep {
			heap.Remove(&e.sleeping, h.sleepIx)
			h.inSleep = false
		}
		h.inReady = true
		e.runnable.push(h)
		return
	}
	if h.inSleep {
		if !h.wakeAt.Equal(at) {
			h.wakeAt = at
			heap.Fix(&e.sleeping, h.sleepIx)
		}
		return
	}
	h.inSleep = true
	h.wakeAt = at
	heap.Push(&e.sleeping, h)
}

func (e *engine) hostEligible(h *host, now time.Time) bool {
	return h.active < h.limit && !h.readyAt().After(now)
}

// schedule leases queued papers to fetchers while there is credit and a host may start,
// then fills the fetchers' prefetch windows (prefetch.go).
func (e *engine) schedule(now time.Time) {
	e.takeUpReleased(now)
	e.wakeHosts(now)
	for e.credits > 0 {
		h := e.runnable.pop()
		if h == nil {
			break
		}
		h.inReady = false
		if !e.hostEligible(h, now) {
			e.refreshHost(h, now)
			continue
		}
		idx, spec, ok := e.popForLease(h, now)
		if !ok {
			e.refreshHost(h, now)
			continue
		}
		c := e.pickConn()
		if c == nil { // cannot happen while credits > 0; be safe
			e.log.Error("schedule: credits without a conn", "credits", e.credits)
			e.credits = 0
			h.queue = append(h.queue, idx)
			e.refreshHost(h, now)
			return
		}
		e.claimDOI(idx, spec)
		e.assign(idx, h, c, spec, nil, now)
		e.refreshHost(h, now)
	}
	e.reclaimForIdle(now)
	e.schedulePrefetch(now)
}

// popForLease takes queued papers of h until one needs a lease, settling the others on the
// way (a cache hit, a paper held by a download of the same key, a host whose breaker gave up);
// ok is false when h has no queued paper left.
func (e *engine) popForLease(h *host, now time.Time) (idx uint32, spec *pb.PaperSpec, ok bool) {
	for {
		idx, ok := h.pop(e.papers)
		if !ok {
			return 0, nil, false
		}
		spec, err := e.specOf(idx)
		if err != nil {
			e.log.Error("schedule: read spec", "paper_index", idx, "err", err)
			e.setError(idx, "internal error: "+err.Error())
			e.setState(idx, stateFailed, now)
			continue
		}
		if rec, hit := e.cacheLookupPaper(idx, spec); hit {
			e.completeCached(idx, rec, now)
			continue
		}
		if h.br.gaveUp(now) && h.pausedUntil.After(now) {
			e.failFast(idx, h, spec.GetPaperId(), now)
			continue
		}
		if e.parkIfHeld(idx, spec) {
			continue
		}
		return idx, spec, true
	}
}

func (e *engine) wakeHosts(now time.Time) {
	for len(e.sleeping) > 0 && !e.sleeping[0].wakeAt.After(now) {
		h := heap.Pop(&e.sleeping).(*host)
		h.inSleep = false
		e.refreshHost(h, now)
	}
}

func (e *engine) eligibleConn(c *fetcherConn) bool {
	return !c.closed && !c.draining && c.credits > 0
}

func (e *engine) pickConn() *fetcherConn {
	n := len(e.conns)
	for i := 0; i < n; i++ {
		c := e.conns[(e.rr+i)%n]
		if e.eligibleConn(c) {
			e.rr = (e.rr + i + 1) % n
			return c
		}
	}
	return nil
}

// assign leases paper idx of host h to c: at once with a credit of c, or as the successor of
// c's lease after (prefetch.go), consuming no credit and no host slot yet. It returns the lease.
func (e *engine) assign(idx uint32, h *host, c *fetcherConn, spec *pb.PaperSpec, after *lease, now time.Time) *lease {
	p := &e.papers[idx]
	b := e.batches[p.batch]
	p.attempts++
	cands, resolve := e.candidatesOf(idx, spec)
	u := cands[int(p.urlIdx)%len(cands)]
	l := &lease{
		idx: idx, attempt: p.attempts, batch: p.batch, conn: c, assignedAt: now, readyAt: now, renewedAt: now,
		url: u, paperID: spec.GetPaperId(), resolve: resolve,
	}
	afterID := ""
	if after != nil {
		l.successor, l.pred, after.succ = true, after, l
		c.waiting++
		e.stealGen++
		e.m.successorsAssigned.Inc()
		afterID = after.id
	} else {
		l.counted = true
		c.credits--
		e.credits--
		h.active++
		h.lastStart = now
		e.noteCandidate(c, l)
	}
	e.noteLeaseDue(l)
	e.holdKeys(l)
	e.leases[idx] = l
	c.leases[idx] = l
	e.setState(idx, stateDownloading, now)
	id := e.ids.issue(idx, l.attempt, c.id)
	l.id = id
	expires := now.Add(e.cfg.LeaseTTL)
	m := &assignMsg{
		assign: pb.Assign{
			LeaseId:        id,
			BatchId:        b.id,
			PaperId:        l.paperID,
			Url:            u,
			CandidateUrls:  cands,
			Attempt:        int32(l.attempt),
			ExpectedSha256: spec.GetExpectedSha256(),
			Limits:         e.limits,
			Resolve:        resolve,
			AfterLeaseId:   afterID,
		},
		expires: timestamppb.Timestamp{Seconds: expires.Unix(), Nanos: int32(expires.Nanosecond())},
	}
	m.assign.LeaseExpiresAt = &m.expires
	m.kind.Assign = &m.assign
	m.resp.Msg = &m.kind
	e.out = append(e.out, outMsg{c: c, m: &m.resp})
	if e.debug() {
		e.log.Debug("assign", "batch", b.id, "paper", l.paperID, "lease", id, "fetcher", c.id, "url", redact.URL(u),
			"attempt", l.attempt, "after", afterID)
	}
	return l
}

// assignMsg is an Assign message in one allocation instead of four.
type assignMsg struct {
	resp    pb.WorkResponse
	kind    pb.WorkResponse_Assign
	assign  pb.Assign
	expires timestamppb.Timestamp
}
