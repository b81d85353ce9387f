package coordinator

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// propModel is what the property test remembers of the fetchers' side.
type propModel struct {
	h        *engHarness
	conns    []*fetcherConn
	open     []*propLease // leases the fetchers still hold
	history  []*propLease // every lease ever assigned
	terminal map[uint32]uint8
	batches  int
	// fold: the model fetchers that fold messages (Hello.fold_events, step 8 of the
	// protocol): they fold started events into later ones and credits into events.
	fold map[*fetcherConn]bool
	// credits: what each model fetcher's coordinator credit must be: the Hello's slots, plus
	// every credit sent (in Credits messages or folded into events) on the open stream,
	// minus every Assign without after_lease_id.
	credits map[*fetcherConn]int
	// cancelled: the lease ids the coordinator sent a Cancel for; reclaims counts the
	// successors reclaimed for idle streams (prefetch.go), to see the draws reach them.
	cancelled map[string]bool
	reclaims  int
}

type propLease struct {
	a    *pb.Assign
	conn *fetcherConn
	seq  int64
	// started: the coordinator was told the download started (a started event, or one folded
	// into a later event); held: the model fetcher holds its started event back to fold it.
	started, held bool
	// received: the model fetcher reported the body received (its HTTP exchange is over).
	received bool
	// pred: the predecessor of a prefetched successor (Assign.after_lease_id); ended: the
	// model fetcher sent its terminal event.
	pred  *propLease
	ended bool
}

// released reports whether the model fetcher may start l: not a successor, or one whose
// predecessor's body is in.
func (l *propLease) released() bool { return l.pred == nil || l.pred.received }

func (m *propModel) collect() {
	for _, c := range m.conns {
		as, cancels, _ := recv(c)
		for _, id := range cancels {
			m.cancelled[id] = true
		}
		for _, a := range as {
			if _, ok := m.credits[c]; ok && a.GetAfterLeaseId() == "" {
				m.credits[c]--
			}
			l := &propLease{a: a, conn: c}
			if after := a.GetAfterLeaseId(); after != "" {
				for _, p := range m.open {
					if p.a.GetLeaseId() == after && p.conn == c {
						l.pred = p
					}
				}
				if l.pred == nil {
					panic(fmt.Sprintf("successor %s of %s, not an open lease of its stream", a.GetLeaseId(), after))
				}
			}
			m.open = append(m.open, l)
			m.history = append(m.history, l)
		}
	}
}

func (m *propModel) liveConns() []*fetcherConn {
	var out []*fetcherConn
	for _, c := range m.conns {
		if !c.closed {
			out = append(out, c)
		}
	}
	return out
}

func (m *propModel) send(c *fetcherConn, r *pb.WorkRequest) {
	if _, ok := m.credits[c]; ok && !c.closed {
		m.credits[c] = min(m.credits[c]+int(r.GetCredits().GetCredits())+int(r.GetFoldedCredits()), maxCredits)
	}
	m.h.send(c, r)
	m.collect()
}

// sendEvent sends ev of l; a model fetcher that folds folds l's start into it (when it was
// not reported yet) and, when credit is set, the credit of a freed slot; otherwise that
// credit goes in a Credits message after it.
func (m *propModel) sendEvent(t *rapid.T, l *propLease, ev *pb.DownloadEvent, credit bool) {
	l.seq++
	r := eventReq(l.a, l.seq, ev)
	if ev.GetStarted() != nil {
		l.started, l.held = true, false
	} else if !l.started && (l.held || m.fold[l.conn] && rapid.Bool().Draw(t, "foldStart")) {
		ev.FoldedStart = true
		l.started, l.held = true, false
	}
	foldCredit := credit && m.fold[l.conn] && rapid.Bool().Draw(t, "foldCredit")
	if foldCredit {
		r.FoldedCredits = 1
	}
	m.send(l.conn, r)
	if credit && !foldCredit {
		m.send(l.conn, creditsReq(1))
	}
}

// startLease reports that l started: a started event, or (a model fetcher that folds, at
// times) nothing yet: the start is held, to be folded into l's next event or sent on its own
// before time passes (a fetcher holds a start for at most Welcome.start_hold).
func (m *propModel) startLease(t *rapid.T, l *propLease) {
	if m.fold[l.conn] && rapid.Bool().Draw(t, "holdStart") {
		l.held = true
		return
	}
	m.sendEvent(t, l, startedEv(l.a), false)
}

