package coordinator

import (
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Reads see committed state only. A read (GetBatch, ListBatches, GetPaper, ListPapers,
// ListHosts, ListFetchers) never waits for the commit of other callers' writes, and never
// shows a change before it is durable: it could otherwise be observed and then lost in a crash
// (client A submits, client B reads A's batch, the coordinator crashes before the commit: the
// batch B saw is gone). A caller's own write is therefore invisible until its reply, which is
// sent after the commit, and visible to every read that starts after that reply.
//
//   - Every batch has a view: an immutable copy of what GetBatch shows (batchView), taken for
//     the batches an iteration changed when the iteration hands over its writes (takeViews)
//     and published once they are committed, before any reply of that iteration is delivered
//     (publishViews). GetBatch reads the published views without going through the loop
//     (batchViews is safe for concurrent use; the views themselves are never changed), so a
//     commit in progress does not delay it. ListBatches lists the views from the loop.
//   - GetPaper and ListPapers resolve papers in the loop, which replies at once (not after the
//     iteration's commit); the handler then reads the papers' records from the store, which
//     holds only committed state. A batch is found only once its view is published; a paper
//     of a chunk not yet committed is not found; a ListPapers filter is checked again against
//     the committed record.
//   - ListHosts lists the hosts whose records are committed and ListFetchers the connected
//     fetchers, at once; their counters (active, queued, credits...) are live scheduling state,
//     which is not durable.
//   - While the store commits, the loop keeps answering these reads (readRequest); other
//     requests wait for the next iteration (loop.commitServingReads).
//
// Live progress is not durable state and is shown as it is: a batch's bytes_downloaded and
// bytes_per_second (refreshed at most every viewSpeedEvery), a running paper's bytes.

// readRequest is a client request that only reads: applying it changes nothing in the engine
// and replies at once. The loop answers those that report duringCommit while a commit is in
// progress (loop.commitServingReads).
type readRequest interface {
	message
	duringCommit() bool
}

func (*listBatchesReq) duringCommit() bool { return true }
func (*lookupReq) duringCommit() bool      { return true }
func (*listPapersReq) duringCommit() bool  { return true }
func (*hostsReq) duringCommit() bool       { return true }
func (*fetchersReq) duringCommit() bool    { return true }

// viewSpeedEvery bounds how often a changed batch's speed (a scan of the running leases) is
// recomputed for its view.
const viewSpeedEvery = 100 * time.Millisecond

// batchView is a batch as of a commit: what GetBatch and ListBatches show. Never changed once
// built (handlers read it concurrently).
type batchView struct {
	idx       uint32
	id        string
	createdAt time.Time
	labels    map[string]string // the batch's, never changed
	stats     batchStats
	bps       float64
}

// snapshot copies b's current state into a view.
func (b *batch) snapshot(bps float64) *batchView {
	return &batchView{idx: b.idx, id: b.id, createdAt: b.createdAt, labels: b.labels, stats: b.batchStats, bps: bps}
}

// proto builds the view's wire form.
func (v *batchView) proto() *pb.Batch {
	s := &v.stats
	out := &pb.Batch{
		BatchId: v.id,
		State:   s.state,
		Counts: &pb.PaperCounts{
			Queued:      s.counts[stateQueued],
			RetryWait:   s.counts[stateRetryWait],
			Downloading: s.counts[stateDownloading],
			Succeeded:   s.counts[stateSucceeded],
			Failed:      s.counts[stateFailed],
			Cancelled:   s.counts[stateCancelled],
			Cached:      s.cached,
		},
		TotalPapers:       s.total,
		BytesStored:       s.bytesStored,
		BytesDownloaded:   s.bytesDownloaded,
		CreatedAt:         timestamppb.New(v.createdAt),
		BytesPerSecond:    v.bps,
		Labels:            v.labels,
		ChunksAccepted:    s.chunksAccepted,
		FirstMissingChunk: s.nextChunk,
	}
	for r, n := range s.failedBy {
		if n > 0 {
			out.FailedByReason = append(out.FailedByReason, &pb.ReasonCount{Reason: pb.FailureReason(r), Count: n})
		}
	}
	sort.SliceStable(out.FailedByReason, func(i, j int) bool { return out.FailedByReason[i].Count > out.FailedByReason[j].Count })
	if !s.sealedAt.IsZero() {
		out.SealedAt = timestamppb.New(s.sealedAt)
	}
	if !s.finishedAt.IsZero() {
		out.FinishedAt = timestamppb.New(s.finishedAt)
	}
	return out
}

// batchViews is the published views of the batches that exist, by batch id: written by the
// loop, read by GetBatch handlers.
type batchViews struct{ m sync.Map } // batch id -> *batchView

// get returns the committed view of batch id.
func (p *batchViews) get(id string) (*batchView, bool) {
	v, ok := p.m.Load(id)
	if !ok {
		return nil, false
	}
	return v.(*batchView), true
}

// readViews is the loop's side of the committed views.
type readViews struct {
	pub          *batchViews
	touched      []*batch // batches changed since the last takeViews
	hostsVisible int      // hosts whose records are committed (e.hosts[:hostsVisible])
	// speedVisits counts the leases visited to compute the views' speeds: a cost the tests
	// bound.
	speedVisits uint64
}

// viewUpdate is a batch's view to publish once its iteration is committed.
type viewUpdate struct {
	b *batch
	v *batchView
}

// pendingViews is what an iteration publishes once committed.
type pendingViews struct {
	batches []viewUpdate
	hosts   int
}

// touchBatch notes that b changed: its watchers get an update, and its view is taken again
// at the end of the iteration.
func (e *engine) touchBatch(b *batch) {
	b.changed = true
	if !b.viewStale {
		b.viewStale = true
		e.touched = append(e.touched, b)
	}
}

// takeViews snapshots the batches the iteration changed, to publish once its writes are
// committed.
func (e *engine) takeViews(now time.Time) pendingViews {
	pv := pendingViews{hosts: len(e.hosts)}
	if len(e.touched) > 0 {
		pv.batches = make([]viewUpdate, 0, len(e.touched))
	}
	var due map[uint32]float64 // batches whose speed is due -> their speed
	for _, b := range e.touched {
		if b.counts[stateDownloading] == 0 {
			b.bps, b.bpsAt = 0, time.Time{}
		} else if b.bpsAt.IsZero() || now.Sub(b.bpsAt) >= viewSpeedEvery || now.Before(b.bpsAt) {
			if due == nil {
				due = make(map[uint32]float64)
			}
			due[b.idx] = 0
			b.bpsAt = now
		}
	}
	if len(due) > 0 { // one pass over the running leases for every batch whose speed is due
		e.speedVisits += uint64(len(e.leases))
		for _, l := range e.leases {
			if bps, ok := due[l.batch]; ok && !l.waiting() {
				due[l.batch] = bps + l.bps
			}
		}
	}
	for _, b := range e.touched {
		b.viewStale = false
		if b.view == nil && (int(b.idx) >= len(e.batches) || e.batches[b.idx] != b) {
			continue // created and undone in the same iteration: never existed
		}
		if bps, ok := due[b.idx]; ok {
			b.bps = bps
		}
		pv.batches = append(pv.batches, viewUpdate{b: b, v: b.snapshot(b.bps)})
	}
	clear(e.touched)
	e.touched = e.touched[:0]
	return pv
}

// publishViews makes an iteration's views visible once its writes are committed, before its
// replies are delivered (a caller that got its reply reads its own write).
func (e *engine) publishViews(pv pendingViews) {
	for _, u := range pv.batches {
		old := u.b.view
		u.b.view = u.v
		if u.v.stats.deleting {
			if old != nil {
				e.pub.m.CompareAndDelete(u.v.id, old)
			}
			continue
		}
		e.pub.m.Store(u.v.id, u.v)
	}
	e.hostsVisible = pv.hosts
}

// committedBatch returns the committed batch id (its view is published), else NOT_FOUND.
func (e *engine) committedBatch(id string) (*batch, *batchView, error) {
	v, ok := e.pub.get(id)
	if !ok || int(v.idx) >= len(e.batches) || e.batches[v.idx] == nil {
		return nil, nil, batchNotFound(id)
	}
	return e.batches[v.idx], v, nil
}
