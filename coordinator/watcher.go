package coordinator

import (
	"slices"
	"sync"
	"sync/atomic"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Bounds of one WatchBatch stream (documented in the proto). A stalled watcher holds at most
// maxWatcherBacklog pending paper indexes (4 bytes each), the indexes of the update it is
// sending (as many again) and one message of at most maxWatchMessageBytes: watcherMemoryBound.
const (
	// maxWatcherBacklog is how many changed papers a watcher may have pending before it is
	// considered too far behind and ended with RESOURCE_EXHAUSTED.
	maxWatcherBacklog = 100_000
	// maxWatchMessageBytes bounds one WatchBatchResponse; larger updates are split.
	maxWatchMessageBytes = 256 << 10
	// maxActiveListed bounds WatchBatchResponse.active, in entries and in bytes.
	maxActiveListed      = 1000
	maxActiveListedBytes = 128 << 10
	// watcherMemoryBound is what one watcher may hold, at most, in queued updates.
	watcherMemoryBound = 2*4*maxWatcherBacklog + maxWatchMessageBytes
)

// watcher is one WatchBatch stream. The loop posts updates into its coalescing mailbox
// (never blocking); the stream's own goroutine takes them and sends them. The mutex guards
// only the mailbox, not domain state.
type watcher struct {
	batch         uint32
	includePapers bool
	notify        chan struct{} // capacity 1: "the mailbox changed"
	gone          atomic.Bool   // set by the stream when the client went away

	mu      sync.Mutex
	pending *watchUpdate

	// highWater is the most bytes the watcher held queued at once (pending indexes, the
	// update being sent and its message), for the tests and the benchmark.
	highWater atomic.Int64
	sending   atomic.Int64 // bytes of the update being sent
}

// noteQueued records the bytes the watcher holds now.
func (w *watcher) noteQueued(pendingPapers int) {
	n := int64(4*pendingPapers) + w.sending.Load()
	for {
		old := w.highWater.Load()
		if n <= old || w.highWater.CompareAndSwap(old, n) {
			return
		}
	}
}

// watchUpdate is a coalesced update: the latest batch, every paper changed since the
// previous send, the latest active downloads.
type watchUpdate struct {
	snapshot bool
	batch    *pb.Batch
	// papers are the lists of changed papers posted since the previous send. The lists are
	// shared by every watcher of the batch (posting is O(1) per watcher); the stream's
	// goroutine removes duplicates.
	papers   [][]uint32
	npapers  int
	active   []*pb.ActiveDownload
	hosts    []*pb.HostState // include_papers only; shared, read-only
	omitted  int32           // hosts left out of hosts
	final    bool
	overflow bool
}

// changed returns the distinct papers of the update (4 bytes each, no map: a large backlog
// costs no more than its indexes).
func (u *watchUpdate) changed() []uint32 {
	if len(u.papers) == 1 {
		return u.papers[0]
	}
	out := make([]uint32, 0, u.npapers)
	for _, l := range u.papers {
		out = append(out, l...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func newWatcher(batch uint32, includePapers bool) *watcher {
	return &watcher{batch: batch, includePapers: includePapers, notify: make(chan struct{}, 1)}
}

// post merges an update into the mailbox. It returns false when the watcher fell too far
// behind (the stream then ends with RESOURCE_EXHAUSTED) and must be forgotten.
func (w *watcher) post(snapshot bool, b *pb.Batch, papers []uint32, active []*pb.ActiveDownload, final bool) bool {
	w.mu.Lock()
	u := w.pending
	if u == nil {
		u = &watchUpdate{}
		w.pending = u
	}
	u.snapshot = u.snapshot || snapshot
	u.batch = b
	u.final = u.final || final
	if w.includePapers {
		u.active = active
		if len(papers) > 0 {
			u.papers = append(u.papers, papers)
			u.npapers += len(papers)
			if u.npapers > maxWatcherBacklog {
				// The stream ends with RESOURCE_EXHAUSTED: drop what it will never send.
				u.overflow = true
				u.papers, u.npapers = nil, 0
			}
		}
	}
	ok := !u.overflow
	pending := u.npapers
	w.mu.Unlock()
	w.noteQueued(pending)
	select {
	case w.notify <- struct{}{}:
	default:
	}
	return ok
}

// setHosts puts the latest host states in the mailbox (include_papers only); the post that
// follows delivers them.
func (w *watcher) setHosts(hosts []*pb.HostState, omitted int32) {
	if !w.includePapers {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pending == nil {
		w.pending = &watchUpdate{}
	}
	w.pending.hosts, w.pending.omitted = hosts, omitted
}

// take empties the mailbox.
func (w *watcher) take() *watchUpdate {
	w.mu.Lock()
	defer w.mu.Unlock()
	u := w.pending
	w.pending = nil
	return u
}