// sendHeldStarts sends the started events held back, before time passes.
func (m *propModel) sendHeldStarts(t *rapid.T) {
	for _, l := range m.open {
		if l.held && !l.started && !l.conn.closed {
			m.sendEvent(t, l, startedEv(l.a), false)
		}
	}
}

var propHosts = []string{"a.example", "b.example", "c.example"}

func (m *propModel) drawPapers(t *rapid.T) []*pb.PaperSpec {
	n := rapid.IntRange(1, 4).Draw(t, "papers")
	seen := map[string]bool{}
	var papers []*pb.PaperSpec
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("p%d", rapid.IntRange(0, 12).Draw(t, "id"))
		if seen[id] {
			continue
		}
		seen[id] = true
		// A third of the papers have a DOI (three DOIs, one spelled two ways: papers share
		// them), with 0 to 3 URLs; the others 1 to 3 URLs.
		doi := rapid.SampledFrom([]string{"", "", "", "", "", "", "10.1000/d0", "doi:10.1000/D0", "10.1000/d1"}).Draw(t, "doi")
		nu := rapid.IntRange(1, 3).Draw(t, "urls")
		if doi != "" {
			nu--
		}
		var urls []string
		for j := 0; j < nu; j++ {
			urls = append(urls, fmt.Sprintf("https://%s/%s/%d.pdf", rapid.SampledFrom(propHosts).Draw(t, "host"), id, j))
		}
		papers = append(papers, &pb.PaperSpec{PaperId: id, Urls: urls, Doi: doi})
	}
	return papers
}

func (m *propModel) submit(t *rapid.T) {
	papers := m.drawPapers(t)
	m.batches++
	res := m.h.submit(fmt.Sprintf("b%d", m.batches), papers)
	if res.err != nil {
		t.Fatalf("submit: %v", res.err)
	}
	m.collect()
}

// burst submits a batch of 3 to 8 papers of one host, one URL each: more than its running
// downloads, so that prefetch windows fill with chains of successors (prefetch.go).
func (m *propModel) burst(t *rapid.T) {
	host := rapid.SampledFrom(propHosts).Draw(t, "burstHost")
	var papers []*pb.PaperSpec
	for i := range rapid.IntRange(3, 8).Draw(t, "burstPapers") {
		papers = append(papers, &pb.PaperSpec{PaperId: fmt.Sprintf("q%d", i), Urls: []string{fmt.Sprintf("https://%s/q/%d.pdf", host, i)}})
	}
	m.batches++
	if res := m.h.submit(fmt.Sprintf("b%d", m.batches), papers); res.err != nil {
		t.Fatalf("submit: %v", res.err)
	}
	m.collect()
}

// chunked creates a chunked batch, or appends a chunk to an open one, or seals it.
func (m *propModel) chunked(t *rapid.T) {
	var open []*batch
	for _, b := range m.h.e.batches {
		if b != nil && b.chunked && b.state == pb.BatchState_BATCH_STATE_OPEN {
			open = append(open, b)
		}
	}
	if len(open) == 0 || rapid.IntRange(0, 3).Draw(t, "newChunked") == 0 {
		m.batches++
		r := &submitReq{op: opCreate, batchID: fmt.Sprintf("b%d", m.batches), reply: make(chan submitResult, 1)}
		m.h.apply(r)
		if res := <-r.reply; res.err != nil {
			t.Fatalf("create: %v", res.err)
		}
		return
	}
	b := rapid.SampledFrom(open).Draw(t, "open")
	if rapid.Bool().Draw(t, "seal") {
		r := &submitReq{op: opSeal, batchID: b.id, chunkCount: int64(len(b.chunks)), reply: make(chan submitResult, 1)}
		m.h.apply(r)
		if res := <-r.reply; res.err != nil {
			t.Fatalf("seal: %v", res.err)
		}
		m.collect()
		return
	}
	pp, sum, err := preparePapers("papers", m.drawPapers(t))
	if err != nil {
		t.Fatal(err)
	}
	r := &submitReq{op: opAppend, batchID: b.id, papers: pp, hash: sum, chunkIndex: int64(len(b.chunks)), reply: make(chan submitResult, 1)}
	m.h.apply(r)
	if res := <-r.reply; res.err != nil && !errors.Is(res.err, errInvalid) { // ids may repeat across chunks
		t.Fatalf("append: %v", res.err)
	}
	m.collect()
}

