package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// engine is the coordinator's state machine. It is driven by exactly one goroutine (the
// loop, or a test): every method runs on that goroutine and nothing in it is locked.
//
// It performs no I/O. It reads the committed state through its storage (storage.go) and
// hands everything an iteration must write and send to the loop as one value (ready.go). One
// iteration (loop.iterate): apply messages (they mutate memory, mark what changed and queue
// outputs), tick (what is due now), schedule (lease queued papers to fetchers with credit),
// takeReady; the loop then commits the writes in one store transaction, delivers the outputs
// and tells the engine (applied). Outputs are only sent after the commit, so nothing is
// acknowledged, assigned or replied before it is durable.
//
// Its state is grouped by responsibility; each group is embedded, so its fields read as the
// engine's own (e.papers, e.leases...), and documented in the file that works on it.
type engine struct {
	cfg    Config
	stored storage // the committed state, read-only
	log    *slog.Logger
	m      *metrics
	rnd    *rand.Rand

	catalog      // papers and batches, their indexes and counts (paperstate.go, submit.go)
	cacheIndex   // SUCCEEDED papers by id and URL (cache.go)
	hostSched    // hosts, their queues and wake-up order, retry timers (schedule.go, timers.go)
	fetcherPool  // connected fetchers and their credit (gateway_engine.go)
	leaseTable   // running leases, their ids and deadlines (lease.go, deadline.go)
	singleFlight // cache keys being downloaded and the papers waiting for them (inflight.go)
	watchSet     // batches with watchers (publish.go)
	verification // completions checked against the blob store (verify.go)
	collection   // batch deletion, retention and blob collection (delete.go)
	iteration    // what the current iteration changed and must write and send (ready.go)
	readViews    // the committed views that reads see (readview.go)
}

// catalog is every paper and batch: the compact in-memory paper states, the batches, and
// the indexes from ids to them.
type catalog struct {
	papers    []memPaper
	batches   []*batch
	batchByID map[string]uint32
	byBatch   map[uint64]uint32 // batchKey(idHash, batch) -> paper
	overflow  map[string]uint32 // (batch, paper id) -> paper, for the rare hash collisions
	counts    [numStates]int64  // papers per state, all batches
}

// cacheIndex finds stored PDFs for new papers. Hits are verified against the store.
type cacheIndex struct {
	cacheByID  map[uint64]uint32 // paper id hash -> a SUCCEEDED paper
	cacheByURL map[uint64]uint32 // URL hash -> a SUCCEEDED paper fetched from it
}

// hostSched is the politeness scheduler: every host, the ones that may start a request now
// (runnable), the ones waiting for their delay or pause (sleeping), and the papers waiting in
// RETRY_WAIT (retry).
type hostSched struct {
	hosts      []*host
	hostByName map[string]uint32
	runnable   hostRing
	sleeping   hostHeap
	retry      retryHeap
	// undelayedHosts counts the hosts without a per-host delay: the only ones that get
	// prefetched successors (prefetch.go).
	undelayedHosts int
	// queueGen changes when a host without a per-host delay may have gained queued papers
	// (refreshHost): an idle prefetch window is scanned again (prefetch.go).
	queueGen uint64
}

// fetcherPool is the connected fetchers' Work streams, in round-robin order.
type fetcherPool struct {
	conns   []*fetcherConn
	rr      int // the next conn to try
	credits int // sum of the credits of conns that may receive work
	// candidatesSeen counts the prefetch candidates fillWindow examined (prefetch.go): the
	// scans' cost, which the tests bound.
	candidatesSeen uint64
	// reclaiming counts the waiting successors cancelled for streams with idle credits
	// (reclaimForIdle) whose hand-back has not come yet. stealGen changes when a reclaim may
	// have become possible (a host slot freed, credits added, a successor leased); stealSeen
	// is the stealGen of the last reclaim scan; stealAt is when the first successor that scan
	// found too young may be reclaimed (zero: none).
	reclaiming          int
	stealGen, stealSeen uint64
	stealAt             time.Time
	// reclaimCands is reclaimForIdle's scratch list of candidates (kept for its capacity).
	reclaimCands []*lease
}

