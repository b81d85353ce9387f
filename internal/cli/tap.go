package cli

import (
	"errors"
	"strings"
	"sync"

	"github.com/paperfetch/paperfetch/embedded"
	"github.com/paperfetch/paperfetch/internal/atomicfile"
)

// maxOutTaps bounds the output files that downloads write as they receive them (outTaps): those
// being written, those whose body waits for or runs its commit, and those finished and waiting
// for their paper's placement, each an open file. Beyond it a download gets no copy, and its
// paper is placed by copying its blob (a second read and SHA-256 of the body). At get's
// defaults at most 144 copies are written or committed at once (--concurrency 16, and 2
// fetchers of 64 pending commits each; prefetched leases open none until they start); the
// finished ones wait for the coordinator's durable Completed, the watch update and a placer.
// At ~3,000 papers/s (10,000 and 100,000 × 20 KiB) up to 468 copies were open at once (an
// earlier bound of 256 had half of those papers copied from their blobs): 1024 leaves twice
// that. A --concurrency near it (up to 10,000) only makes more papers copied from their blobs.
// Go raises the soft descriptor limit to the hard one at start (the kernel's default hard limit
// is 4096), but a hard limit of 1024 is not rare (`ulimit -Hn`, some containers): 1024 copies
// would then take every descriptor the run has, and its spool files, connections, placements
// and store would fail with EMFILE. So get opens at most a quarter of the descriptor limit
// (outTapBound): 256 at a limit of 1024, maxOutTaps from 4096 up.
const maxOutTaps = 1024

// outTapBound is the bound of get's output copies under a descriptor limit of limit (0: unknown,
// maxOutTaps): a quarter of it, at most maxOutTaps, at least 1.
func outTapBound(limit uint64) int {
	if limit == 0 {
		return maxOutTaps
	}
	return int(max(1, min(limit/4, maxOutTaps)))
}

// errTapEnded is the error of a write to a copy that was ended (placed, aborted, the run over).
var errTapEnded = errors.New("output copy ended")

// tapKey names a paper of a batch.
type tapKey struct{ batch, paper string }

// outTaps is the embedded fetchers' BodyTap of `get` (not with --link nor --name-template): each
// PDF downloaded for the run's batch is written, as it is received, to an unnamed file in the
// output folder (atomicfile: a crash leaves nothing), by the very writes that feed the SHA-256
// of its blob. Placing the paper then links that file into place (take): no read of the blob
// and no second SHA-256. A copy that does not match the paper (digest, size), is not finished,
// or is replaced by a newer download of the paper is aborted and the paper is placed from its
// blob as before. At most max copies are open at once (maxOutTaps). It is safe for concurrent
// use; its map is the CLI's, not coordinator state.
type outTaps struct {
	max int

	mu    sync.Mutex
	dir   *atomicfile.Dir // the held output folder; nil: disarmed (Open gives no copy)
	batch string          // the run's batch: other batches' downloads get no copy
	taps  map[tapKey]*outTap
	// creating counts the copies whose files are being made outside mu (they count against
	// max); creations waits for them, so that close returns only when none can still use dir.
	creating  int
	creations sync.WaitGroup
	// opened numbers the Opens (outTap.seq): of two copies of a paper made at once, the later
	// Open's is kept, whichever file creation ends first.
	opened uint64
	// create makes a copy's file in dir; nil: dir.Create (tests stall it).
	create func(dir *atomicfile.Dir) (*atomicfile.File, error)
}

// newOutTaps returns a disarmed set of at most max copies (arm starts it).
func newOutTaps(max int) *outTaps {
	return &outTaps{max: max, taps: map[tapKey]*outTap{}}
}

// arm makes Open give copies of the downloads of batch, written into dir.
func (s *outTaps) arm(dir *atomicfile.Dir, batch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dir, s.batch = dir, batch
}