func (m *propModel) event(t *rapid.T) {
	if len(m.open) == 0 {
		t.Skip("no open lease")
	}
	i := rapid.IntRange(0, len(m.open)-1).Draw(t, "lease")
	if preds := m.predecessors(); len(preds) > 0 && rapid.Bool().Draw(t, "predecessor") {
		i = rapid.SampledFrom(preds).Draw(t, "pred") // successors run more often than an even draw would let them
	}
	l := m.open[i]
	if l.conn.closed {
		m.open = append(m.open[:i], m.open[i+1:]...)
		return
	}
	if !l.released() {
		// A waiting successor: the model fetcher starts it only once its predecessor's body
		// is in; it may hand it back (a draining fetcher, a predecessor that failed), and
		// does when the coordinator cancelled it (a successor reclaimed for an idle stream).
		if l.pred.ended || m.cancelled[l.a.GetLeaseId()] || rapid.IntRange(0, 3).Draw(t, "handBack") == 0 {
			l.seq++ // never with a folded start: it never started
			m.send(l.conn, eventReq(l.a, l.seq, failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0, 0)))
			l.ended = true
			m.open = append(m.open[:i], m.open[i+1:]...)
		}
		return
	}
	var ev *pb.DownloadEvent
	term := true
	kind := rapid.IntRange(0, 8).Draw(t, "kind")
	if m.hasWaitingSuccessor(l) && rapid.IntRange(0, 3).Draw(t, "releaseSuccessor") > 0 {
		kind = 8
	}
	switch kind {
	case 0:
		if l.started || l.held {
			return
		}
		m.startLease(t, l)
		return
	case 1:
		ev, term = &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 100 * (l.seq + 1)}}}, false
	case 2, 3:
		ev = completedEv(l.a)
		if l.a.GetResolve() != nil {
			// A resolution step finds 0 to 2 candidates, which other papers' steps may find too.
			var found []string
			for j := rapid.IntRange(0, 2).Draw(t, "found"); j > 0; j-- {
				found = append(found, fmt.Sprintf("https://%s/found/%d.pdf", rapid.SampledFrom(propHosts).Draw(t, "host"), rapid.IntRange(0, 2).Draw(t, "copy")))
			}
			ev = resolvedEv(found...)
		}
	case 4:
		ev = failedEv(pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_NOT_FOUND, 404, 0)
	case 5:
		ev = failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_TIMEOUT, 0, 0)
	case 6:
		ra := time.Duration(rapid.IntRange(0, 3).Draw(t, "retryAfter")) * 40 * time.Minute
		ev = failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_RATE_LIMITED, 429, ra)
	case 7:
		ev = failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0, 0)
	case 8:
		// The HTTP exchange ended; the commit is pending (sent twice at times: the second
		// must change nothing). The slot's credit usually comes back with it.
		ev, term = &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 100, Total: 100, BodyReceived: true}}}, false
		first := !l.received
		l.received = true
		m.sendEvent(t, l, ev, first && rapid.Bool().Draw(t, "slotCredit"))
		return
	}
	credit := term && rapid.Bool().Draw(t, "credit")
	m.sendEvent(t, l, ev, credit)
	if term {
		l.ended = true
		m.open = append(m.open[:i], m.open[i+1:]...)
	}
}

// predecessors returns the indexes in m.open of the running leases a waiting successor
// follows (a waiting successor followed by another, a chain, runs only once released).
func (m *propModel) predecessors() []int {
	var out []int
	for i, l := range m.open {
		if l.released() && m.hasWaitingSuccessor(l) {
			out = append(out, i)
		}
	}
	return out
}

// chainHeads returns the predecessors (indexes in m.open, of preds) whose waiting successor
// has a waiting successor too.
func (m *propModel) chainHeads(preds []int) []int {
	var out []int
	for _, i := range preds {
		for _, l := range m.open {
			if l.pred == m.open[i] && m.hasWaitingSuccessor(l) {
				out = append(out, i)
				break
			}
		}
	}
	return out
}

func (m *propModel) hasWaitingSuccessor(p *propLease) bool {
	for _, l := range m.open {
		if l.pred == p && !p.received {
			return true
		}
	}
	return false
}

