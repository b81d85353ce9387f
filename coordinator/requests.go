package coordinator

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// Semantic errors of the engine; the API maps them to gRPC codes.
var (
	errInvalid      = errors.New("invalid argument")
	errNotFound     = errors.New("not found")
	errExists       = errors.New("already exists")
	errPrecondition = errors.New("failed precondition")
	errReplaced     = errors.New("replaced by a newer stream of the same fetcher")
)

// message is something the loop applies to the engine.
type message interface {
	apply(e *engine, now time.Time)
}

// preparedPaper is a submitted paper pre-processed by the API handler (off the loop).
type preparedPaper struct {
	id       string
	idHash   uint64
	spec     []byte
	urls     []string
	host     string // hostKey of the first URL
	expected string
	doi      string // normalised DOI, or empty
}

type submitOp int

const (
	opSubmit submitOp = iota
	opCreate
	opAppend
	opSeal
)

// submitReq is SubmitBatch, CreateBatch, AppendPapers or SealBatch.
type submitReq struct {
	op         submitOp
	batchID    string
	labels     map[string]string
	papers     []preparedPaper
	hash       [32]byte
	chunkIndex int64
	chunkCount int64
	reply      chan submitResult
}

type submitResult struct {
	batch     *pb.Batch
	created   bool
	duplicate bool
	total     int64
	// chunksAccepted and firstMissingChunk describe the batch's chunks after the call.
	chunksAccepted, firstMissingChunk int64
	err                               error
}

func (r *submitReq) apply(e *engine, now time.Time) {
	res := e.doSubmit(r, now)
	e.replies = append(e.replies, func() { r.reply <- res })
}

func (e *engine) batchByName(id string) (*batch, error) {
	i, ok := e.batchByID[id]
	if !ok {
		return nil, batchNotFound(id)
	}
	return e.batches[i], nil
}

func (e *engine) newBatchID(now time.Time) string {
	for {
		var raw [5]byte
		_, _ = rand.Read(raw[:])
		id := now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(raw[:])
		if _, taken := e.batchByID[id]; !taken {
			return id
		}
	}
}

func (e *engine) newBatch(id string, labels map[string]string, chunked bool, now time.Time) *batch {
	if id == "" {
		id = e.newBatchID(now)
	}
	b := &batch{
		idx: uint32(len(e.batches)), id: id, state: pb.BatchState_BATCH_STATE_OPEN, createdAt: now,
		labels: labels, chunked: chunked, chunks: make(map[int64]*chunk),
	}
	e.batches = append(e.batches, b)
	e.batchByID[id] = b.idx
	return b
}

