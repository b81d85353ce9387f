package coordinator

import (
	"sync"
	"sync/atomic"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// maxWatcherBacklog is how many paper updates a watcher may have pending before it
// is considered too far behind and ended with RESOURCE_EXHAUSTED.
const maxWatcherBacklog = 200_000

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

// changed returns the distinct papers of the update.
func (u *watchUpdate) changed() []uint32 {
	if len(u.papers) == 1 {
		return u.papers[0]
	}
	seen := make(map[uint32]struct{}, u.npapers)
	var out []uint32
	for _, l := range u.papers {
		for _, idx := range l {
			if _, dup := seen[idx]; !dup {
				seen[idx] = struct{}{}
				out = append(out, idx)
			}
		}
	}
	return out
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
				u.overflow = true
			}
		}
	}
	ok := !u.overflow
	w.mu.Unlock()
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