func (m *propModel) replay(t *rapid.T) {
	if len(m.history) == 0 {
		t.Skip("no lease yet")
	}
	l := rapid.SampledFrom(m.history).Draw(t, "old")
	live := m.liveConns()
	if len(live) == 0 {
		t.Skip("no conn")
	}
	c := rapid.SampledFrom(live).Draw(t, "conn")
	a := l.a
	if rapid.Bool().Draw(t, "wrongAttempt") {
		a = &pb.Assign{LeaseId: a.GetLeaseId(), Attempt: a.GetAttempt() + 1, BatchId: a.GetBatchId(), PaperId: a.GetPaperId(), Url: a.GetUrl()}
	}
	// Sequence numbers at or below the last one seen are duplicates.
	seq := int64(rapid.IntRange(0, int(max(l.seq, 1))).Draw(t, "seq"))
	m.send(c, eventReq(a, seq, completedEv(a)))
}

func (m *propModel) check(t *rapid.T) {
	m.collect() // Assigns of steps no action collected (their credits)
	e := m.h.e
	var counts = make([][numStates]int64, len(e.batches))
	downloading := 0
	for idx := range e.papers {
		p := &e.papers[idx]
		if *p == (memPaper{}) {
			continue // a paper of a deleted batch
		}
		if p.state == 0 || p.state >= numStates || e.batches[p.batch] == nil {
			t.Fatalf("paper %d in invalid state %d", idx, p.state)
		}
		counts[p.batch][p.state]++
		if s, ok := m.terminal[uint32(idx)]; ok && s != p.state {
			t.Fatalf("paper %d left terminal state %d for %d", idx, s, p.state)
		}
		if terminal(p.state) {
			m.terminal[uint32(idx)] = p.state
		}
		if p.state == stateDownloading {
			downloading++
			if e.leases[uint32(idx)] == nil {
				t.Fatalf("paper %d DOWNLOADING without a lease", idx)
			}
		}
	}
	for i, b := range e.batches {
		if b == nil || b.deleting {
			continue
		}
		if counts[i] != b.counts {
			t.Fatalf("batch %s counts %v, papers say %v", b.id, b.counts, counts[i])
		}
		var sum int64
		for _, n := range b.counts {
			sum += n
		}
		if sum != b.total {
			t.Fatalf("batch %s: %d papers counted, total %d", b.id, sum, b.total)
		}
		if b.state == pb.BatchState_BATCH_STATE_COMPLETED && b.live() != 0 {
			t.Fatalf("batch %s COMPLETED with live papers", b.id)
		}
		if b.state == pb.BatchState_BATCH_STATE_RUNNING && b.live() == 0 {
			t.Fatalf("batch %s RUNNING without live papers", b.id)
		}
	}
	if len(e.leases) != downloading {
		t.Fatalf("%d leases, %d papers downloading", len(e.leases), downloading)
	}
	// Per-host concurrency counts HTTP exchanges in flight: leases whose body was not
	// reported received.
	// After a restart, reloaded DOWNLOADING papers (orphans) count as exchanges until their
	// fetcher re-announces them (with body_received when only the commit is pending): that
	// may hold a host above its limit for a while, and blocks new requests meanwhile.
	// A prefetched successor holds no host slot while it waits for its predecessor's body
	// (the fetcher cannot start it before), and takes over the predecessor's then.
	perHost, live := map[uint32]int{}, map[uint32]int{}
	waiting := map[*fetcherConn]int{}
	for idx, l := range e.leases {
		if l.idx != idx || e.papers[idx].state != stateDownloading {
			t.Fatalf("lease for paper %d in state %d", idx, e.papers[idx].state)
		}
		if l.received && l.counted {
			t.Fatalf("lease %s: body received, still holding a host slot", l.name())
		}
		if !l.received && !l.counted && l.pred == nil {
			t.Fatalf("lease %s: running without a host slot", l.name())
		}
		if l.counted {
			perHost[e.papers[idx].host]++
			if l.conn != nil {
				live[e.papers[idx].host]++
			}
		}
		if l.pred != nil {
			p := l.pred
			if !l.successor || p.succ != l || e.leases[p.idx] != p || p.conn != l.conn || l.conn == nil ||
				e.papers[p.idx].host != e.papers[idx].host || p.resolve != nil || l.started && !l.counted {
				t.Fatalf("successor %s of %s: broken link", l.name(), p.name())
			}
			if !l.counted {
				waiting[l.conn]++
				// Its predecessor runs (holds a host slot), or waits itself (a chain).
				if p.received || !p.counted && !p.waiting() {
					t.Fatalf("successor %s waits for %s, whose exchange is over", l.name(), p.name())
				}
			}
		}
		if l.succ != nil && (l.succ.pred != l || e.leases[l.succ.idx] != l.succ) {
			t.Fatalf("lease %s: broken successor link", l.name())
		}
	}
	// Reclaims (prefetch.go): every reclaimed lease is counted once, in the engine's and its
	// host's reclaims in flight, and was a successor whose predecessor's body was not in
	// when it was cancelled (so it was never a running download then).
	reclaiming, hostReclaiming := 0, map[uint32]int{}
	for _, l := range e.leases {
		if l.reclaimed {
			reclaiming++
			hostReclaiming[e.papers[l.idx].host]++
			if !l.successor || !l.cancelSent {
				t.Fatalf("lease %s reclaimed: successor %v, cancel sent %v", l.name(), l.successor, l.cancelSent)
			}
		}
	}
	if reclaiming != e.reclaiming {
		t.Fatalf("%d reclaimed leases, the engine counts %d", reclaiming, e.reclaiming)
	}
	for _, h := range e.hosts {
		if hostReclaiming[h.idx] != h.reclaiming {
			t.Fatalf("host %s: %d reclaimed leases, counted %d", h.name, hostReclaiming[h.idx], h.reclaiming)
		}
	}
	for _, c := range e.conns {
		if c.waiting != waiting[c] || c.waiting > c.prefetch && !c.draining {
			t.Fatalf("fetcher %s: window %d/%d, %d successors waiting", c.id, c.waiting, c.prefetch, waiting[c])
		}
		// Every lease that may get a successor is a candidate (no window stays unfilled).
		for _, l := range c.leases {
			if c.prefetch > 0 && e.mayPrecede(c, l) && !slices.Contains(c.cands, l) {
				t.Fatalf("fetcher %s: lease %s may precede a successor but is no candidate", c.id, l.name())
			}
		}
	}
	for _, h := range e.hosts {
		if perHost[h.idx] != h.active {
			t.Fatalf("host %s: active %d, HTTP exchanges in flight %d", h.name, h.active, perHost[h.idx])
		}
		if live[h.idx] > h.maxLimit {
			t.Fatalf("host %s: %d concurrent downloads, limit %d", h.name, live[h.idx], h.maxLimit)
		}
	}
	// The fetchers' side: the exchanges the model fetchers run on live streams, for leases
	// the coordinator still holds, never exceed a host's limit.
	exchanges := map[uint32]int{}
	for _, ol := range m.open {
		if ol.conn.closed || ol.received || !ol.released() {
			continue
		}
		idx, _, ok := e.ids.check(ol.a.GetLeaseId(), ol.conn.id)
		if !ok || e.leases[idx] == nil || e.leases[idx].id != ol.a.GetLeaseId() {
			continue
		}
		exchanges[e.papers[idx].host]++
	}
	// A start the model fetcher reported, on its own or folded into a later event, is known.
	for _, ol := range m.open {
		if !ol.started || ol.conn.closed {
			continue
		}
		idx, _, ok := e.ids.check(ol.a.GetLeaseId(), ol.conn.id)
		if l := e.leases[idx]; ok && l != nil && l.id == ol.a.GetLeaseId() && l.conn == ol.conn && !l.started {
			t.Fatalf("lease %s: reported started, the coordinator does not know", l.name())
		}
	}
	for _, h := range e.hosts {
		if exchanges[h.idx] > h.maxLimit {
			t.Fatalf("host %s: fetchers run %d HTTP exchanges, limit %d", h.name, exchanges[h.idx], h.maxLimit)
		}
	}
	credits := 0
	for _, c := range e.conns {
		if e.eligibleConn(c) {
			credits += c.credits
		}
		// Every credit accounted: a fetcher's credit is what it was given and returned
		// (Credits or folded) minus what it was assigned.
		if want, ok := m.credits[c]; ok && !c.closed && c.credits != want {
			t.Fatalf("fetcher %s (fold %v): credit %d, sent and assigned say %d", c.id, m.fold[c], c.credits, want)
		}
	}
	if credits != e.credits {
		t.Fatalf("credits %d, conns hold %d", e.credits, credits)
	}
	if err := leasesShareNoKey(e); err != nil {
		t.Fatal(err)
	}
	if err := singleFlightConsistent(e); err != nil {
		t.Fatal(err)
	}
	// Single flight by DOI: the live leases of the papers of one DOI are one paper's.
	byDOI := map[uint64]uint32{}
	for idx := range e.leases {
		spec, err := e.specOf(idx)
		if err != nil {
			t.Fatal(err)
		}
		if k := doiKey(spec); k != 0 {
			if other, dup := byDOI[k]; dup && other != idx {
				t.Fatalf("papers %d and %d with DOI %s both have a lease", other, idx, spec.GetDoi())
			}
			byDOI[k] = idx
		}
	}
}

