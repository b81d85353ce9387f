package coordinator

import (
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Watchers: coalesced updates posted to the WatchBatch streams of changed batches.

// publish posts updates to the watchers of changed batches (at most every WatchInterval per
// batch unless force or the batch finished).
func (e *engine) publish(now time.Time, force bool) {
	if len(e.watched) == 0 {
		e.finalBatches = e.finalBatches[:0]
		return
	}
	for _, b := range e.finalBatches {
		if len(b.watchers) > 0 {
			e.publishBatch(b, now, true)
		}
	}
	e.finalBatches = e.finalBatches[:0]
	for _, b := range e.watched {
		if !b.changed || (!force && now.Sub(b.lastPublish) < e.cfg.WatchInterval) {
			if force {
				e.pruneWatchers(b)
			}
			continue
		}
		e.publishBatch(b, now, false)
	}
}

// pruneWatchers forgets the watchers whose clients went away.
func (e *engine) pruneWatchers(b *batch) {
	kept := b.watchers[:0]
	for _, w := range b.watchers {
		if w.gone.Load() {
			e.unwatch(b, w)
			continue
		}
		kept = append(kept, w)
	}
	e.keepWatchers(b, kept)
}

func (e *engine) publishBatch(b *batch, now time.Time, final bool) {
	b.changed = false
	b.lastPublish = now
	var papers []uint32
	if len(b.updates) > 0 {
		papers = make([]uint32, 0, len(b.updates))
		for idx := range b.updates {
			papers = append(papers, idx)
		}
		clear(b.updates)
	}
	bps, active := e.activeOf(b, b.watchPapers > 0)
	bp := b.proto(bps)
	var hosts []*pb.HostState
	var omitted int32
	if b.watchPapers > 0 {
		hosts, omitted = e.hostStates(b, now)
	}
	kept := b.watchers[:0]
	for _, w := range b.watchers {
		if w.gone.Load() {
			e.unwatch(b, w)
			continue
		}
		w.setHosts(hosts, omitted)
		if !w.post(false, bp, papers, active, final) {
			e.unwatch(b, w)
			continue
		}
		if final {
			e.unwatch(b, w)
			continue
		}
		kept = append(kept, w)
	}
	e.keepWatchers(b, kept)
}

// keepWatchers makes kept (a prefix-compacted b.watchers) the batch's watchers, clearing the
// dropped tail for the garbage collector; a batch left without watchers stops being watched.
func (e *engine) keepWatchers(b *batch, kept []*watcher) {
	clear(b.watchers[len(kept):])
	b.watchers = kept
	if len(b.watchers) == 0 {
		delete(e.watched, b.idx)
		b.updates = nil
		b.dropHostStates()
	}
}

func (e *engine) unwatch(b *batch, w *watcher) {
	if w.includePapers {
		b.watchPapers--
	}
}

// activeOf returns a batch's aggregate speed and, when wanted, its running downloads (at most
// maxActiveListed of them). Prefetched leases not started yet are not running downloads.
func (e *engine) activeOf(b *batch, want bool) (float64, []*pb.ActiveDownload) {
	if b.counts[stateDownloading] == 0 {
		return 0, nil
	}
	var bps float64
	var active []*pb.ActiveDownload
	for _, l := range e.leases {
		if l.batch != b.idx || l.waiting() {
			continue
		}
		bps += l.bps
		if want && len(active) < maxActiveListed {
			active = append(active, &pb.ActiveDownload{
				PaperId: l.paperID, Url: l.url, Bytes: l.bytes, Total: l.total,
				BytesPerSecond: l.bps, Attempt: int32(l.attempt),
			})
		}
	}
	return bps, active
}

// batchProto returns a batch's wire form with its current speed.
func (e *engine) batchProto(b *batch) *pb.Batch {
	bps, _ := e.activeOf(b, false)
	return b.proto(bps)
}
