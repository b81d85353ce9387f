package coordinator

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// Building batches: SubmitBatch, CreateBatch, AppendPapers and SealBatch, one engine method
// each, and the papers they add.

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
	res := e.submit(r, now)
	e.replies = append(e.replies, func() { r.reply <- res })
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
		idx: uint32(len(e.batches)), id: id, createdAt: now,
		labels: labels, chunked: chunked, chunks: make(map[int64]*chunk),
		batchStats: batchStats{state: pb.BatchState_BATCH_STATE_OPEN},
	}
	e.batches = append(e.batches, b)
	e.batchByID[id] = b.idx
	return b
}

// submit applies one of the four calls that build batches.
func (e *engine) submit(r *submitReq, now time.Time) submitResult {
	switch r.op {
	case opSubmit:
		return e.submitBatch(r, now)
	case opCreate:
		return e.createBatch(r, now)
	case opAppend:
		return e.appendChunk(r, now)
	case opSeal:
		return e.sealBatch(r, now)
	}
	return submitResult{err: fmt.Errorf("%w: unknown operation", errInvalid)}
}

// submitBatch is SubmitBatch: it creates and seals a batch in one call, idempotent by id and content.
func (e *engine) submitBatch(r *submitReq, now time.Time) submitResult {
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
}

// createBatch is CreateBatch: it opens a chunked batch, idempotent by id.
func (e *engine) createBatch(r *submitReq, now time.Time) submitResult {
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
}

// appendChunk is AppendPapers: it adds a chunk to an open batch, idempotent by chunk index and content.
func (e *engine) appendChunk(r *submitReq, now time.Time) submitResult {
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
}

// sealBatch is SealBatch: it starts a chunked batch once every chunk is in (idempotent).
func (e *engine) sealBatch(r *submitReq, now time.Time) submitResult {
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
		e.papers = append(e.papers, memPaper{
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
	e.touchBatch(b)
	return nil
}
