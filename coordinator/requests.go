package coordinator

import (
	"errors"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Semantic errors of the engine; the API maps them to gRPC codes.
var (
	errInvalid      = errors.New("invalid argument")
	errNotFound     = errors.New("not found")
	errExists       = errors.New("already exists")
	errPrecondition = errors.New("failed precondition")
	errReplaced     = errors.New("replaced by a newer stream of the same fetcher")
)

func (e *engine) batchByName(id string) (*batch, error) {
	i, ok := e.batchByID[id]
	if !ok {
		return nil, batchNotFound(id)
	}
	return e.batches[i], nil
}

// batchResult is a batch's wire form, the answer of CancelBatch.
type batchResult struct {
	batch *pb.Batch
	err   error
}

// cancelBatchReq is CancelBatch.
type cancelBatchReq struct {
	id            string
	reason        string
	finishRunning bool // CancelBatchRequest.finish_running
	reply         chan batchResult
}

func (r *cancelBatchReq) apply(e *engine, now time.Time) {
	var res batchResult
	if b, err := e.batchByName(r.id); err != nil {
		res.err = err
	} else {
		e.cancelBatch(b, r.reason, r.finishRunning, now)
		res.batch = e.batchProto(b)
	}
	e.replies = append(e.replies, func() { r.reply <- res })
}

// cancelBatch cancels every paper of b that is not terminal: queued ones at once, running
// ones when their fetcher confirms. With finishRunning, running downloads are not aborted:
// they end as they would have (a completion still succeeds and feeds the cache, a failure
// makes the paper CANCELLED).
func (e *engine) cancelBatch(b *batch, reason string, finishRunning bool, now time.Time) {
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
				if !finishRunning {
					e.sendCancel(l.conn, l, "batch cancelled")
				}
			}
		}
	}
	// Watchers get their last message once the aborted downloads have settled (checkBatchDone).
	if b.settled() {
		e.finalBatches = append(e.finalBatches, b)
	}
	e.log.Info("batch cancelled", "batch", b.id, "reason", reason, "running", b.counts[stateDownloading], "finish_running", finishRunning)
}

// listBatchesReq is ListBatches: it lists the committed views and replies at once.
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
	defer func() { r.reply <- res }()
	start := len(e.batches) - 1
	if r.token != "" {
		n, err := strconv.Atoi(r.token)
		if err != nil || n < 0 || n >= len(e.batches) {
			res.err = invalidField("page_token", "is not valid here; pass the next_page_token of a previous call")
			return
		}
		start = n
	}
	bytes := 0
	for i := start; i >= 0 && len(res.batches) < r.size; i-- {
		b := e.batches[i]
		if b == nil || b.view == nil || b.view.stats.deleting {
			continue
		}
		bp := b.view.proto()
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
}

// liveInfo is what only the loop knows about a running paper.
type liveInfo struct {
	bytes, total int64
}

// lookupReq resolves a paper of a committed batch (GetPaper, ReadPaper) and replies at once.
// The handler reads the paper's committed record and verifies the id against its spec.
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
	b, _, err := e.committedBatch(r.batchID)
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
	r.reply <- res
}

// listPapersReq is ListPapers: the loop picks the papers of a committed batch and replies at
// once, the handler reads their committed records. A paper changed since the last commit
// (flagDirty, or flagCommitting during a commit) is picked whatever its current state: the
// handler filters every paper again on its committed record.
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
	defer func() { r.reply <- res }()
	b, v, err := e.committedBatch(r.batchID)
	if err != nil {
		res.err = err
		return
	}
	res.batchID = b.id
	total := v.stats.total // the committed papers: the first total of b.ranges
	var pos int64
	if r.token != "" {
		n, err := strconv.ParseInt(r.token, 10, 64)
		if err != nil || n < 0 || n > total {
			res.err = invalidField("page_token", "is not valid here; pass the next_page_token of a previous call")
			return
		}
		pos = n
	}
	scanned := 0
	ri, off := b.locate(pos)
	for ; pos < total && len(res.idxs) < r.size && scanned < maxScan && ri < len(b.ranges); pos++ {
		scanned++
		idx := b.ranges[ri].first + off
		if off++; off == b.ranges[ri].n {
			ri, off = ri+1, 0
		}
		p := &e.papers[idx]
		if p.flags&(flagDirty|flagCommitting) == 0 && !r.matches(p.state, p.reason) {
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
	if pos < total {
		res.next = strconv.FormatInt(pos, 10)
	}
}

// matches reports whether a paper in state s with last failure reason reason passes the
// request's filters.
func (r *listPapersReq) matches(s, reason uint8) bool {
	return (r.states == 0 || r.states&(1<<s) != 0) && (r.reasons == 0 || r.reasons&(1<<reason) != 0)
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