func (e *engine) doSubmit(r *submitReq, now time.Time) submitResult {
	switch r.op {
	case opSubmit:
		if r.batchID != "" {
			if i, ok := e.batchByID[r.batchID]; ok {
				b := e.batches[i]
				if b.chunked || !bytes.Equal(b.contentHash, r.hash[:]) {
					return submitResult{err: batchExists(r.batchID, "batch %q exists with different papers", r.batchID)}
				}
				return submitResult{batch: e.batchProto(b), total: b.total}
			}
		}
		if len(r.papers) > e.cfg.MaxBatchPapers {
			return submitResult{err: precondition(preconditionLimit, r.batchID, "%d papers exceed the limit of %d per batch", len(r.papers), e.cfg.MaxBatchPapers)}
		}
		b := e.newBatch(r.batchID, r.labels, false, now)
		b.contentHash = append([]byte(nil), r.hash[:]...)
		if err := e.addPapers(b, 0, r.papers, r.hash, now); err != nil {
			// Cannot happen for a new batch (duplicates are rejected before); undo the batch.
			delete(e.batchByID, b.id)
			e.batches = e.batches[:len(e.batches)-1]
			return submitResult{err: err}
		}
		b.state = pb.BatchState_BATCH_STATE_RUNNING
		b.sealedAt = now
		e.markBatch(b)
		e.checkBatchDone(b, now)
		e.log.Info("batch submitted", "batch", b.id, "papers", b.total, "cached", b.cached)
		return submitResult{batch: e.batchProto(b), created: true, total: b.total}

	case opCreate:
		if r.batchID != "" {
			if i, ok := e.batchByID[r.batchID]; ok {
				b := e.batches[i]
				return submitResult{batch: e.batchProto(b), total: b.total}
			}
		}
		b := e.newBatch(r.batchID, r.labels, true, now)
		e.markBatch(b)
		e.log.Info("batch created", "batch", b.id)
		return submitResult{batch: e.batchProto(b), created: true}

	case opAppend:
		b, err := e.batchByName(r.batchID)
		if err != nil {
			return submitResult{err: err}
		}
		if ch, ok := b.chunks[r.chunkIndex]; ok {
			if ch.rec.hash != r.hash {
				return submitResult{err: batchExists(b.id, "chunk %d of batch %q was accepted with different papers", r.chunkIndex, b.id)}
			}
			return submitResult{duplicate: true, total: b.total, chunksAccepted: int64(len(b.chunks)), firstMissingChunk: b.firstMissingChunk()}
		}
		if b.state != pb.BatchState_BATCH_STATE_OPEN {
			return submitResult{err: precondition(preconditionBatchState, b.id, "batch %q is %s, not open", b.id, b.state)}
		}
		if b.total+int64(len(r.papers)) > int64(e.cfg.MaxBatchPapers) {
			return submitResult{err: precondition(preconditionLimit, b.id, "batch %q would exceed the limit of %d papers", b.id, e.cfg.MaxBatchPapers)}
		}
		if err := e.addPapers(b, r.chunkIndex, r.papers, r.hash, now); err != nil {
			return submitResult{err: err}
		}
		return submitResult{total: b.total, chunksAccepted: int64(len(b.chunks)), firstMissingChunk: b.firstMissingChunk()}

	case opSeal:
		b, err := e.batchByName(r.batchID)
		if err != nil {
			return submitResult{err: err}
		}
		if int64(len(b.chunks)) != r.chunkCount {
			return submitResult{err: precondition(preconditionChunks, b.id, "batch %q has %d chunks, not %d (chunks 0 to %d are all in)", b.id, len(b.chunks), r.chunkCount, b.firstMissingChunk()-1)}
		}
		for i := int64(0); i < r.chunkCount; i++ {
			if _, ok := b.chunks[i]; !ok {
				return submitResult{err: precondition(preconditionChunks, b.id, "batch %q is missing chunk %d", b.id, i)}
			}
		}
		if b.state == pb.BatchState_BATCH_STATE_OPEN {
			b.state = pb.BatchState_BATCH_STATE_RUNNING
			b.sealedAt = now
			e.markBatch(b)
			e.checkBatchDone(b, now)
			e.log.Info("batch sealed", "batch", b.id, "papers", b.total, "chunks", len(b.chunks))
		}
		return submitResult{batch: e.batchProto(b), total: b.total}
	}
	return submitResult{err: fmt.Errorf("%w: unknown operation", errInvalid)}
}

func overflowKey(b uint32, id string) string { return string(key32(b)) + id }

// addPapers appends a chunk of papers to b (all or nothing).
func (e *engine) addPapers(b *batch, chunkIndex int64, pp []preparedPaper, hash [32]byte, now time.Time) error {
	for i := range pp {
		if _, dup := e.overflow[overflowKey(b.idx, pp[i].id)]; dup {
			return invalidField(fmt.Sprintf("papers[%d].paper_id", i), "%q is already in batch %q", validate.Truncate(pp[i].id, 64), b.id)
		}
		other, ok := e.byBatch[batchKey(pp[i].idHash, b.idx)]
		if !ok {
			continue
		}
		spec, err := e.specOf(other)
		if err != nil {
			return err
		}
		if spec.GetPaperId() == pp[i].id {
			return invalidField(fmt.Sprintf("papers[%d].paper_id", i), "%q is already in batch %q", validate.Truncate(pp[i].id, 64), b.id)
		}
	}
	if uint64(len(e.papers))+uint64(len(pp)) >= 1<<32-1 {
		return precondition(preconditionLimit, b.id, "the coordinator's store is full")
	}
	first := uint32(len(e.papers))
	ns := now.UnixNano()
	for i := range pp {
		q := &pp[i]
		idx := first + uint32(i)
		var hostIdx uint32
		if q.doi == "" { // a DOI paper's host is its plan's first step's (addPlan)
			hostIdx = e.internHost(q.host)
		}
		e.papers = append(e.papers, paperRec{
			batch: b.idx, host: hostIdx, nurls: uint8(min(len(q.urls), 255)),
			state: stateQueued, flags: flagDirty,
		})
		k := batchKey(q.idHash, b.idx)
		if _, taken := e.byBatch[k]; taken {
			e.overflow[overflowKey(b.idx, q.id)] = idx
		} else {
			e.byBatch[k] = idx
		}
		e.pendingSpecs[idx] = q.spec
		e.newPapers = append(e.newPapers, newPaper{idx: idx, idHash: q.idHash, createdAt: ns})
		b.counts[stateQueued]++
		e.counts[stateQueued]++
		if q.doi != "" {
			e.papers[idx].host = e.internHost(e.addPlan(idx, q.doi, q.urls))
		}
		if rec, hit := e.cacheLookup(q.id, q.urls, q.expected); hit {
			e.completeCached(idx, rec, now)
			continue
		}
		if q.doi != "" {
			if rec, hit := e.cacheLookupDOI(q.doi, q.expected); hit {
				e.completeCached(idx, rec, now)
				continue
			}
		}
		h := e.hosts[e.papers[idx].host]
		h.push(idx)
		e.refreshHost(h, now)
	}
	rec := chunkRecord{hash: hash, first: first, n: uint32(len(pp)), createdAt: ns}
	b.addChunk(chunkIndex, rec)
	e.ws.chunks = append(e.ws.chunks, chunkWrite{batch: b.idx, index: chunkIndex, rec: rec})
	b.changed = true
	return nil
}

