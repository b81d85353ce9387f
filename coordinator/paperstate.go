package coordinator

import (
	"fmt"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Paper state: moving papers between states while keeping the counts, their batch and its
// watchers current, and marking what the commit must write.

func (e *engine) markDirty(idx uint32) {
	p := &e.papers[idx]
	if p.flags&flagDirty == 0 {
		p.flags |= flagDirty
		e.dirty = append(e.dirty, idx)
	}
}

func (e *engine) coldOf(idx uint32) *coldUpdate {
	c := e.cold[idx]
	if c == nil {
		c = &coldUpdate{}
		e.cold[idx] = c
	}
	return c
}

func (e *engine) setError(idx uint32, msg string) {
	c := e.coldOf(idx)
	c.setError = true
	c.lastError = msg
}

// setState moves a paper to state s, keeping the counts, the batch and watchers current.
func (e *engine) setState(idx uint32, s uint8, now time.Time) {
	p := &e.papers[idx]
	b := e.batches[p.batch]
	e.markDirty(idx)
	if p.state == s {
		return
	}
	if terminal(p.state) {
		panic(fmt.Sprintf("coordinator: paper %d leaves terminal state %d for %d", idx, p.state, s))
	}
	b.counts[p.state]--
	b.counts[s]++
	e.counts[p.state]--
	e.counts[s]++
	p.state = s
	if s == stateFailed {
		b.failedBy[reasonIndex(p.reason)]++
	}
	e.notePaper(b, idx)
	if terminal(s) {
		e.releaseDOI(idx)
		p.setFinished(now.UnixNano())
		e.checkBatchDone(b, now)
	}
}

func (e *engine) notePaper(b *batch, idx uint32) {
	e.touchBatch(b)
	if b.watchPapers > 0 {
		if b.updates == nil {
			b.updates = make(map[uint32]struct{})
		}
		b.updates[idx] = struct{}{}
	}
}

func (e *engine) markBatch(b *batch) {
	e.ws.batches = append(e.ws.batches, batchWrite{idx: b.idx, rec: b.record()})
	e.touchBatch(b)
}

func (e *engine) checkBatchDone(b *batch, now time.Time) {
	if b.state == pb.BatchState_BATCH_STATE_RUNNING && b.live() == 0 {
		b.state = pb.BatchState_BATCH_STATE_COMPLETED
		b.finishedAt = now
		e.markBatch(b)
		e.finalBatches = append(e.finalBatches, b)
		e.log.Info("batch completed", "batch", b.id, "papers", b.total,
			"succeeded", b.counts[stateSucceeded], "failed", b.counts[stateFailed], "cancelled", b.counts[stateCancelled])
		return
	}
	// A cancelled batch settles when its last aborted download is confirmed: only then do its
	// watchers get their last message, with the final counts.
	if b.state == pb.BatchState_BATCH_STATE_CANCELLED && b.live() == 0 && len(b.watchers) > 0 {
		e.finalBatches = append(e.finalBatches, b)
	}
}

// cancelIfBatchCancelled makes live paper idx CANCELLED, with its batch's cancel message, if
// its batch is cancelled, and reports whether it did.
func (e *engine) cancelIfBatchCancelled(idx uint32, now time.Time) bool {
	b := e.batches[e.papers[idx].batch]
	if b.state != pb.BatchState_BATCH_STATE_CANCELLED {
		return false
	}
	e.setError(idx, cancelMessage(b))
	e.setState(idx, stateCancelled, now)
	return true
}

// enqueue makes a live paper QUEUED on its current host (or CANCELLED if its batch is).
func (e *engine) enqueue(idx uint32, now time.Time) {
	if e.cancelIfBatchCancelled(idx, now) {
		return
	}
	p := &e.papers[idx]
	e.setState(idx, stateQueued, now)
	h := e.hosts[p.host]
	h.push(idx)
	e.refreshHost(h, now)
}

func cancelMessage(b *batch) string {
	if b.cancelReason != "" {
		return "cancelled: " + b.cancelReason
	}
	return "cancelled"
}