// Open implements embedded.BodyTap: an unnamed file in the output folder for a download of the
// run's batch, or nil (disarmed, another batch, maxOutTaps copies open, the file cannot be
// made). A copy already open for the paper (an earlier download of it) is aborted, and of two
// made at once the later Open's is kept (the earlier Open then gives none). The file is
// made outside mu (a file creation can take milliseconds on a busy file system: the downloads
// must not queue behind each other's), in a slot reserved under it; close waits for it.
func (s *outTaps) Open(batchID, paperID string) embedded.TapWriter {
	k := tapKey{batchID, paperID}
	s.mu.Lock()
	if s.dir == nil || batchID != s.batch {
		s.mu.Unlock()
		return nil
	}
	old := s.taps[k]
	delete(s.taps, k)
	dir := s.dir
	s.opened++
	seq := s.opened
	reserved := len(s.taps)+s.creating < s.max
	if reserved {
		s.creating++
		s.creations.Add(1)
	}
	s.mu.Unlock()
	if old != nil {
		old.end()
	}
	if !reserved {
		return nil
	}
	defer s.creations.Done()
	var f *atomicfile.File
	var err error
	if s.create != nil {
		f, err = s.create(dir)
	} else {
		f, err = dir.Create()
	}
	s.mu.Lock()
	s.creating--
	if err != nil || s.dir == nil {
		// No file, or the run ended meanwhile (close disarmed the set and waits for this one).
		s.mu.Unlock()
		if f != nil {
			f.Abort()
		}
		return nil
	}
	prev := s.taps[k]
	if prev != nil && prev.seq > seq {
		// A later download of the paper (the live lease) made its copy meanwhile: it is kept.
		s.mu.Unlock()
		f.Abort()
		return nil
	}
	t := &outTap{set: s, key: k, seq: seq, f: f}
	if prev != nil {
		// An earlier download of the paper made its copy meanwhile: this one replaces it.
		defer prev.end()
	}
	s.taps[k] = t
	s.mu.Unlock()
	return t
}

// take removes the copy of the paper from the set and returns its file when it is finished with
// the digest sha (hex, any case) and size; otherwise the copy, if any, is aborted and nil
// returned. The caller commits or aborts the file.
func (s *outTaps) take(batchID, paperID, sha string, size int64) *atomicfile.File {
	k := tapKey{batchID, paperID}
	s.mu.Lock()
	t := s.taps[k]
	delete(s.taps, k)
	s.mu.Unlock()
	if t == nil {
		return nil
	}
	t.mu.Lock()
	if t.f == nil || !t.finished || t.size != size || !strings.EqualFold(t.sha, sha) {
		t.mu.Unlock()
		t.end()
		return nil
	}
	f := t.f
	t.f = nil
	t.mu.Unlock()
	return f
}

// drop aborts the copy of the paper, if any (its paper failed or was placed otherwise).
func (s *outTaps) drop(batchID, paperID string) {
	k := tapKey{batchID, paperID}
	s.mu.Lock()
	t := s.taps[k]
	delete(s.taps, k)
	s.mu.Unlock()
	if t != nil {
		t.end()
	}
}

// close disarms the set and aborts every copy left (the run is over): a download still writing
// one gets a write error and goes on without it. Call it before the output folder is released.
func (s *outTaps) close() {
	s.mu.Lock()
	s.dir = nil
	left := make([]*outTap, 0, len(s.taps))
	for k, t := range s.taps {
		left = append(left, t)
		delete(s.taps, k)
	}
	s.mu.Unlock()
	// No new file is made now (dir is nil); the ones being made are aborted by their Open.
	s.creations.Wait()
	for _, t := range left {
		t.end()
	}
}

// outTap is one copy (embedded.TapWriter): written by its download, then finished by it (it
// stays in the set for its paper's placement) or aborted.
type outTap struct {
	set *outTaps
	key tapKey
	seq uint64 // its Open's number (outTaps.opened)

	mu       sync.Mutex // its download writes while placing or the end of the run may end it
	f        *atomicfile.File
	written  int64
	finished bool
	sha      string
	size     int64
}

// Write appends p to the file; after the copy ended it fails (errTapEnded).
func (t *outTap) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.f == nil || t.finished {
		return 0, errTapEnded
	}
	n, err := t.f.Write(p)
	t.written += int64(n)
	return n, err
}

// Finish records the committed body's digest and size; the copy waits for its paper's placement
// (take). A copy of another size is aborted.
func (t *outTap) Finish(sha string, size int64) {
	t.mu.Lock()
	if t.f == nil || t.finished || t.written != size {
		t.mu.Unlock()
		t.Abort()
		return
	}
	t.finished, t.sha, t.size = true, sha, size
	t.mu.Unlock()
}

// Abort discards the copy and removes it from the set.
func (t *outTap) Abort() {
	t.end()
	s := t.set
	s.mu.Lock()
	if s.taps[t.key] == t {
		delete(s.taps, t.key)
	}
	s.mu.Unlock()
}

// end discards the copy's file, once.
func (t *outTap) end() {
	t.mu.Lock()
	f := t.f
	t.f = nil
	t.mu.Unlock()
	if f != nil {
		f.Abort()
	}
}