// batchReq is GetBatch or CancelBatch.
type batchReq struct {
	id     string
	cancel bool
	reason string
	reply  chan batchResult
}

type batchResult struct {
	batch *pb.Batch
	err   error
}

func (r *batchReq) apply(e *engine, now time.Time) {
	var res batchResult
	b, err := e.batchByName(r.id)
	if err != nil {
		res.err = err
	} else {
		if r.cancel {
			e.cancelBatch(b, r.reason, now)
		}
		res.batch = e.batchProto(b)
	}
	e.replies = append(e.replies, func() { r.reply <- res })
}

// cancelBatch cancels every paper of b that is not terminal: queued ones at once, running
// ones when their fetcher confirms.
func (e *engine) cancelBatch(b *batch, reason string, now time.Time) {
	if b.terminalState() {
		return
	}
	b.state = pb.BatchState_BATCH_STATE_CANCELLED
	b.cancelReason = reason
	b.finishedAt = now
	if b.sealedAt.IsZero() {
		b.sealedAt = now
	}
	e.markBatch(b)
	msg := cancelMessage(b)
	for _, r := range b.ranges {
		for idx := r.first; idx < r.first+r.n; idx++ {
			switch e.papers[idx].state {
			case stateQueued, stateRetryWait:
				e.setError(idx, msg)
				e.setState(idx, stateCancelled, now)
			case stateDownloading:
				l := e.leases[idx]
				if l == nil || l.conn == nil {
					if l != nil {
						e.endLease(l, now)
					}
					e.setError(idx, msg)
					e.setState(idx, stateCancelled, now)
					continue
				}
				e.sendCancel(l.conn, l, "batch cancelled")
			}
		}
	}
	// Watchers get their last message once the aborted downloads have settled (checkBatchDone).
	if b.settled() {
		e.finalBatches = append(e.finalBatches, b)
	}
	e.log.Info("batch cancelled", "batch", b.id, "reason", reason, "aborting", b.counts[stateDownloading])
}

// listBatchesReq is ListBatches.
type listBatchesReq struct {
	size  int
	token string
	reply chan listBatchesResult
}

type listBatchesResult struct {
	batches []*pb.Batch
	next    string
	err     error
}

func (r *listBatchesReq) apply(e *engine, _ time.Time) {
	var res listBatchesResult
	start := len(e.batches) - 1
	if r.token != "" {
		n, err := strconv.Atoi(r.token)
		if err != nil || n < 0 || n >= len(e.batches) {
			res.err = invalidField("page_token", "is not valid here; pass the next_page_token of a previous call")
			e.replies = append(e.replies, func() { r.reply <- res })
			return
		}
		start = n
	}
	bytes := 0
	for i := start; i >= 0 && len(res.batches) < r.size; i-- {
		if e.batches[i] == nil || e.batches[i].deleting {
			continue
		}
		bp := e.batchProto(e.batches[i])
		n := proto.Size(bp) + protoEntryOverhead
		if bytes+n > maxPageBytes && len(res.batches) > 0 {
			res.next = strconv.Itoa(i)
			break
		}
		bytes += n
		res.batches = append(res.batches, bp)
		if len(res.batches) == r.size && i > 0 {
			res.next = strconv.Itoa(i - 1)
		}
	}
	e.replies = append(e.replies, func() { r.reply <- res })
}

// liveInfo is what only the loop knows about a running paper.
type liveInfo struct {
	bytes, total int64
}

// lookupReq resolves a paper of a batch (GetPaper, ReadPaper). The handler verifies the id
// against the stored spec.
type lookupReq struct {
	batchID, paperID string
	reply            chan lookupResult
}

type lookupResult struct {
	idx     uint32
	batchID string
	live    liveInfo
	err     error
}

