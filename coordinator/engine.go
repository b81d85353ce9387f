package coordinator

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/redact"
)

// engine is the coordinator's state machine. It is driven by exactly one goroutine (the
// loop, or a test): every method runs on that goroutine and nothing in it is locked.
//
// One iteration: apply messages (they mutate memory, mark what changed and queue outputs),
// schedule (lease queued papers to fetchers with credit), commit (one store transaction),
// then flush (send the queued outputs). Outputs are only sent after the commit, so nothing is
// acknowledged, assigned or replied before it is durable.
type engine struct {
	cfg Config
	st  *store
	log *slog.Logger
	m   *metrics
	rnd *rand.Rand

	papers     []paperRec
	batches    []*batch
	batchByID  map[string]uint32
	byBatch    map[uint64]uint32 // batchKey(idHash, batch) -> paper
	overflow   map[string]uint32 // (batch, paper id) -> paper, for the rare hash collisions
	cacheByID  map[uint64]uint32 // paper id hash -> a SUCCEEDED paper
	cacheByURL map[uint64]uint32 // URL hash -> a SUCCEEDED paper fetched from it
	hosts      []*host
	hostByName map[string]uint32
	ready      hostRing
	sleeping   hostHeap
	retry      retryHeap
	leases     map[uint32]*lease
	orphans    map[uint32]*lease
	graceUntil time.Time
	conns      []*fetcherConn
	rr         int
	credits    int // sum of the credits of conns that may receive work
	counts     [numStates]int64
	watched    map[uint32]*batch // batches with watchers
	ids        leaseIDs          // issues and checks lease ids
	verify     bool              // completions are verified against the blob store
	verifyCh   chan<- verifyJob  // to the verifiers (see verify.go)
	// Lease deadlines (deadline.go).
	limits          *pb.DownloadLimits // sent in every Assign; Timeout always set
	downloadTimeout time.Duration      // limits.Timeout
	nextLeaseScan   time.Time          // zero: no lease

	// Deletion (delete.go): blobs released and awaiting the collector, when blobs were
	// collected (for leases older than that), the collector's queue, the next retention check.
	gcPending     map[string]struct{}
	gcDone        map[string]time.Time
	gcQueue       []string
	gcCh          chan<- []string
	damaged       map[string]struct{} // blobs ReadPaper found damaged (damaged.go)
	nextRetention time.Time
	deletions     []*deletion // batches being deleted, a slice per iteration
	deleteSlice   int         // papers deleted per iteration; 0: defaultDeleteSlice

	// Per-iteration state.
	rtx          *bolt.Tx
	dirty        []uint32
	cold         map[uint32]*coldUpdate
	newPapers    []newPaper
	pendingSpecs map[uint32][]byte
	pendingPlans map[uint32]*plan // plans changed in this iteration (read-your-writes)
	ws           writeSet
	out          []outMsg
	replies      []func()
	cacheAdds    []cacheAdd
	finalBatches []*batch
	verifyQueue  []verifyJob // completions waiting for a free verifier
}

type newPaper struct {
	idx       uint32
	idHash    uint64
	createdAt int64
}

type outMsg struct {
	c *fetcherConn
	m *pb.WorkResponse
}

type cacheAdd struct {
	idx             uint32
	idHash, urlHash uint64
}

// errInternal marks failures of the coordinator itself (store corruption...).
var errInternal = errors.New("internal error")

func newEngine(cfg Config, st *store, m *metrics) *engine {
	e := &engine{
		cfg:          cfg,
		st:           st,
		ids:          leaseIDs{storeID: st.id, key: st.leaseKey},
		verify:       cfg.Bucket != nil,
		limits:       cfg.assignLimits(),
		log:          cfg.Logger,
		m:            m,
		rnd:          rand.New(cfg.Rand),
		batchByID:    make(map[string]uint32),
		byBatch:      make(map[uint64]uint32),
		overflow:     make(map[string]uint32),
		cacheByID:    make(map[uint64]uint32),
		cacheByURL:   make(map[uint64]uint32),
		hostByName:   make(map[string]uint32),
		leases:       make(map[uint32]*lease),
		orphans:      make(map[uint32]*lease),
		watched:      make(map[uint32]*batch),
		gcPending:    make(map[string]struct{}),
		gcDone:       make(map[string]time.Time),
		cold:         make(map[uint32]*coldUpdate),
		pendingSpecs: make(map[uint32][]byte),
		pendingPlans: make(map[uint32]*plan),
	}
	e.downloadTimeout = e.limits.GetTimeout().AsDuration()
	return e
}

