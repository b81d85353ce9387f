package coordinator

import (
	"sort"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Paper states as stored in memPaper.state.
const (
	stateQueued      = uint8(pb.PaperState_PAPER_STATE_QUEUED)
	stateRetryWait   = uint8(pb.PaperState_PAPER_STATE_RETRY_WAIT)
	stateDownloading = uint8(pb.PaperState_PAPER_STATE_DOWNLOADING)
	stateSucceeded   = uint8(pb.PaperState_PAPER_STATE_SUCCEEDED)
	stateFailed      = uint8(pb.PaperState_PAPER_STATE_FAILED)
	stateCancelled   = uint8(pb.PaperState_PAPER_STATE_CANCELLED)
	numStates        = 7
	// numReasons bounds the FailureReason values counted per batch; larger values are
	// counted as UNSPECIFIED.
	numReasons = 32
)

// reasonIndex is a FailureReason's index in batch.failedBy.
func reasonIndex(r uint8) int {
	if int(r) >= numReasons {
		return 0
	}
	return int(r)
}

func terminal(s uint8) bool { return s >= stateSucceeded }

// chunk is an accepted chunk of a batch: a contiguous range of paper indexes.
type chunk struct {
	index int64
	rec   chunkRecord
}

// batchStats is the part of a batch that changes over its life and that GetBatch and
// ListBatches show; a batch's committed view (readview.go) holds a copy of it.
type batchStats struct {
	state      pb.BatchState
	sealedAt   time.Time
	finishedAt time.Time
	deleting   bool // DeleteBatch or retention: NOT_FOUND, its papers being deleted

	total          int64
	nextChunk      int64 // the lowest chunk index not accepted
	chunksAccepted int64

	counts          [numStates]int64
	failedBy        [numReasons]int64 // FAILED papers per last failure reason
	cached          int64
	bytesStored     int64
	bytesDownloaded int64
}

// batch is a batch of papers. Only the loop touches it.
type batch struct {
	idx          uint32
	id           string
	createdAt    time.Time
	labels       map[string]string // never changed once the batch exists
	contentHash  []byte            // SubmitBatch only: the papers' digest, for idempotent retries
	chunked      bool
	cancelReason string
	batchStats

	chunks map[int64]*chunk
	ranges []chunkRecord // chunks in acceptance order (submission order of the papers)

	// view is the batch as last committed, published for GetBatch (readview.go); viewStale marks
	// a batch changed since (in engine.touched).
	view      *batchView
	viewStale bool
	bps       float64   // the speed in view, computed at bpsAt
	bpsAt     time.Time // zero: no download running

	watchers    []*watcher
	watchPapers int                 // watchers that want paper updates
	updates     map[uint32]struct{} // papers changed since the last publish (watchPapers > 0)
	changed     bool
	lastPublish time.Time
	hosts       *batchHosts // host states for watchers (include_papers), cached
}

func (b *batch) live() int64 {
	return b.counts[stateQueued] + b.counts[stateRetryWait] + b.counts[stateDownloading]
}

func (b *batch) record() batchRecord {
	r := batchRecord{
		ID: b.id, State: int32(b.state), CreatedAt: b.createdAt.UnixNano(), Labels: b.labels,
		ContentHash: b.contentHash, Chunked: b.chunked, CancelReason: b.cancelReason, Deleting: b.deleting,
	}
	if !b.sealedAt.IsZero() {
		r.SealedAt = b.sealedAt.UnixNano()
	}
	if !b.finishedAt.IsZero() {
		r.FinishedAt = b.finishedAt.UnixNano()
	}
	return r
}

func batchFromRecord(idx uint32, r *batchRecord) *batch {
	b := &batch{
		idx: idx, id: r.ID, createdAt: time.Unix(0, r.CreatedAt),
		labels: r.Labels, contentHash: r.ContentHash, chunked: r.Chunked, cancelReason: r.CancelReason,
		batchStats: batchStats{state: pb.BatchState(r.State), deleting: r.Deleting},
		chunks:     make(map[int64]*chunk),
	}
	if r.SealedAt != 0 {
		b.sealedAt = time.Unix(0, r.SealedAt)
	}
	if r.FinishedAt != 0 {
		b.finishedAt = time.Unix(0, r.FinishedAt)
	}
	return b
}

// addChunk records an accepted chunk.
func (b *batch) addChunk(index int64, rec chunkRecord) {
	b.chunks[index] = &chunk{index: index, rec: rec}
	b.ranges = append(b.ranges, rec)
	b.total += int64(rec.n)
	b.chunksAccepted = int64(len(b.chunks))
	for b.chunks[b.nextChunk] != nil {
		b.nextChunk++
	}
}

// firstMissingChunk is the lowest chunk index not accepted yet.
func (b *batch) firstMissingChunk() int64 { return b.nextChunk }

// sortRanges puts the ranges in acceptance order (after a reload).
func (b *batch) sortRanges() {
	sort.Slice(b.ranges, func(i, j int) bool { return b.ranges[i].first < b.ranges[j].first })
}

// locate returns the range holding the pos-th paper of the batch (in submission order) and
// the paper's offset in it; the range index is len(b.ranges) past the end.
func (b *batch) locate(pos int64) (int, uint32) {
	for i, r := range b.ranges {
		if pos < int64(r.n) {
			return i, uint32(pos)
		}
		pos -= int64(r.n)
	}
	return len(b.ranges), 0
}

// proto builds the batch's wire form from its current state (bps is its speed).
func (b *batch) proto(bps float64) *pb.Batch {
	v := b.snapshot(bps)
	return v.proto()
}

func (b *batch) terminalState() bool {
	return b.state == pb.BatchState_BATCH_STATE_COMPLETED || b.state == pb.BatchState_BATCH_STATE_CANCELLED
}

// settled reports whether the batch is terminal with no live paper left: a cancelled batch
// whose aborted downloads have all been confirmed. Its watchers then get their last message.
func (b *batch) settled() bool { return b.terminalState() && b.live() == 0 }