type snapshot struct {
	papers  []memPaper
	batches []string
}

func (m *propModel) snapshot() snapshot {
	var s snapshot
	for _, p := range m.h.e.papers {
		p.flags &^= flagDirty
		s.papers = append(s.papers, p)
	}
	// Trailing tombstones (deleted papers) are not rebuilt by a restart.
	for len(s.papers) > 0 && s.papers[len(s.papers)-1] == (memPaper{}) {
		s.papers = s.papers[:len(s.papers)-1]
	}
	for _, b := range m.h.e.batches {
		if b == nil || b.deleting {
			s.batches = append(s.batches, "deleted")
			continue
		}
		s.batches = append(s.batches, fmt.Sprintf("%s %v %v %d %d %d", b.id, b.state, b.counts, b.total, b.cached, b.bytesStored))
	}
	return s
}

// The engine's invariants hold under random sequences of requests, fetcher events, stream
// losses and restarts, on the bbolt store.
func TestPropertyStateMachine(t *testing.T) { propertyStateMachine(t, newEngHarness, false) }

// The same on the in-memory store, many times faster: run it longer with
// go test ./coordinator -run InMemory -rapid.checks=N.
func TestPropertyStateMachineInMemory(t *testing.T) { propertyStateMachine(t, newMemEngHarness, false) }