// leaseTable is the running leases: assigned ones, orphans reloaded after a restart (waiting
// until graceUntil to be re-announced), how their ids are issued and when they expire.
type leaseTable struct {
	leases     map[uint32]*lease
	orphans    map[uint32]*lease
	graceUntil time.Time
	ids        leaseIDs // issues and checks lease ids
	// Lease deadlines (deadline.go).
	limits          *pb.DownloadLimits // sent in every Assign; Timeout always set
	downloadTimeout time.Duration      // limits.Timeout
	nextLeaseScan   time.Time          // zero: no lease
}

// watchSet is the batches with WatchBatch streams.
type watchSet struct {
	watched map[uint32]*batch
}

// verification is the completions waiting to be checked against the blob store.
type verification struct {
	verify bool // completions are verified against the blob store
}

// collection is batch deletion and blob collection (delete.go): whether a collector deletes
// released blobs, the blobs released and awaiting it, when blobs were collected (for leases
// older than that), the next retention check, the batches being deleted.
type collection struct {
	collector     bool
	gcPending     map[string]struct{}
	gcDone        map[string]time.Time
	damaged       map[string]struct{} // blobs ReadPaper found damaged (damaged.go)
	nextRetention time.Time
	deletions     []*deletion // batches being deleted, a slice per iteration
	deleteSlice   int         // papers deleted per iteration; 0: defaultDeleteSlice
}

// iteration is what the current loop iteration changed (to be written) and produced (to be
// sent once written): takeReady hands it to the loop.
type iteration struct {
	dirty        []uint32
	cold         map[uint32]*coldUpdate
	newPapers    []newPaper
	pendingSpecs map[uint32][]byte
	pendingPlans map[uint32]*plan // plans changed in this iteration (read-your-writes)
	ws           writeSet
	out          []outMsg
	replies      []func()
	cacheAdds    []cacheAdd
	finalBatches []*batch
	verifyOut    []verifyJob // completions for the verifiers
	collectOut   []string    // released blobs for the collector
}

// errInternal marks failures of the coordinator itself (store corruption...).
var errInternal = errors.New("internal error")

// newEngine returns an empty engine reading the committed state through stored; load fills
// it. ids issues its lease ids (keyed by the store's identity).
func newEngine(cfg Config, stored storage, ids leaseIDs, m *metrics) *engine {
	e := &engine{
		cfg:    cfg,
		stored: stored,
		log:    cfg.Logger,
		m:      m,
		rnd:    rand.New(cfg.Rand),
		catalog: catalog{
			batchByID: make(map[string]uint32),
			byBatch:   make(map[uint64]uint32),
			overflow:  make(map[string]uint32),
		},
		cacheIndex: cacheIndex{
			cacheByID:  make(map[uint64]uint32),
			cacheByURL: make(map[uint64]uint32),
		},
		hostSched: hostSched{hostByName: make(map[string]uint32)},
		leaseTable: leaseTable{
			leases:  make(map[uint32]*lease),
			orphans: make(map[uint32]*lease),
			ids:     ids,
			limits:  cfg.assignLimits(),
		},
		watchSet:     watchSet{watched: make(map[uint32]*batch)},
		readViews:    readViews{pub: &batchViews{}},
		verification: verification{verify: cfg.Bucket != nil},
		collection: collection{
			collector: cfg.Bucket != nil,
			gcPending: make(map[string]struct{}),
			gcDone:    make(map[string]time.Time),
		},
		iteration: iteration{
			cold:         make(map[uint32]*coldUpdate),
			pendingSpecs: make(map[uint32][]byte),
			pendingPlans: make(map[uint32]*plan),
		},
	}
	e.downloadTimeout = e.limits.GetTimeout().AsDuration()
	return e
}

// debug reports whether debug logs are wanted (to skip building their attributes).
func (e *engine) debug() bool { return e.log.Enabled(context.Background(), slog.LevelDebug) }

// message is something the loop applies to the engine.
type message interface {
	apply(e *engine, now time.Time)
}