// debug reports whether debug logs are wanted (to skip building their attributes).
func (e *engine) debug() bool { return e.log.Enabled(context.Background(), slog.LevelDebug) }

// ---- store reads during an iteration ----

func (e *engine) readTx() (*bolt.Tx, error) {
	if e.rtx == nil {
		tx, err := e.st.db.Begin(false)
		if err != nil {
			return nil, fmt.Errorf("begin read: %w", err)
		}
		e.rtx = tx
	}
	return e.rtx, nil
}

func (e *engine) endReads() {
	if e.rtx != nil {
		_ = e.rtx.Rollback()
		e.rtx = nil
	}
}

// specOf returns a paper's spec (pending or committed).
func (e *engine) specOf(idx uint32) (*pb.PaperSpec, error) {
	raw, ok := e.pendingSpecs[idx]
	if !ok {
		tx, err := e.readTx()
		if err != nil {
			return nil, err
		}
		raw = tx.Bucket([]byte(bucketSpecs)).Get(key32(idx))
		if raw == nil {
			return nil, fmt.Errorf("%w: spec of paper %d missing", errInternal, idx)
		}
	}
	spec := &pb.PaperSpec{}
	if err := proto.Unmarshal(raw, spec); err != nil {
		return nil, fmt.Errorf("%w: spec of paper %d: %w", errInternal, idx, err)
	}
	return spec, nil
}

// committedRecord returns a paper's committed record.
func (e *engine) committedRecord(idx uint32) (*paperRecord, *pb.PaperSpec, error) {
	tx, err := e.readTx()
	if err != nil {
		return nil, nil, err
	}
	var rec paperRecord
	spec := &pb.PaperSpec{}
	if err := readPaperTx(tx, idx, &rec, spec); err != nil {
		return nil, nil, err
	}
	return &rec, spec, nil
}

// ---- hosts ----

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
	for uint32(len(e.hosts)) <= i {
		e.hosts = append(e.hosts, nil)
	}
	e.hosts[i] = h
	e.hostByName[name] = i
}