// The same with every fetcher's prefetch window larger than its slots and no per-host delay,
// so that windows fill with chains of successors (prefetch.go), which the mixed draws above
// reach rarely (a slot passed along a chain in about 2 of 100 runs; here about 20).
func TestPropertyChainsInMemory(t *testing.T) { propertyStateMachine(t, newMemEngHarness, true) }

func propertyStateMachine(t *testing.T, newHarness func(testing.TB, func(*Config)) *engHarness, chains bool) {
	runs, reclaimRuns := 0, 0
	defer func() { t.Logf("%d of %d runs reclaimed a waiting successor for an idle stream", reclaimRuns, runs) }()
	rapid.Check(t, func(rt *rapid.T) {
		// Hosts without a per-host delay get prefetched successors.
		delay := rapid.SampledFrom([]time.Duration{0, time.Second}).Draw(rt, "perHostDelay")
		slots, prefetch, conc := [2]int{1, 3}, [2]int{0, 4}, 2
		if chains {
			// Every fetcher's window is larger than its running downloads: chains. A host limit
			// above a fetcher's slots leaves room for an idle stream to reclaim the successors
			// waiting behind another's downloads (prefetch.go).
			delay, slots, prefetch = 0, [2]int{1, 2}, [2]int{2, 4}
			conc = rapid.SampledFrom([]int{2, 4}).Draw(rt, "perHostConcurrency")
		}
		h := newHarness(t, func(c *Config) {
			c.PerHostDelay = delay
			c.PerHostConcurrency = conc
			c.MaxAttempts = 4
			c.LeaseTTL = time.Minute
			c.ReconnectGrace = 10 * time.Second
			c.BreakerThreshold = 3
			c.BreakerCooldown = time.Minute
			// OpenAlex shares a host with downloads; the other routes have their own.
			c.Resolve = ResolveConfig{OpenAlexBase: "https://c.example", Email: "m@example.org"}
		})
		defer h.close()
		m := &propModel{h: h, terminal: map[uint32]uint8{}, fold: map[*fetcherConn]bool{}, credits: map[*fetcherConn]int{}, cancelled: map[string]bool{}}
		rt.Repeat(map[string]func(*rapid.T){
			"submit":  m.submit,
			"burst":   m.burst,
			"chunked": m.chunked,
			"connect": func(t *rapid.T) {
				var inFlight []*pb.InFlightLease
				if len(m.open) > 0 && rapid.Bool().Draw(t, "reannounce") {
					// Waiting successors are never re-announced (the fetcher drops them).
					l := rapid.SampledFrom(m.open).Draw(t, "lease")
					if l.released() {
						inFlight = append(inFlight, &pb.InFlightLease{LeaseId: l.a.GetLeaseId(), Attempt: l.a.GetAttempt(), BodyReceived: l.received})
					}
				}
				id := fmt.Sprintf("f%d", rapid.IntRange(0, 3).Draw(t, "fetcher"))
				n := rapid.IntRange(slots[0], slots[1]).Draw(t, "slots")
				fold := rapid.Bool().Draw(t, "fold")
				c := h.connectHello(&pb.Hello{FetcherId: id, BootId: "b", Slots: int32(n), FoldEvents: fold,
					Prefetch: int32(rapid.IntRange(prefetch[0], prefetch[1]).Draw(t, "prefetch")), InFlight: inFlight})
				// A Welcome first for a fetcher that asked, none for one that did not.
				var out []*pb.WorkResponse
				for len(c.out) > 0 {
					out = append(out, <-c.out)
				}
				for i, w := range out {
					if (w.GetWelcome() != nil) != (fold && i == 0) {
						t.Fatalf("fold_events %v: message %d is %v", fold, i, w)
					}
					c.out <- w
				}
				if fold && len(out) == 0 {
					t.Fatal("no Welcome")
				}
				m.conns = append(m.conns, c)
				m.fold[c], m.credits[c] = fold, n
				for _, l := range m.open {
					for _, fl := range inFlight {
						if l.a.GetLeaseId() == fl.GetLeaseId() && l.conn.id == id { // adopted only by its own fetcher
							l.conn = c
							l.pred = nil // running on its own
						}
					}
				}
				m.collect()
			},
			// A new fetcher, idle while successors wait behind another stream's downloads:
			// its credits take queued papers, then reclaim the successors that waited
			// reclaimAfter (prefetch.go).
			"idle": func(t *rapid.T) {
				if len(m.predecessors()) == 0 {
					t.Skip("no waiting successor")
				}
				n := rapid.IntRange(1, 3).Draw(t, "slots")
				c := h.connectPrefetch(fmt.Sprintf("idle%d", len(m.conns)), n, 0)
				m.conns = append(m.conns, c)
				m.fold[c], m.credits[c] = false, n
				m.collect()
				m.sendHeldStarts(t)
				h.advance(reclaimAfter)
				m.collect()
			},
			"credit": func(t *rapid.T) {
				live := m.liveConns()
				if len(live) == 0 {
					t.Skip("no conn")
				}
				m.send(rapid.SampledFrom(live).Draw(t, "conn"), creditsReq(rapid.IntRange(1, 2).Draw(t, "n")))
			},
			// Credits folded into an event of a lease that is not the stream's (another
			// stream's, or a stale one): refused or dropped, the credits count for the sender.
			"foreignCredit": func(t *rapid.T) {
				live := m.liveConns()
				if len(live) == 0 || len(m.history) == 0 {
					t.Skip("no conn or lease")
				}
				c := rapid.SampledFrom(live).Draw(t, "conn")
				l := rapid.SampledFrom(m.history).Draw(t, "lease")
				r := eventReq(l.a, int64(rapid.IntRange(1, 3).Draw(t, "seq")), &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 1}}})
				r.FoldedCredits = int32(rapid.IntRange(1, 2).Draw(t, "n"))
				if l.conn == c && !l.ended {
					t.Skip("its own running lease")
				}
				m.send(c, r)
			},
			"event": m.event,
			// A predecessor's body is in: the model fetcher starts its successor in its slot.
			"release": func(t *rapid.T) {
				preds := m.predecessors()
				if len(preds) == 0 {
					t.Skip("no waiting successor")
				}
				if heads := m.chainHeads(preds); len(heads) > 0 && rapid.Bool().Draw(t, "chainHead") {
					preds = heads // chains are rarer than single successors: release them more often
				}
				for p := m.open[rapid.SampledFrom(preds).Draw(t, "pred")]; ; {
					p.received = true
					m.sendEvent(t, p, receivedEv(), false)
					var next *propLease
					for _, l := range m.open {
						if l.pred == p && !l.ended {
							m.startLease(t, l)
							next = l
						}
					}
					// A quick download: the successor's body is in too, and its slot passes on
					// along a chain of successors.
					if next == nil || !m.hasWaitingSuccessor(next) || !rapid.Bool().Draw(t, "alongChain") {
						break
					}
					p = next
				}
			},
			"replay": m.replay,
			"kill": func(t *rapid.T) {
				live := m.liveConns()
				if len(live) == 0 {
					t.Skip("no conn")
				}
				h.apply(&goneMsg{c: rapid.SampledFrom(live).Draw(t, "conn")})
				m.collect()
			},
			"drain": func(t *rapid.T) {
				live := m.liveConns()
				if len(live) == 0 {
					t.Skip("no conn")
				}
				m.send(rapid.SampledFrom(live).Draw(t, "conn"), &pb.WorkRequest{Msg: &pb.WorkRequest_Draining{Draining: &pb.Draining{}}})
			},
			"advance": func(t *rapid.T) {
				m.sendHeldStarts(t)
				h.advance(time.Duration(rapid.IntRange(0, 120).Draw(t, "seconds")) * time.Second)
				m.collect()
			},
			"cancel": func(t *rapid.T) {
				if m.batches == 0 {
					t.Skip("no batch")
				}
				id := fmt.Sprintf("b%d", rapid.IntRange(1, m.batches).Draw(t, "batch"))
				r := &cancelBatchReq{id: id, reply: make(chan batchResult, 1)}
				h.apply(r)
				m.collect()
			},
			"delete": func(t *rapid.T) {
				if m.batches == 0 {
					t.Skip("no batch")
				}
				id := fmt.Sprintf("b%d", rapid.IntRange(1, m.batches).Draw(t, "batch"))
				var idxs []uint32
				if b, err := h.e.batchByName(id); err == nil {
					for _, r := range b.ranges {
						for i := r.first; i < r.first+r.n; i++ {
							idxs = append(idxs, i)
						}
					}
				}
				r := &deleteReq{id: id, reply: make(chan deleteResult, 1)}
				h.apply(r)
				if res := <-r.reply; res.err == nil {
					for _, i := range idxs {
						delete(m.terminal, i) // the index may be reused after a restart
					}
				}
				m.collect()
			},
			"restart": func(t *rapid.T) {
				before := m.snapshot()
				h.restart()
				for _, c := range m.conns {
					c.closed = true // their streams died with the old process
				}
				m.conns = nil
				after := m.snapshot()
				if len(before.batches) > len(after.batches) { // trailing deleted batches are not rebuilt
					before.batches = before.batches[:len(after.batches)]
				}
				if len(before.papers) != len(after.papers) {
					t.Fatalf("%d papers before the restart, %d after", len(before.papers), len(after.papers))
				}
				for i := range before.papers {
					if before.papers[i] != after.papers[i] {
						t.Fatalf("paper %d: %+v before the restart, %+v after", i, before.papers[i], after.papers[i])
					}
				}
				for i := range before.batches {
					if before.batches[i] != after.batches[i] {
						t.Fatalf("batch before the restart %q, after %q", before.batches[i], after.batches[i])
					}
				}
			},
			"": m.check,
		})
		runs++
		if successorCount(t, h, "reclaimed") > 0 {
			reclaimRuns++
		}
		// Liveness: once sealed, a healthy fetcher that completes everything finishes every
		// batch.
		for _, b := range h.e.batches {
			if b != nil && b.state == pb.BatchState_BATCH_STATE_OPEN {
				r := &submitReq{op: opSeal, batchID: b.id, chunkCount: int64(len(b.chunks)), reply: make(chan submitResult, 1)}
				h.apply(r)
				if res := <-r.reply; res.err != nil {
					rt.Fatalf("seal: %v", res.err)
				}
			}
		}
		c := h.connect("good", 50) // not one of m.conns: the loop below takes its Assigns
		for round := 0; round < 200; round++ {
			// It reports what it was assigned before time passes (a lease not started within
			// StartTimeout closes the stream).
			for {
				as, _, _ := recv(c)
				if len(as) == 0 {
					break
				}
				for _, a := range as {
					h.send(c, eventReq(a, 1, completedEv(a)))
					h.send(c, creditsReq(1))
				}
			}
			h.advance(2 * time.Hour)
			m.check(rt)
			done := true
			for _, b := range h.e.batches {
				if b != nil && !b.terminalState() {
					done = false
				}
			}
			if done {
				return
			}
		}
		for _, b := range h.e.batches {
			if b != nil && !b.terminalState() {
				rt.Fatalf("batch %s still %v: %v", b.id, b.state, b.counts)
			}
		}
	})
}
