package coordinator

import (
	"container/heap"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// load rebuilds the in-memory state from the store. Papers that were DOWNLOADING get orphan
// leases that reconnecting fetchers may adopt until now+ReconnectGrace.
func (e *engine) load(now time.Time) error {
	e.graceUntil = now.Add(e.cfg.ReconnectGrace)
	collided := map[uint64]struct{}{} // per-batch index keys shared by several papers
	err := e.st.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte(bucketHosts)).ForEach(func(k, v []byte) error {
			e.addHost(binary.BigEndian.Uint32(k), string(v))
			return nil
		}); err != nil {
			return fmt.Errorf("hosts: %w", err)
		}
		if err := tx.Bucket([]byte(bucketBatches)).ForEach(func(k, v []byte) error {
			var r batchRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("batch %x: %w", k, err)
			}
			idx := binary.BigEndian.Uint32(k)
			if int(idx) < len(e.batches) {
				return fmt.Errorf("batch index %d out of sequence", idx)
			}
			for int(idx) > len(e.batches) {
				e.batches = append(e.batches, nil) // a deleted batch
			}
			b := batchFromRecord(idx, &r)
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
		if err := tx.Bucket([]byte(bucketChunks)).ForEach(func(k, v []byte) error {
			if len(k) != 12 {
				return fmt.Errorf("chunk key %x malformed", k)
			}
			bi := binary.BigEndian.Uint32(k)
			if int(bi) >= len(e.batches) || e.batches[bi] == nil {
				return fmt.Errorf("chunk of unknown batch %d", bi)
			}
			var rec chunkRecord
			if err := rec.unmarshal(v); err != nil {
				return err
			}
			e.batches[bi].addChunk(int64(binary.BigEndian.Uint64(k[4:])), rec)
			return nil
		}); err != nil {
			return fmt.Errorf("chunks: %w", err)
		}
		for _, b := range e.batches {
			if b != nil {
				b.sortRanges()
			}
		}
		pbk := tx.Bucket([]byte(bucketPapers))
		cur := pbk.Cursor()
		if k, _ := cur.Last(); k != nil {
			n := int(binary.BigEndian.Uint32(k)) + 1
			e.papers = make([]memPaper, 0, n+n/8)
			e.byBatch = make(map[uint64]uint32, n)
		}
		// The cache indexes are filled after the scan, sized exactly.
		type cached struct {
			idx                      uint32
			idHash, urlHash, finHash uint64
		}
		var succeeded []cached
		var rec storedPaper
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			idx := binary.BigEndian.Uint32(k)
			if int(idx) < len(e.papers) {
				return fmt.Errorf("paper index %d out of sequence", idx)
			}
			for int(idx) > len(e.papers) {
				e.papers = append(e.papers, memPaper{}) // a paper of a deleted batch
			}
			if err := rec.unmarshalFixed(v); err != nil {
				return fmt.Errorf("paper %d: %w", idx, err)
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
				l := &lease{idx: idx, attempt: p.attempts, batch: p.batch, assignedAt: now}
				e.leases[idx] = l
				e.orphans[idx] = l
				e.hosts[p.host].active++
			case stateSucceeded:
				b.bytesStored += rec.size
				b.bytesDownloaded += rec.size
				if p.flags&flagCached != 0 {
					b.cached++
				}
				succeeded = append(succeeded, cached{idx: idx, idHash: rec.idHash, urlHash: rec.urlHash, finHash: rec.finalHash})
			}
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
		// Hash collisions of the per-batch index (astronomically rare): the first paper
		// keeps the key, the others go to the overflow map, by their real id.
		if len(collided) > 0 {
			first := map[uint64]bool{}
			for k, v := cur.First(); k != nil; k, v = cur.Next() {
				if err := rec.unmarshalFixed(v); err != nil {
					return err
				}
				key := batchKey(rec.idHash, rec.batch)
				if _, ok := collided[key]; !ok {
					continue
				}
				idx := binary.BigEndian.Uint32(k)
				if !first[key] {
					first[key] = true
					e.byBatch[key] = idx
					continue
				}
				spec := &pb.PaperSpec{}
				if err := proto.Unmarshal(tx.Bucket([]byte(bucketSpecs)).Get(k), spec); err != nil {
					return fmt.Errorf("paper %d spec: %w", idx, err)
				}
				e.overflow[overflowKey(rec.batch, spec.GetPaperId())] = idx
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Blobs released before a restart and not yet deleted.
	gc, err := e.st.pendingCollections()
	if err != nil {
		return fmt.Errorf("blob gc: %w", err)
	}
	e.noteCollectable(gc)
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
		}
		e.endReads()
	}
	for _, b := range e.batches {
		// A sealed batch whose papers all finished but whose completion was not written.
		if b != nil && b.state == pb.BatchState_BATCH_STATE_RUNNING && b.live() == 0 {
			e.checkBatchDone(b, now)
		}
	}
	e.finalBatches = e.finalBatches[:0]
	return nil
}
