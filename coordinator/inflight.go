package coordinator

import (
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Single flight. The cache (cache.go) only helps once a download has completed; without more,
// two leases could fetch the same thing at the same time: two papers of a batch sharing a URL,
// two batches with the same paper id, or a batch submitted again while the download of the
// batch it replaces (cancelled, but a completion after a Cancel still counts) is running.
//
// So a live lease holds its cache keys, the ones its success enters in the cache: the hash of
// its paper id and, for a download (not a DOI resolution step), the hash of the URL it was
// assigned. A queued paper any of whose cache keys (its paper id, its spec's URLs, the
// candidate it would be assigned: what cacheLookupPaper would match) is held is not assigned
// when the scheduler picks it: it is parked (it stays QUEUED, takes no host slot, no credit,
// no attempt) on that key. A lease's keys are let go only after the commit that recorded its
// end (flush), so that a success is in the cache before anyone looks; the papers parked on a
// key that nobody holds any more are taken up again at the next schedule: a cache lookup with
// the usual rules (cacheLookupPaper: the stored spec must match, expected_sha256 must agree,
// a damaged or collected blob is no hit) completes them as cache hits (CACHED), and the
// others go back to their host queue and are scheduled as usual (one of several waiters
// downloads, the others park again on its lease).
//
// Keys are 64-bit hashes, like the cache's: a collision only makes a paper wait for an
// unrelated download, never take its result (the cache lookup compares the strings).
//
// A DOI is a key too, held by a paper for its whole plan rather than by a lease (doiflight.go).
//
// Bounds: held has at most two keys per live lease and one per live planned paper (leases are bounded by the fetchers'
// credit, Hello.slots); parked and waiters hold each QUEUED paper at most once; letGo and
// released are emptied at every flush and schedule. In memory only: a restart re-derives held
// from the reloaded leases (reload.go, holdKeys) and every QUEUED paper is in its host queue.
type singleFlight struct {
	held     map[uint64]int32     // cache key -> live leases holding it (>1 only for leases from before a restart)
	waiters  map[uint64][]uint32  // cache key -> papers parked on it
	parked   map[uint32]uint64    // parked paper -> the key it waits for
	letGo    []uint64             // keys of leases ended in this iteration, let go at flush
	ended    map[uint32][2]uint64 // paper -> the keys of its lease ended in this iteration
	released []uint32             // papers whose key was let go, taken up at the next schedule
	doiOwner map[uint32]uint64    // planned paper -> the DOI key it owns (doiflight.go)
}

// leaseKeys is the cache keys a lease holds (0: none).
func leaseKeys(l *lease) [2]uint64 {
	var k [2]uint64
	if l.paperID != "" {
		k[0] = hashString(l.paperID)
	}
	if l.resolve == nil && l.url != "" {
		k[1] = hashString(l.url)
	}
	return k
}

// holdKeys makes l hold its cache keys (at the Assign, or when a lease is reloaded).
func (e *engine) holdKeys(l *lease) {
	if e.held == nil {
		e.held = make(map[uint64]int32)
	}
	l.keys = leaseKeys(l)
	for _, k := range l.keys {
		if k != 0 {
			e.held[k]++
		}
	}
}

// dropKeys lets l's keys go at the end of the iteration (endLease).
func (e *engine) dropKeys(l *lease) {
	if l.keys == ([2]uint64{}) {
		return
	}
	if e.ended == nil {
		e.ended = make(map[uint32][2]uint64)
	}
	e.ended[l.idx] = l.keys
	for _, k := range l.keys {
		if k != 0 {
			e.letGo = append(e.letGo, k)
		}
	}
	l.keys = [2]uint64{}
}

// letGoKeys releases the keys of the leases that ended, once their end is committed (flush):
// the papers parked on a key nobody holds any more are taken up at the next schedule.
func (e *engine) letGoKeys() {
	for _, k := range e.letGo {
		if e.held[k] > 1 {
			e.held[k]--
			continue
		}
		delete(e.held, k)
		if w, ok := e.waiters[k]; ok {
			e.released = append(e.released, w...)
			delete(e.waiters, k)
		}
	}
	e.letGo = e.letGo[:0]
	clear(e.ended)
}

// parkIfHeld parks queued paper idx when one of its cache keys is held by a live lease.
func (e *engine) parkIfHeld(idx uint32, spec *pb.PaperSpec) bool {
	if len(e.held) == 0 {
		return false
	}
	k, held := e.heldKey(idx, spec)
	if !held {
		return false
	}
	if e.waiters == nil {
		e.waiters = make(map[uint64][]uint32)
		e.parked = make(map[uint32]uint64)
	}
	e.parked[idx] = k
	e.waiters[k] = append(e.waiters[k], idx)
	e.m.singleFlightWaits.Inc()
	if e.debug() {
		e.log.Debug("paper waits for a running download of the same paper or URL", "paper", spec.GetPaperId())
	}
	return true
}

// unpark forgets paper idx if it is parked (its batch is being deleted: it will never be
// taken up, and must not hold a place in waiters until the key is let go).
func (e *engine) unpark(idx uint32) {
	k, ok := e.parked[idx]
	if !ok {
		return
	}
	delete(e.parked, idx)
	w := e.waiters[k]
	for i, x := range w {
		if x == idx {
			w = append(w[:i], w[i+1:]...)
			break
		}
	}
	if len(w) == 0 {
		delete(e.waiters, k)
	} else {
		e.waiters[k] = w
	}
}

// heldKey returns the first cache key of paper idx that a lease of another paper holds (the
// paper's own lease that ended in this iteration, a failure, is no reason to wait).
func (e *engine) heldKey(idx uint32, spec *pb.PaperSpec) (uint64, bool) {
	own := e.ended[idx]
	heldByOthers := func(k uint64) bool {
		n := e.held[k]
		for _, o := range own {
			if o == k {
				n--
			}
		}
		return n > 0
	}
	if k := hashString(spec.GetPaperId()); heldByOthers(k) {
		return k, true
	}
	for _, u := range spec.GetUrls() {
		if k := hashString(u); heldByOthers(k) {
			return k, true
		}
	}
	if k, held := e.heldDOI(idx, spec); held {
		return k, true
	}
	if e.papers[idx].flags&flagPlanned != 0 {
		// A DOI's plan also tries URLs found by resolution, not in the spec.
		if cands, resolve := e.candidatesOf(idx, spec); resolve == nil && len(cands) > 0 {
			if k := hashString(cands[int(e.papers[idx].urlIdx)%len(cands)]); heldByOthers(k) {
				return k, true
			}
		}
	}
	return 0, false
}

// takeUpReleased takes up the papers whose key was let go (schedule, after the commit of the
// lease's end): a cache hit completes them, the others go back to their host queue.
func (e *engine) takeUpReleased(now time.Time) {
	if len(e.released) == 0 {
		return
	}
	released := e.released
	e.released = nil
	for _, idx := range released {
		if _, ok := e.parked[idx]; !ok {
			continue
		}
		delete(e.parked, idx)
		if e.papers[idx].state != stateQueued {
			continue // cancelled while it waited
		}
		if spec, err := e.specOf(idx); err == nil {
			if rec, hit := e.cacheLookupPaper(idx, spec); hit {
				e.completeCached(idx, rec, now)
				continue
			}
		}
		h := e.hosts[e.papers[idx].host]
		h.push(idx)
		e.refreshHost(h, now)
	}
}
