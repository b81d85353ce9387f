package coordinator

import (
	"errors"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Commit and flush: the end of a loop iteration. Everything it changed is written in one
// transaction, and only then are its outputs sent (persist before acknowledging).

type newPaper struct {
	idx       uint32
	idHash    uint64
	createdAt int64
}

type outMsg struct {
	c *fetcherConn
	m *pb.WorkResponse
}

// pending reports whether the iteration has anything to commit or send.
func (e *engine) pending() bool {
	return len(e.dirty) > 0 || len(e.newPapers) > 0 || !e.ws.empty() || len(e.out) > 0 ||
		len(e.replies) > 0 || len(e.cacheAdds) > 0 || len(e.finalBatches) > 0
}

// commit writes everything the iteration changed in one transaction.
func (e *engine) commit() error {
	e.endReads()
	for _, np := range e.newPapers {
		p := &e.papers[np.idx]
		rec := storedPaper{idHash: np.idHash, createdAt: np.createdAt}
		rec.setHot(p)
		e.applyCold(&rec, np.idx)
		w := newPaperWrite{idx: np.idx, rec: rec.marshalFixed(make([]byte, 0, recordFixed)), spec: e.pendingSpecs[np.idx]}
		if rec.hasResults() {
			w.results = rec.marshalResults(nil)
		}
		if rec.state == stateSucceeded && rec.blobKey != "" {
			e.ws.newRefs = append(e.ws.newRefs, rec.blobKey)
		}
		e.ws.newPapers = append(e.ws.newPapers, w)
		p.flags &^= flagDirty
	}
	for _, idx := range e.dirty {
		p := &e.papers[idx]
		if p.flags&flagDirty == 0 {
			continue // written as a new paper
		}
		p.flags &^= flagDirty
		c := e.cold[idx]
		if c != nil && c.success && c.blobKey != "" {
			e.ws.newRefs = append(e.ws.newRefs, c.blobKey)
		}
		e.ws.dirty = append(e.ws.dirty, dirtyWrite{idx: idx, hot: *p, cold: c})
	}
	if e.ws.empty() {
		e.resetWrites()
		return nil
	}
	start := time.Now()
	n := e.ws.size()
	err := e.st.commit(&e.ws)
	e.m.commitSeconds.Observe(time.Since(start).Seconds())
	e.m.commitRecords.Observe(float64(n))
	if err == nil {
		e.noteCollectable(e.ws.released)
	}
	e.resetWrites()
	return err
}

func (e *engine) applyCold(rec *storedPaper, idx uint32) {
	c := e.cold[idx]
	if c == nil {
		return
	}
	if c.setError {
		rec.lastError = c.lastError
	}
	if c.success {
		rec.size, rec.sha256, rec.blobKey = c.size, c.sha256, c.blobKey
		rec.finalURL, rec.contentType = c.finalURL, c.ctype
		rec.urlHash, rec.finalHash = c.urlHash, c.finalHash
		rec.source = c.source
	}
}

func (e *engine) resetWrites() {
	e.ws.reset()
	e.dirty = e.dirty[:0]
	e.newPapers = e.newPapers[:0]
	clear(e.cold)
	clear(e.pendingSpecs)
	clear(e.pendingPlans)
}

// flush sends what the committed iteration produced: fetcher messages, replies, cache index
// updates and watcher updates.
func (e *engine) flush(now time.Time) {
	for _, a := range e.cacheAdds {
		e.cacheByID[a.idHash] = a.idx
		if a.urlHash != 0 {
			e.cacheByURL[a.urlHash] = a.idx
		}
	}
	e.cacheAdds = e.cacheAdds[:0]
	if len(e.verifyQueue) > 0 {
		e.pushVerifies()
	}
	if len(e.gcQueue) > 0 {
		e.pushCollections()
	}
	out := e.out
	e.out = nil
	for _, o := range out {
		if o.c.closed {
			continue
		}
		if !o.c.send(o.m) {
			e.log.Warn("fetcher stream buffer full; breaking the stream", "fetcher", o.c.id)
			o.c.kill(errStreamOverflow)
			e.dropConn(o.c, "send buffer full", now)
		}
	}
	for _, r := range e.replies {
		r()
	}
	e.replies = e.replies[:0]
	e.publish(now, false)
}

var errStreamOverflow = errors.New("coordinator send buffer full")