// refreshHost puts h in the ready ring or the sleeping heap when it has work and may start
// a request now or later. Hosts at their concurrency limit are refreshed when a lease ends.
func (e *engine) refreshHost(h *host, now time.Time) {
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
		e.ready.push(h)
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

// ---- paper state ----

func (e *engine) markDirty(idx uint32) {
	p := &e.papers[idx]
	if p.flags&flagDirty == 0 {
		p.flags |= flagDirty
		e.dirty = append(e.dirty, idx)
	}
}

func (e *engine) coldOf(idx uint32) *coldUpdate {
	c := e.cold[idx]
	if c == nil {
		c = &coldUpdate{}
		e.cold[idx] = c
	}
	return c
}

func (e *engine) setError(idx uint32, msg string) {
	c := e.coldOf(idx)
	c.setError = true
	c.lastError = msg
}

// setState moves a paper to state s, keeping the counts, the batch and watchers current.
func (e *engine) setState(idx uint32, s uint8, now time.Time) {
	p := &e.papers[idx]
	b := e.batches[p.batch]
	e.markDirty(idx)
	if p.state == s {
		return
	}
	if terminal(p.state) {
		panic(fmt.Sprintf("coordinator: paper %d leaves terminal state %d for %d", idx, p.state, s))
	}
	b.counts[p.state]--
	b.counts[s]++
	e.counts[p.state]--
	e.counts[s]++
	p.state = s
	if s == stateFailed {
		b.failedBy[reasonIndex(p.reason)]++
	}
	e.notePaper(b, idx)
	if terminal(s) {
		p.aux = now.UnixNano()
		e.checkBatchDone(b, now)
	}
}

func (e *engine) notePaper(b *batch, idx uint32) {
	b.changed = true
	if b.watchPapers > 0 {
		if b.updates == nil {
			b.updates = make(map[uint32]struct{})
		}
		b.updates[idx] = struct{}{}
	}
}

func (e *engine) markBatch(b *batch) {
	e.ws.batches = append(e.ws.batches, batchWrite{idx: b.idx, rec: b.record()})
	b.changed = true
}

func (e *engine) checkBatchDone(b *batch, now time.Time) {
	if b.state == pb.BatchState_BATCH_STATE_RUNNING && b.live() == 0 {
		b.state = pb.BatchState_BATCH_STATE_COMPLETED
		b.finishedAt = now
		e.markBatch(b)
		e.finalBatches = append(e.finalBatches, b)
		e.log.Info("batch completed", "batch", b.id, "papers", b.total,
			"succeeded", b.counts[stateSucceeded], "failed", b.counts[stateFailed], "cancelled", b.counts[stateCancelled])
		return
	}
	// A cancelled batch settles when its last aborted download is confirmed: only then do its
	// watchers get their last message, with the final counts.
	if b.state == pb.BatchState_BATCH_STATE_CANCELLED && b.live() == 0 && len(b.watchers) > 0 {
		e.finalBatches = append(e.finalBatches, b)
	}
}

// enqueue makes a live paper QUEUED on its current host (or CANCELLED if its batch is).
func (e *engine) enqueue(idx uint32, now time.Time) {
	p := &e.papers[idx]
	b := e.batches[p.batch]
	if b.state == pb.BatchState_BATCH_STATE_CANCELLED {
		e.setError(idx, cancelMessage(b))
		e.setState(idx, stateCancelled, now)
		return
	}
	e.setState(idx, stateQueued, now)
	h := e.hosts[p.host]
	h.push(idx)
	e.refreshHost(h, now)
}

func cancelMessage(b *batch) string {
	if b.cancelReason != "" {
		return "cancelled: " + b.cancelReason
	}
	return "cancelled"
}

// ---- cache ----

// cacheLookup finds a SUCCEEDED paper with the same id or one of the URLs whose blob can be
// reused. Hits of the in-memory hash indexes are verified against the store.
func (e *engine) cacheLookup(paperID string, urls []string, expected string) (*paperRecord, bool) {
	check := func(idx uint32, match func(*paperRecord, *pb.PaperSpec) bool) (*paperRecord, bool) {
		rec, spec, err := e.committedRecord(idx)
		if err != nil {
			e.log.Error("cache lookup", "paper_index", idx, "err", err)
			return nil, false
		}
		if rec.state != stateSucceeded || !e.blobUsable(rec.blobKey) || !match(rec, spec) {
			return nil, false
		}
		if expected != "" && !strings.EqualFold(expected, rec.sha256) {
			return nil, false
		}
		return rec, true
	}
	if idx, ok := e.cacheByID[hashString(paperID)]; ok {
		if rec, ok := check(idx, func(_ *paperRecord, s *pb.PaperSpec) bool { return s.GetPaperId() == paperID }); ok {
			return rec, true
		}
	}
	for _, u := range urls {
		idx, ok := e.cacheByURL[hashString(u)]
		if !ok {
			continue
		}
		if rec, ok := check(idx, func(_ *paperRecord, s *pb.PaperSpec) bool {
			for _, su := range s.GetUrls() {
				if su == u {
					return true
				}
			}
			return false
		}); ok {
			return rec, true
		}
	}
	return nil, false
}

// completeCached makes a live paper SUCCEEDED as a cache hit of rec.
func (e *engine) completeCached(idx uint32, rec *paperRecord, now time.Time) {
	p := &e.papers[idx]
	b := e.batches[p.batch]
	p.flags |= flagCached
	c := e.coldOf(idx)
	c.success = true
	c.size, c.sha256, c.blobKey, c.finalURL, c.ctype = rec.size, rec.sha256, rec.blobKey, rec.finalURL, rec.contentType
	c.source = rec.source
	c.urlHash, c.finalHash = rec.urlHash, rec.finalHash
	b.cached++
	b.bytesStored += rec.size
	e.m.cacheHits.Inc()
	e.setState(idx, stateSucceeded, now)
}

// ---- scheduling ----

// schedule leases queued papers to fetchers while there is credit and a host may start.
func (e *engine) schedule(now time.Time) {
	e.wakeHosts(now)
	for e.credits > 0 {
		h := e.ready.pop()
		if h == nil {
			return
		}
		h.inReady = false
		if !e.hostEligible(h, now) {
			e.refreshHost(h, now)
			continue
		}
		idx, ok := h.pop(e.papers)
		if !ok {
			continue
		}
		spec, err := e.specOf(idx)
		if err != nil {
			e.log.Error("schedule: read spec", "paper_index", idx, "err", err)
			e.setError(idx, "internal error: "+err.Error())
			e.setState(idx, stateFailed, now)
			e.refreshHost(h, now)
			continue
		}
		if rec, hit := e.cacheLookupPaper(idx, spec); hit {
			e.completeCached(idx, rec, now)
			e.refreshHost(h, now)
			continue
		}
		if h.br.gaveUp(now) && h.pausedUntil.After(now) {
			e.failFast(idx, h, spec.GetPaperId(), now)
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
		e.assign(idx, h, c, spec, now)
		e.refreshHost(h, now)
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

func (e *engine) assign(idx uint32, h *host, c *fetcherConn, spec *pb.PaperSpec, now time.Time) {
	p := &e.papers[idx]
	b := e.batches[p.batch]
	p.attempts++
	cands, resolve := e.candidatesOf(idx, spec)
	u := cands[int(p.urlIdx)%len(cands)]
	l := &lease{
		idx: idx, attempt: p.attempts, batch: p.batch, conn: c, assignedAt: now, renewedAt: now,
		url: u, paperID: spec.GetPaperId(), resolve: resolve,
	}
	e.noteLeaseDue(l)
	e.leases[idx] = l
	c.leases[idx] = l
	c.credits--
	e.credits--
	h.active++
	h.lastStart = now
	e.setState(idx, stateDownloading, now)
	id := e.ids.issue(idx, l.attempt, c.id)
	l.id = id
	e.out = append(e.out, outMsg{c: c, m: &pb.WorkResponse{Msg: &pb.WorkResponse_Assign{Assign: &pb.Assign{
		LeaseId:        id,
		BatchId:        b.id,
		PaperId:        l.paperID,
		Url:            u,
		CandidateUrls:  cands,
		Attempt:        int32(l.attempt),
		ExpectedSha256: spec.GetExpectedSha256(),
		Limits:         e.limits,
		LeaseExpiresAt: timestamppb.New(now.Add(e.cfg.LeaseTTL)),
		Resolve:        resolve,
	}}}})
	if e.debug() {
		e.log.Debug("assign", "batch", b.id, "paper", l.paperID, "lease", id, "fetcher", c.id, "url", redact.URL(u), "attempt", l.attempt)
	}
}

// endLease forgets a lease and frees its host slot.
func (e *engine) endLease(l *lease, now time.Time) {
	delete(e.leases, l.idx)
	delete(e.orphans, l.idx)
	if l.conn != nil {
		delete(l.conn.leases, l.idx)
	}
	h := e.hosts[e.papers[l.idx].host]
	h.active--
	e.refreshHost(h, now)
}

// requeue puts a DOWNLOADING paper whose lease was lost back in its host queue. A lost lease
// is usually not the paper's fault and does not count against MaxAttempts; but a paper that
// loses lease after lease (one that crashes its fetchers, say) fails after 4×MaxAttempts
// attempts in all.
func (e *engine) requeue(l *lease, why string, now time.Time) {
	e.endLease(l, now)
	p := &e.papers[l.idx]
	if int(p.attempts) >= 4*e.cfg.MaxAttempts && e.batches[l.batch].state != pb.BatchState_BATCH_STATE_CANCELLED {
		p.reason = uint8(pb.FailureReason_FAILURE_REASON_ATTEMPTS_EXHAUSTED)
		e.setError(l.idx, fmt.Sprintf("gave up after %d attempts; the last lease was lost: %s", p.attempts, why))
		e.setState(l.idx, stateFailed, now)
		return
	}
	if e.debug() {
		e.log.Debug("lease re-queued", "batch", e.batches[l.batch].id, "paper", l.paperID,
			"lease", l.name(), "reason", why)
	}
	e.enqueue(l.idx, now)
}

func (e *engine) sendCancel(c *fetcherConn, l *lease, reason string) {
	if c == nil || c.closed {
		return
	}
	l.cancelSent = true
	e.out = append(e.out, outMsg{c: c, m: &pb.WorkResponse{Msg: &pb.WorkResponse_Cancel{Cancel: &pb.Cancel{
		LeaseId: l.id, Reason: reason,
	}}}})
}

func (e *engine) ack(c *fetcherConn, leaseID string, seq int64) {
	if c == nil {
		return
	}
	e.out = append(e.out, outMsg{c: c, m: &pb.WorkResponse{Msg: &pb.WorkResponse_Ack{Ack: &pb.Ack{LeaseId: leaseID, Sequence: seq}}}})
}

// ---- timers ----

// advance handles everything due at now: retry timers, lease expiry, the reconnect grace.
func (e *engine) advance(now time.Time) {
	ns := now.UnixNano()
	for len(e.retry) > 0 && e.retry[0].at <= ns {
		it := heap.Pop(&e.retry).(retryItem)
		p := &e.papers[it.idx]
		if p.state != stateRetryWait || p.aux != it.at {
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

func mapValues(m map[uint32]*lease) []*lease {
	out := make([]*lease, 0, len(m))
	for _, l := range m {
		out = append(out, l)
	}
	return out
}

// nextWake is when advance or schedule next has something to do (zero: nothing pending).
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
	if len(e.deletions) > 0 {
		earliest(time.Unix(0, 0)) // now: the next slice
	}
	return t
}

// ---- commit and flush ----

// pending reports whether the iteration has anything to commit or send.
func (e *engine) pending() bool {
	return len(e.dirty) > 0 || len(e.newPapers) > 0 || !e.ws.empty() || len(e.out) > 0 ||
		len(e.replies) > 0 || len(e.cacheAdds) > 0 || len(e.finalBatches) > 0
}

// commit writes everything the iteration changed in one transaction.
func (e *engine) commit() error {
	e.endReads()
	for _, np := range e.newPapers {
		p := &e.papers[np.idx]
		rec := paperRecord{idHash: np.idHash, createdAt: np.createdAt}
		rec.setHot(p)
		e.applyCold(&rec, np.idx)
		w := newPaperWrite{idx: np.idx, rec: rec.marshalFixed(make([]byte, 0, recordFixed)), spec: e.pendingSpecs[np.idx]}
		if rec.hasResults() {
			w.results = rec.marshalResults(nil)
		}
		if rec.state == stateSucceeded && rec.blobKey != "" {
			e.ws.newRefs = append(e.ws.newRefs, rec.blobKey)
		}
		e.ws.newPapers = append(e.ws.newPapers, w)
		p.flags &^= flagDirty
	}
	for _, idx := range e.dirty {
		p := &e.papers[idx]
		if p.flags&flagDirty == 0 {
			continue // written as a new paper
		}
		p.flags &^= flagDirty
		c := e.cold[idx]
		if c != nil && c.success && c.blobKey != "" {
			e.ws.newRefs = append(e.ws.newRefs, c.blobKey)
		}
		e.ws.dirty = append(e.ws.dirty, dirtyWrite{idx: idx, hot: *p, cold: c})
	}
	if e.ws.empty() {
		e.resetWrites()
		return nil
	}
	start := time.Now()
	n := e.ws.size()
	err := e.st.commit(&e.ws)
	e.m.commitSeconds.Observe(time.Since(start).Seconds())
	e.m.commitRecords.Observe(float64(n))
	if err == nil {
		e.noteCollectable(e.ws.released)
	}
	e.resetWrites()
	return err
}

func (e *engine) applyCold(rec *paperRecord, idx uint32) {
	c := e.cold[idx]
	if c == nil {
		return
	}
	if c.setError {
		rec.lastError = c.lastError
	}
	if c.success {
		rec.size, rec.sha256, rec.blobKey = c.size, c.sha256, c.blobKey
		rec.finalURL, rec.contentType = c.finalURL, c.ctype
		rec.urlHash, rec.finalHash = c.urlHash, c.finalHash
		rec.source = c.source
	}
}

func (e *engine) resetWrites() {
	e.ws.reset()
	e.dirty = e.dirty[:0]
	e.newPapers = e.newPapers[:0]
	clear(e.cold)
	clear(e.pendingSpecs)
	clear(e.pendingPlans)
}

// flush sends what the committed iteration produced: fetcher messages, replies, cache index
// updates and watcher updates.
func (e *engine) flush(now time.Time) {
	for _, a := range e.cacheAdds {
		e.cacheByID[a.idHash] = a.idx
		if a.urlHash != 0 {
			e.cacheByURL[a.urlHash] = a.idx
		}
	}
	e.cacheAdds = e.cacheAdds[:0]
	if len(e.verifyQueue) > 0 {
		e.pushVerifies()
	}
	if len(e.gcQueue) > 0 {
		e.pushCollections()
	}
	out := e.out
	e.out = nil
	for _, o := range out {
		if o.c.closed {
			continue
		}
		if !o.c.send(o.m) {
			e.log.Warn("fetcher stream buffer full; breaking the stream", "fetcher", o.c.id)
			o.c.kill(errStreamOverflow)
			e.dropConn(o.c, "send buffer full", now)
		}
	}
	for _, r := range e.replies {
		r()
	}
	e.replies = e.replies[:0]
	e.publish(now, false)
}

var errStreamOverflow = errors.New("coordinator send buffer full")

// ---- fetcher conns ----

// dropConn forgets a conn and re-queues its leases (a broken stream).
func (e *engine) dropConn(c *fetcherConn, why string, now time.Time) {
	if c.closed {
		return
	}
	if e.eligibleConn(c) {
		e.credits -= c.credits
	}
	c.closed = true
	requeued := len(c.leases)
	for _, l := range mapValues(c.leases) {
		e.requeue(l, why, now)
	}
	for i, x := range e.conns {
		if x == c {
			e.conns = append(e.conns[:i], e.conns[i+1:]...)
			break
		}
	}
	if e.rr >= len(e.conns) {
		e.rr = 0
	}
	e.log.Info("fetcher disconnected", "fetcher", c.id, "boot", c.boot, "reason", why, "requeued", requeued)
}

// ---- watchers ----

// publish posts updates to the watchers of changed batches (at most every WatchInterval per
// batch unless force or the batch finished).
func (e *engine) publish(now time.Time, force bool) {
	if len(e.watched) == 0 {
		e.finalBatches = e.finalBatches[:0]
		return
	}
	for _, b := range e.finalBatches {
		if len(b.watchers) > 0 {
			e.publishBatch(b, now, true)
		}
	}
	e.finalBatches = e.finalBatches[:0]
	for _, b := range e.watched {
		if !b.changed || (!force && now.Sub(b.lastPublish) < e.cfg.WatchInterval) {
			if force {
				e.pruneWatchers(b)
			}
			continue
		}
		e.publishBatch(b, now, false)
	}
}

// pruneWatchers forgets the watchers whose clients went away.
func (e *engine) pruneWatchers(b *batch) {
	kept := b.watchers[:0]
	for _, w := range b.watchers {
		if w.gone.Load() {
			e.unwatch(b, w)
			continue
		}
		kept = append(kept, w)
	}
	e.keepWatchers(b, kept)
}

func (e *engine) publishBatch(b *batch, now time.Time, final bool) {
	b.changed = false
	b.lastPublish = now
	var papers []uint32
	if len(b.updates) > 0 {
		papers = make([]uint32, 0, len(b.updates))
		for idx := range b.updates {
			papers = append(papers, idx)
		}
		clear(b.updates)
	}
	bps, active := e.activeOf(b, b.watchPapers > 0)
	bp := b.proto(bps)
	var hosts []*pb.HostState
	var omitted int32
	if b.watchPapers > 0 {
		hosts, omitted = e.hostStates(b, now)
	}
	kept := b.watchers[:0]
	for _, w := range b.watchers {
		if w.gone.Load() {
			e.unwatch(b, w)
			continue
		}
		w.setHosts(hosts, omitted)
		if !w.post(false, bp, papers, active, final) {
			e.unwatch(b, w)
			continue
		}
		if final {
			e.unwatch(b, w)
			continue
		}
		kept = append(kept, w)
	}
	e.keepWatchers(b, kept)
}

// keepWatchers makes kept (a prefix-compacted b.watchers) the batch's watchers, clearing the
// dropped tail for the garbage collector; a batch left without watchers stops being watched.
func (e *engine) keepWatchers(b *batch, kept []*watcher) {
	clear(b.watchers[len(kept):])
	b.watchers = kept
	if len(b.watchers) == 0 {
		delete(e.watched, b.idx)
		b.updates = nil
		b.dropHostStates()
	}
}

func (e *engine) unwatch(b *batch, w *watcher) {
	if w.includePapers {
		b.watchPapers--
	}
}

// activeOf returns a batch's aggregate speed and, when wanted, its running downloads (at most
// maxActiveListed of them).
func (e *engine) activeOf(b *batch, want bool) (float64, []*pb.ActiveDownload) {
	if b.counts[stateDownloading] == 0 {
		return 0, nil
	}
	var bps float64
	var active []*pb.ActiveDownload
	for _, l := range e.leases {
		if l.batch != b.idx {
			continue
		}
		bps += l.bps
		if want && len(active) < maxActiveListed {
			active = append(active, &pb.ActiveDownload{
				PaperId: l.paperID, Url: l.url, Bytes: l.bytes, Total: l.total,
				BytesPerSecond: l.bps, Attempt: int32(l.attempt),
			})
		}
	}
	return bps, active
}

// batchProto returns a batch's wire form with its current speed.
func (e *engine) batchProto(b *batch) *pb.Batch {
	bps, _ := e.activeOf(b, false)
	return b.proto(bps)
}
