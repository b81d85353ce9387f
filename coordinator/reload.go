package coordinator

import (
	"container/heap"
	"fmt"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// load rebuilds the in-memory state from the store. Papers that were DOWNLOADING get orphan
// leases that reconnecting fetchers may adopt until now+ReconnectGrace.
func (e *engine) load(now time.Time) error {
	defer e.stored.release()
	e.graceUntil = now.Add(e.cfg.ReconnectGrace)
	if err := e.stored.hosts(func(idx uint32, name string) error {
		e.addHost(idx, name)
		return nil
	}); err != nil {
		return fmt.Errorf("hosts: %w", err)
	}
	if err := e.stored.batches(func(idx uint32, r *batchRecord) error {
		if int(idx) < len(e.batches) {
			return fmt.Errorf("batch index %d out of sequence", idx)
		}
		for int(idx) > len(e.batches) {
			e.batches = append(e.batches, nil) // a deleted batch
		}
		b := batchFromRecord(idx, r)
		e.batches = append(e.batches, b)
		if b.deleting { // its deletion resumes below; its id may be in use again
			e.deletions = append(e.deletions, &deletion{b: b})
		} else {
			e.batchByID[b.id] = idx
		}
		return nil
	}); err != nil {
		return fmt.Errorf("batches: %w", err)
	}
	if err := e.stored.chunks(func(bi uint32, index int64, rec chunkRecord) error {
		if int(bi) >= len(e.batches) || e.batches[bi] == nil {
			return fmt.Errorf("chunk of unknown batch %d", bi)
		}
		e.batches[bi].addChunk(index, rec)
		return nil
	}); err != nil {
		return fmt.Errorf("chunks: %w", err)
	}
	for _, b := range e.batches {
		if b != nil {
			b.sortRanges()
		}
	}
	if err := e.loadPapers(now); err != nil {
		return err
	}
	// Deleted papers and batches past the last ones kept still hold their indexes.
	nextPaper, nextBatch, err := e.stored.marks()
	if err != nil {
		return fmt.Errorf("index marks: %w", err)
	}
	for uint32(len(e.papers)) < nextPaper {
		e.papers = append(e.papers, memPaper{})
	}
	for uint32(len(e.batches)) < nextBatch {
		e.batches = append(e.batches, nil)
	}
	// Blobs released before a restart and not yet deleted.
	gc, err := e.stored.collectable()
	if err != nil {
		return fmt.Errorf("blob gc: %w", err)
	}
	e.collectOut = append(e.collectOut, e.noteCollectable(gc)...)
	if err := e.loadDamaged(); err != nil {
		return err
	}
	heap.Init(&e.retry)
	for _, h := range e.hosts {
		e.refreshHost(h, now)
	}
	// Orphan leases need their paper ids for logs and watchers.
	if len(e.orphans) > 0 {
		for idx, l := range e.orphans {
			if spec, err := e.specOf(idx); err == nil {
				l.paperID = spec.GetPaperId()
				if cands, resolve := e.candidatesOf(idx, spec); len(cands) > 0 {
					l.url = cands[int(e.papers[idx].urlIdx)%len(cands)]
					l.resolve = resolve
				}
			}
			e.holdKeys(l)
		}
	}
	if err := e.reloadDOIOwners(); err != nil {
		return fmt.Errorf("DOI owners: %w", err)
	}
	for _, b := range e.batches {
		// A sealed batch whose papers all finished but whose completion was not written.
		if b != nil && b.state == pb.BatchState_BATCH_STATE_RUNNING && b.live() == 0 {
			e.checkBatchDone(b, now)
		}
	}
	e.finalBatches = e.finalBatches[:0]
	// Reads see the stored batches at once (a batch completed above is shown COMPLETED before
	// that is written: it follows from committed state alone, and a reload would redo it).
	for _, b := range e.batches {
		if b != nil && !b.deleting {
			e.touchBatch(b)
		}
	}
	e.publishViews(e.takeViews(now))
	return nil
}

// loadPapers rebuilds the papers, their batches' counts, the host queues, retry timers,
// orphan leases and the indexes, in one scan of the papers' fixed records.
func (e *engine) loadPapers(now time.Time) error {
	if last, ok, err := e.stored.lastPaper(); err != nil {
		return fmt.Errorf("papers: %w", err)
	} else if ok {
		n := int(last) + 1
		e.papers = make([]memPaper, 0, n+n/8)
		e.byBatch = make(map[uint64]uint32, n)
	}
	collided := map[uint64]struct{}{} // per-batch index keys shared by several papers
	// The cache indexes are filled after the scan, sized exactly.
	type cached struct {
		idx             uint32
		idHash, urlHash uint64
	}
	var succeeded []cached
	err := e.stored.papers(func(idx uint32, rec *storedPaper) error {
		if int(idx) < len(e.papers) {
			return fmt.Errorf("paper index %d out of sequence", idx)
		}
		for int(idx) > len(e.papers) {
			e.papers = append(e.papers, memPaper{}) // a paper of a deleted batch
		}
		if int(rec.batch) >= len(e.batches) || e.batches[rec.batch] == nil || int(rec.host) >= len(e.hosts) || rec.state == 0 || rec.state >= numStates {
			return fmt.Errorf("paper %d: %w: bad batch, host or state", idx, errBadRecord)
		}
		p := rec.hot()
		e.papers = append(e.papers, p)
		b := e.batches[p.batch]
		b.counts[p.state]++
		e.counts[p.state]++
		if p.state == stateFailed {
			b.failedBy[reasonIndex(p.reason)]++
		}
		// One map operation per paper (the reload is bound by memory latency): a
		// collision shows as a map that did not grow, and is resolved after the scan.
		key := batchKey(rec.idHash, p.batch)
		before := len(e.byBatch)
		e.byBatch[key] = idx
		if len(e.byBatch) == before {
			collided[key] = struct{}{}
		}
		switch p.state {
		case stateQueued:
			e.hosts[p.host].push(idx)
		case stateRetryWait:
			e.retry = append(e.retry, retryItem{at: p.nextAttempt(), idx: idx})
		case stateDownloading:
			l := &lease{idx: idx, attempt: p.attempts, batch: p.batch, assignedAt: now, readyAt: now, counted: true}
			e.leases[idx] = l
			e.orphans[idx] = l
			e.hosts[p.host].active++
		case stateSucceeded:
			b.bytesStored += rec.size
			b.bytesDownloaded += rec.size
			if p.flags&flagCached != 0 {
				b.cached++
			}
			succeeded = append(succeeded, cached{idx: idx, idHash: rec.idHash, urlHash: rec.urlHash})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("papers: %w", err)
	}
	e.cacheByID = make(map[uint64]uint32, len(succeeded))
	e.cacheByURL = make(map[uint64]uint32, len(succeeded))
	for _, s := range succeeded {
		if e.batches[e.papers[s.idx].batch].deleting {
			continue // no cache hits on papers being deleted
		}
		e.cacheByID[s.idHash] = s.idx
		if s.urlHash != 0 {
			e.cacheByURL[s.urlHash] = s.idx
		}
	}
	if len(collided) > 0 {
		return e.resolveCollisions(collided)
	}
	return nil
}

// resolveCollisions fixes the per-batch index after a reload found hash collisions
// (astronomically rare): the first paper keeps the key, the others go to the overflow map,
// by their real id.
func (e *engine) resolveCollisions(collided map[uint64]struct{}) error {
	first := map[uint64]bool{}
	return e.stored.papers(func(idx uint32, rec *storedPaper) error {
		key := batchKey(rec.idHash, rec.batch)
		if _, ok := collided[key]; !ok {
			return nil
		}
		if !first[key] {
			first[key] = true
			e.byBatch[key] = idx
			return nil
		}
		spec, err := e.specOf(idx)
		if err != nil {
			return fmt.Errorf("paper %d spec: %w", idx, err)
		}
		e.overflow[overflowKey(rec.batch, spec.GetPaperId())] = idx
		return nil
	})
}
