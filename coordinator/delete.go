package coordinator

import (
	"context"
	"errors"
	"sync"
	"time"

	"gocloud.dev/gcerrors"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Deleting batches (DeleteBatch, Config.Retention) and collecting their blobs.
//
// A deletion first marks the batch deleting (durably: its record says so, and a restart resumes
// the deletion); the batch is NOT_FOUND from then on. Its papers then go in slices of
// defaultDeleteSlice per loop iteration, so deleting a 2,000,000-paper batch does not stall the loop:
// each slice is one store transaction removing papers, specs, results, plans and DOI cache
// entries, and dropping by one the reference count of every blob its SUCCEEDED papers pointed
// to (bucket blobrefs, plus the references of newrefs not yet folded into it: both written in
// the transactions that make papers SUCCEEDED, and folded before any deletion; store_delete.go). The
// last slice removes the chunks and the batch record. A blob whose count reaches zero is recorded in bucket blobgc in that same
// transaction, so the deletion survives a crash; after the commit a collector goroutine
// deletes it from the blob store and the loop then forgets it. Freed pages are reused by
// bbolt, so the store file stops growing under a steady stream of batches.
//
// Never deleting a blob a committed paper references: a blob in blobgc has no SUCCEEDED paper
// (its count is zero) and the cache indexes no longer point to the deleted papers, so no cache
// hit can refer to it. Only a fetcher's completion can: it wrote the same content-addressed
// blob, possibly just before the collector deleted it. So a completion of a blob that is
// awaiting collection, or that was collected after its lease was assigned, is refused as a
// transient STORAGE failure and the paper is downloaded again (see blobCollected).

// Limits of deletion.
const (
	// defaultDeleteSlice bounds the papers deleted in one loop iteration (one transaction,
	// ~0.3 s); engine.deleteSlice overrides it in tests.
	defaultDeleteSlice = 50_000
	// gcBatch is how many blob keys one collector job carries.
	gcBatch = 256
	// gcQueueSize bounds the collector's queue (jobs).
	gcQueueSize = 16
)

// deleteReq is DeleteBatch.
type deleteReq struct {
	id    string
	reply chan deleteResult
}

type deleteResult struct {
	papers int64
	err    error
}

func (r *deleteReq) apply(e *engine, now time.Time) {
	var res deleteResult
	b, err := e.batchByName(r.id)
	switch {
	case err != nil:
		res.err = err
	case !b.settled():
		res.err = precondition(preconditionBatchState, b.id, "batch %q is %s with %d papers not finished; cancel it first (CancelBatch) and delete it once settled",
			b.id, b.state, b.live())
	default:
		res.papers = b.total
		e.deleteBatch(b, now)
	}
	e.replies = append(e.replies, func() { r.reply <- res })
}

// deletion is a batch being deleted: the next paper to delete is ranges[ri], offset off.
type deletion struct {
	b       *batch
	ri      int
	off     uint32
	deleted int
}

// deleteBatch marks a settled batch deleting; advanceDeletions deletes it slice by slice.
func (e *engine) deleteBatch(b *batch, now time.Time) {
	b.deleting = true
	delete(e.batchByID, b.id)
	delete(e.watched, b.idx)
	e.markBatch(b)
	e.deletions = append(e.deletions, &deletion{b: b})
	e.m.batchesDeleted.Inc()
	e.log.Info("batch deleted", "batch", b.id, "papers", b.total, "age", now.Sub(b.createdAt).Round(time.Second))
}

// advanceDeletions deletes up to deleteSlice papers of the batches being deleted.
func (e *engine) advanceDeletions() {
	budget := e.deleteSlice
	if budget <= 0 {
		budget = defaultDeleteSlice
	}
	for len(e.deletions) > 0 && budget > 0 {
		d := e.deletions[0]
		n, err := e.deleteSome(d, budget)
		if err != nil {
			e.log.Error("delete batch: read papers; will retry", "batch", d.b.id, "err", err)
			return
		}
		budget -= n
		if d.ri < len(d.b.ranges) {
			return // budget spent
		}
		e.finishDeletion(d)
		e.deletions = e.deletions[1:]
	}
	if len(e.deletions) == 0 {
		e.deletions = nil
	}
}

// deleteSome tombstones up to budget papers of d and queues their deletion from the store.
func (e *engine) deleteSome(d *deletion, budget int) (int, error) {
	b := d.b
	del := batchDelete{idx: b.idx}
	var rec storedPaper
	n := 0
	for d.ri < len(b.ranges) && n < budget {
		r := b.ranges[d.ri]
		idx := r.first + d.off
		if err := e.stored.paper(idx, &rec, nil); errors.Is(err, errRecordMissing) {
			// Deleted by a slice committed before a restart: only the position moves.
			if d.off++; d.off == r.n {
				d.ri, d.off = d.ri+1, 0
			}
			continue
		} else if err != nil {
			return n, err
		}
		if k := batchKey(rec.idHash, b.idx); e.byBatch[k] == idx {
			delete(e.byBatch, k)
		}
		if e.papers[idx].state == stateSucceeded {
			for _, h := range [...]uint64{rec.urlHash, rec.finalHash} {
				if h != 0 && e.cacheByURL[h] == idx {
					delete(e.cacheByURL, h)
				}
			}
			if e.cacheByID[rec.idHash] == idx {
				delete(e.cacheByID, rec.idHash)
			}
			if rec.blobKey != "" {
				del.blobs = append(del.blobs, rec.blobKey)
			}
		}
		p := &e.papers[idx]
		e.counts[p.state]--
		*p = memPaper{} // a tombstone: state 0, never scheduled, never listed
		e.unpark(idx)
		e.releaseDOI(idx)
		del.papers = append(del.papers, idx)
		n++
		if d.off++; d.off == r.n {
			d.ri, d.off = d.ri+1, 0
		}
	}
	d.deleted += n
	if len(del.papers) > 0 {
		e.ws.deletes = append(e.ws.deletes, del)
	}
	return n, nil
}

// finishDeletion removes what is left of a batch whose papers are all deleted.
func (e *engine) finishDeletion(d *deletion) {
	b := d.b
	for k := range e.overflow {
		if len(k) >= 4 && k[:4] == string(key32(b.idx)) {
			delete(e.overflow, k)
		}
	}
	del := batchDelete{idx: b.idx, last: true}
	for idx := range b.chunks {
		del.chunks = append(del.chunks, idx)
	}
	e.ws.deletes = append(e.ws.deletes, del)
	e.batches[b.idx] = nil
	e.log.Debug("batch deletion finished", "batch", b.id, "papers", d.deleted)
}

// applyRetention deletes the settled batches that finished more than Config.Retention ago.
func (e *engine) applyRetention(now time.Time) {
	if e.cfg.Retention <= 0 || now.Before(e.nextRetention) {
		return
	}
	e.nextRetention = now.Add(e.retentionPeriod())
	for _, b := range e.batches {
		if b == nil || b.deleting || !b.settled() || b.finishedAt.IsZero() || now.Sub(b.finishedAt) < e.cfg.Retention {
			continue
		}
		e.deleteBatch(b, now)
	}
}

// retentionPeriod is how often retention looks for expired batches.
func (e *engine) retentionPeriod() time.Duration {
	return min(max(e.cfg.Retention/10, time.Second), time.Minute)
}

// ---- blob collection ----

// noteCollectable records blobs released (count zero, in blobgc) as awaiting the collector
// and returns those that were not already, for the loop to hand over. Without a blob store
// (no collector) they only stay recorded in blobgc.
func (e *engine) noteCollectable(keys []string) []string {
	if !e.collector {
		return nil
	}
	var fresh []string
	for _, k := range keys {
		if _, ok := e.gcPending[k]; !ok {
			e.gcPending[k] = struct{}{}
			fresh = append(fresh, k)
		}
	}
	return fresh
}

// blobCollected reports whether a completion of key from a lease assigned at assigned must be
// refused: the blob awaits collection, or was collected after the lease was assigned (the
// fetcher may have written it before the collector deleted it).
func (e *engine) blobCollected(key string, assigned time.Time) bool {
	if _, pending := e.gcPending[key]; pending {
		return true
	}
	at, ok := e.gcDone[key]
	return ok && !at.Before(assigned)
}

// collectedMsg reports blobs the collector deleted (or found missing).
type collectedMsg struct {
	keys   []string
	failed []string // keys whose deletion failed; retried later
}

func (m *collectedMsg) apply(e *engine, now time.Time) {
	for _, k := range m.keys {
		delete(e.gcPending, k)
		e.gcDone[k] = now
	}
	e.ws.collected = append(e.ws.collected, m.keys...)
	e.m.blobsDeleted.Add(float64(len(m.keys)))
	e.collectOut = append(e.collectOut, m.failed...)
	// Forget collection times older than every running lease.
	oldest := now
	for _, l := range e.leases {
		if l.assignedAt.Before(oldest) {
			oldest = l.assignedAt
		}
	}
	for k, at := range e.gcDone {
		if at.Before(oldest) {
			delete(e.gcDone, k)
		}
	}
}

// runCollector deletes released blobs from the blob store until ctx is done; the returned
// function waits for it.
func (c *Coordinator) runCollector(ctx context.Context) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case keys := <-c.gcJobs:
				msg := &collectedMsg{}
				for _, k := range keys {
					dctx, cancel := context.WithTimeout(ctx, verifyTimeout)
					err := c.cfg.Bucket.Delete(dctx, k)
					cancel()
					switch {
					case err == nil, gcerrors.Code(err) == gcerrors.NotFound:
						msg.keys = append(msg.keys, k)
					case ctx.Err() != nil:
						return
					default:
						c.cfg.Logger.Warn("cannot delete released blob; will retry", "blob", k, "err", err)
						msg.failed = append(msg.failed, k)
					}
				}
				if c.postWait(ctx, msg) != nil {
					return
				}
			}
		}
	})
	return wg.Wait
}

// DeleteBatch deletes a settled batch and its papers.
func (a *api) DeleteBatch(ctx context.Context, req *pb.DeleteBatchRequest) (*pb.DeleteBatchResponse, error) {
	if req.GetBatchId() == "" {
		return nil, errBatchIDRequired
	}
	r := &deleteReq{id: req.GetBatchId(), reply: make(chan deleteResult, 1)}
	res, err := ask(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	return &pb.DeleteBatchResponse{BatchId: req.GetBatchId(), PapersDeleted: res.papers}, nil
}

// errRecordMissing marks a paper whose records were deleted (its batch was deleted between
// the loop's lookup and the handler's read).
var errRecordMissing = errors.New("paper record missing")
