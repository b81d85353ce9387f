package coordinator

import (
	"errors"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// The end of an iteration, in the shape of etcd-io/raft's Ready: the engine hands the loop
// one value (takeReady) holding everything the iteration must write and send; the loop
// commits the writes in one transaction, then delivers the messages and replies and hands
// work to the verifiers and the collector, then tells the engine (committed, applied). The
// engine itself performs no I/O, so nothing is acknowledged, assigned or replied before it
// is durable (persist before acknowledging), and the tests drive exactly the same iteration
// (loop.iterate) on a bbolt file or in memory.

// ready is what one iteration produced.
type ready struct {
	// writes is everything the iteration changed, for one transaction (may be empty).
	writes *writeSet
	// messages go to fetchers' Work streams, replies to waiting API calls: after the commit.
	messages []outMsg
	replies  []func()
	// verify holds completions for the verifiers, collect released blobs for the collector.
	verify  []verifyJob
	collect []string
	// cacheAdds become cache entries, and the watchers of finished batches get their last
	// update, once the writes are committed (applied).
	cacheAdds []cacheAdd
	finished  []*batch
}

// newPaper is a paper added by this iteration (written whole by the commit).
type newPaper struct {
	idx       uint32
	idHash    uint64
	createdAt int64
}

// outMsg is a message for a fetcher's Work stream.
type outMsg struct {
	c *fetcherConn
	m *pb.WorkResponse
}

// pending reports whether the iteration has anything to commit or send.
func (e *engine) pending() bool {
	return len(e.dirty) > 0 || len(e.newPapers) > 0 || !e.ws.empty() || len(e.out) > 0 ||
		len(e.replies) > 0 || len(e.cacheAdds) > 0 || len(e.finalBatches) > 0 ||
		len(e.verifyOut) > 0 || len(e.collectOut) > 0
}

// takeReady ends the iteration's changes: it builds the writes from the papers it changed and
// hands over what the iteration produced. The engine must not be changed again before
// applied.
func (e *engine) takeReady() ready {
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
		p.flags = p.flags&^flagDirty | flagCommitting
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
		p.flags |= flagCommitting
	}
	// Messages for streams that ended during the iteration are dropped.
	msgs := e.out[:0:0]
	for _, o := range e.out {
		if !o.c.closed {
			msgs = append(msgs, o)
		}
	}
	rd := ready{
		writes: &e.ws, messages: msgs, replies: e.replies, verify: e.verifyOut, collect: e.collectOut,
		cacheAdds: e.cacheAdds, finished: e.finalBatches,
	}
	e.out, e.verifyOut, e.collectOut = nil, nil, nil
	return rd
}

// committed takes the outcome of the commit: the blobs whose last reference it deleted. It
// returns those the collector must now get.
func (e *engine) committed(released []string) []string {
	return e.noteCollectable(released)
}

// applied is told that rd was committed and delivered, and which fetcher streams broke on
// delivery (their send buffer was full). It makes the cache entries valid, forgets the broken
// streams (re-queueing their leases: written by the next iteration) and updates the watchers.
func (e *engine) applied(rd ready, broken []*fetcherConn, now time.Time) {
	for _, w := range rd.writes.newPapers {
		e.papers[w.idx].flags &^= flagCommitting
	}
	for _, w := range rd.writes.dirty {
		e.papers[w.idx].flags &^= flagCommitting
	}
	e.resetWrites()
	for _, a := range rd.cacheAdds {
		e.cacheByID[a.idHash] = a.idx
		if a.urlHash != 0 {
			e.cacheByURL[a.urlHash] = a.idx
		}
	}
	e.cacheAdds = rd.cacheAdds[:0]
	e.letGoKeys()
	clear(rd.replies)
	e.replies = rd.replies[:0]
	for _, c := range broken {
		e.log.Warn("fetcher stream buffer full; breaking the stream", "fetcher", c.id)
		e.dropConn(c, "send buffer full", now)
	}
	e.finalBatches = rd.finished
	e.publish(now, false)
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

var errStreamOverflow = errors.New("coordinator send buffer full")
