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
// A deletion is one store transaction: the batch's record, chunks, papers, specs, results,
// plans and DOI cache entries go, and the reference count of every blob its SUCCEEDED papers
// pointed to (bucket blobrefs, maintained in the same transactions that make papers SUCCEEDED)
// drops by one. A blob whose count reaches zero is recorded in bucket blobgc in that same
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
	// maxDeletePapersPerIteration bounds the papers retention deletes in one loop iteration
	// (one transaction); the rest wait for the next check.
	maxDeletePapersPerIteration = 200_000
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
		res.papers, res.err = b.total, e.deleteBatch(b, now)
	}
	e.replies = append(e.replies, func() { r.reply <- res })
}

// deleteBatch forgets a settled batch and queues its deletion from the store (this
// iteration's commit).
func (e *engine) deleteBatch(b *batch, now time.Time) error {
	del := batchDelete{idx: b.idx}
	var rec paperRecord
	for _, r := range b.ranges {
		for idx := r.first; idx < r.first+r.n; idx++ {
			if _, pending := e.pendingSpecs[idx]; pending {
				continue // cannot happen for a settled batch; be safe
			}
			tx, err := e.readTx()
			if err != nil {
				return err
			}
			if err := readPaperTx(tx, idx, &rec, nil); err != nil {
				return err
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
			*p = paperRec{} // a tombstone: state 0, never scheduled, never listed
			del.papers = append(del.papers, idx)
		}
	}
	for k := range e.overflow {
		if len(k) >= 4 && string(k[:4]) == string(key32(b.idx)) {
			delete(e.overflow, k)
		}
	}
	for idx := range b.chunks {
		del.chunks = append(del.chunks, idx)
	}
	delete(e.batchByID, b.id)
	delete(e.watched, b.idx)
	e.batches[b.idx] = nil
	e.ws.deletes = append(e.ws.deletes, del)
	e.m.batchesDeleted.Inc()
	e.log.Info("batch deleted", "batch", b.id, "papers", len(del.papers), "blobs_released", len(del.blobs),
		"age", now.Sub(b.createdAt).Round(time.Second))
	return nil
}

// applyRetention deletes the settled batches that finished more than Config.Retention ago.
func (e *engine) applyRetention(now time.Time) {
	if e.cfg.Retention <= 0 || now.Before(e.nextRetention) {
		return
	}
	e.nextRetention = now.Add(e.retentionPeriod())
	deleted := 0
	for _, b := range e.batches {
		if b == nil || !b.settled() || b.finishedAt.IsZero() || now.Sub(b.finishedAt) < e.cfg.Retention {
			continue
		}
		if deleted > 0 && deleted+int(b.total) > maxDeletePapersPerIteration {
			e.nextRetention = now // more next iteration
			return
		}
		if err := e.deleteBatch(b, now); err != nil {
			e.log.Error("retention: delete batch", "batch", b.id, "err", err)
			continue
		}
		deleted += int(b.total)
	}
}

// retentionPeriod is how often retention looks for expired batches.
func (e *engine) retentionPeriod() time.Duration {
	return min(max(e.cfg.Retention/10, time.Second), time.Minute)
}

// ---- blob collection ----

// noteCollectable takes the blobs the last commit released (count zero, in blobgc). Without a
// blob store (no collector) they only stay recorded in blobgc.
func (e *engine) noteCollectable(keys []string) {
	if e.gcCh == nil {
		return
	}
	for _, k := range keys {
		if _, ok := e.gcPending[k]; !ok {
			e.gcPending[k] = struct{}{}
			e.gcQueue = append(e.gcQueue, k)
		}
	}
}

// pushCollections hands queued blob keys to the collector without blocking.
func (e *engine) pushCollections() {
	for len(e.gcQueue) > 0 && e.gcCh != nil {
		n := min(len(e.gcQueue), gcBatch)
		job := append([]string(nil), e.gcQueue[:n]...)
		select {
		case e.gcCh <- job:
			e.gcQueue = e.gcQueue[n:]
		default:
			return
		}
	}
	if len(e.gcQueue) == 0 {
		e.gcQueue = nil
	}
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
	for _, k := range m.failed {
		e.gcQueue = append(e.gcQueue, k)
	}
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
	res, err := call(ctx, a.c, r, r.reply)
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, toStatus(res.err)
	}
	return &pb.DeleteBatchResponse{BatchId: req.GetBatchId(), PapersDeleted: res.papers}, nil
}

// errRecordMissing marks a paper whose records were deleted (its batch was deleted between
// the loop's lookup and the handler's read).
var errRecordMissing = errors.New("paper record missing")