func (r *lookupReq) apply(e *engine, _ time.Time) {
	var res lookupResult
	b, err := e.batchByName(r.batchID)
	if err != nil {
		res.err = err
	} else {
		idx, ok := e.overflow[overflowKey(b.idx, r.paperID)]
		if !ok {
			idx, ok = e.byBatch[batchKey(hashString(r.paperID), b.idx)]
		}
		if !ok {
			res.err = paperNotFound(r.batchID, r.paperID)
		} else {
			res.idx, res.batchID = idx, b.id
			if l := e.leases[idx]; l != nil {
				res.live = liveInfo{bytes: l.bytes, total: l.total}
			}
		}
	}
	e.replies = append(e.replies, func() { r.reply <- res })
}

// listPapersReq is ListPapers: the loop picks the papers, the handler reads them.
type listPapersReq struct {
	batchID string
	states  uint8  // bit per PaperState; 0 = all
	reasons uint64 // bit per FailureReason; 0 = all
	size    int
	token   string
	reply   chan listPapersResult
}

type listPapersResult struct {
	batchID string
	idxs    []uint32
	pos     []int64 // position in the batch of each of idxs (a page token resuming there)
	live    map[uint32]liveInfo
	next    string
	err     error
}

// maxScan bounds the papers one ListPapers call inspects (filtered listings of huge batches
// return a short page with a token instead of stalling the loop).
const maxScan = 1 << 20

func (r *listPapersReq) apply(e *engine, _ time.Time) {
	var res listPapersResult
	defer func() { e.replies = append(e.replies, func() { r.reply <- res }) }()
	b, err := e.batchByName(r.batchID)
	if err != nil {
		res.err = err
		return
	}
	res.batchID = b.id
	var pos int64
	if r.token != "" {
		n, err := strconv.ParseInt(r.token, 10, 64)
		if err != nil || n < 0 || n > b.total {
			res.err = invalidField("page_token", "is not valid here; pass the next_page_token of a previous call")
			return
		}
		pos = n
	}
	scanned := 0
	ri, off := b.locate(pos)
	for ; pos < b.total && len(res.idxs) < r.size && scanned < maxScan && ri < len(b.ranges); pos++ {
		scanned++
		idx := b.ranges[ri].first + off
		if off++; off == b.ranges[ri].n {
			ri, off = ri+1, 0
		}
		s := e.papers[idx].state
		if r.states != 0 && r.states&(1<<s) == 0 {
			continue
		}
		if r.reasons != 0 && r.reasons&(1<<e.papers[idx].reason) == 0 {
			continue
		}
		res.idxs = append(res.idxs, idx)
		res.pos = append(res.pos, pos)
		if l := e.leases[idx]; l != nil {
			if res.live == nil {
				res.live = make(map[uint32]liveInfo)
			}
			res.live[idx] = liveInfo{bytes: l.bytes, total: l.total}
		}
	}
	if pos < b.total {
		res.next = strconv.FormatInt(pos, 10)
	}
}

// watchReq registers a WatchBatch stream.
type watchReq struct {
	batchID string
	w       *watcher
	reply   chan error
}

func (r *watchReq) apply(e *engine, now time.Time) {
	b, err := e.batchByName(r.batchID)
	if err != nil {
		e.replies = append(e.replies, func() { r.reply <- err })
		return
	}
	w := r.w
	w.batch = b.idx
	bps, active := e.activeOf(b, w.includePapers)
	bp := b.proto(bps)
	final := b.settled()
	var hosts []*pb.HostState
	var omitted int32
	if w.includePapers && !final {
		hosts, omitted = e.hostStates(b, now)
	}
	if !final {
		b.watchers = append(b.watchers, w)
		if w.includePapers {
			b.watchPapers++
		}
		e.watched[b.idx] = b
	}
	e.replies = append(e.replies, func() {
		w.setHosts(hosts, omitted)
		w.post(true, bp, nil, active, final)
		r.reply <- nil
	})
}

// helloMsg opens a Work stream.
type helloMsg struct {
	c     *fetcherConn
	hello *pb.Hello
	reply chan error
}

func (m *helloMsg) apply(e *engine, now time.Time) {
	err := e.onHello(m.c, m.hello, now)
	e.replies = append(e.replies, func() { m.reply <- err })
}

// streamMsg is a message received on an established Work stream.
type streamMsg struct {
	c   *fetcherConn
	req *pb.WorkRequest
}

func (m *streamMsg) apply(e *engine, now time.Time) {
	m.c.release()
	e.onRequest(m.c, m.req, now)
}

// goneMsg reports the end of a Work stream. With reply set (the fetcher closed its side), the
// reply comes after every earlier message's output was queued on the stream.
type goneMsg struct {
	c     *fetcherConn
	reply chan struct{}
}

func (m *goneMsg) apply(e *engine, now time.Time) {
	if m.reply != nil {
		e.replies = append(e.replies, func() { close(m.reply) })
		return
	}
	e.onGone(m.c, now)
}
