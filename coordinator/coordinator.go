package coordinator

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

// maxDrain bounds the messages applied in one loop iteration (one group commit).
const maxDrain = 8192

// verifyQueueSize bounds the completions handed to the verifiers and not yet checked.
const verifyQueueSize = 1024

// Coordinator is the coordinator service. Create it with Open, register it on a gRPC server,
// run its loop with Run, and Close it after Run returned.
type Coordinator struct {
	cfg     Config
	st      *store
	eng     *engine
	loop    *loop
	m       *metrics
	inbox   chan message  // client requests (CoordinatorService)
	gwInbox chan message  // fetcher traffic (Work streams, verifiers)
	done    chan struct{} // closed when Run returns

	verifyJobs chan verifyJob  // completions to check against the blob store (verify.go)
	gcJobs     chan []string   // released blobs to delete from the blob store (delete.go)
	watchers   *watchAdmission // WatchBatch streams per batch and per client
	onWatch    func(*watcher)  // tests: called with every registered watcher
	// blobDir is the folder of a local blob store (file://), whose completions the Work
	// streams' receivers check themselves (checkCompletions); "" otherwise.
	blobDir string

	closeStreamsOnce sync.Once
	streamsClosed    chan struct{} // closed by CloseStreams
}

// Open opens (or creates) the store in cfg.DataDir, locking it (a second coordinator on the
// same directory fails after cfg.LockTimeout with ErrStoreLocked), and reloads every batch and
// paper. Leases that were running when the previous process stopped wait cfg.ReconnectGrace
// (counted from Open) for their fetchers to re-announce them before they are re-queued.
// cfg must be valid (Validate; start from DefaultConfig).
func Open(cfg Config) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	cfg = cfg.withDefaults()
	openStart := time.Now()
	st, err := openStore(cfg.DataDir, cfg.LockTimeout, cfg.NoSync)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	c := &Coordinator{
		cfg: cfg, st: st, inbox: make(chan message, cfg.InboxSize), gwInbox: make(chan message, cfg.InboxSize), done: make(chan struct{}),
		streamsClosed: make(chan struct{}), verifyJobs: make(chan verifyJob, verifyQueueSize),
		gcJobs:   make(chan []string, gcQueueSize),
		watchers: newWatchAdmission(cfg.WatchersPerBatch, cfg.WatchersPerPeer),
	}
	c.m, err = newMetrics(cfg.Registerer, func() float64 { return float64(len(c.inbox) + len(c.gwInbox)) })
	if err != nil {
		_ = st.close()
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	c.loop = newLoop(cfg, st, c.m, c.inbox, c.gwInbox)
	c.eng = c.loop.e
	c.loop.verifyCh = c.verifyJobs
	if cfg.Bucket != nil {
		c.loop.gcCh = c.gcJobs
	}
	if dir, ok := blobstore.LocalDir(cfg.BucketURL); ok && cfg.Bucket != nil {
		c.blobDir = dir
	}
	if cfg.Bucket == nil {
		cfg.Logger.Warn("no blob store: completions reported by fetchers are believed without verification")
	}
	opened := time.Since(openStart)
	start := time.Now()
	if err := c.eng.load(cfg.Clock.Now()); err != nil {
		_ = st.close()
		return nil, fmt.Errorf("coordinator: reload store: %w", err)
	}
	c.m.update(c.eng)
	cfg.Logger.Info("coordinator store loaded", "dir", cfg.DataDir, "batches", len(c.eng.batches),
		"papers", len(c.eng.papers), "orphan_leases", len(c.eng.orphans), "open", opened, "reload", time.Since(start))
	return c, nil
}

// Register registers CoordinatorService and FetcherGatewayService on s.
func (c *Coordinator) Register(s grpc.ServiceRegistrar) {
	pb.RegisterCoordinatorServiceServer(s, &api{c: c})
	pb.RegisterFetcherGatewayServiceServer(s, &gateway{c: c})
}

// Run is the owner loop; call it once. It returns nil when ctx is done, or an error when the
// store fails (the in-memory state can then no longer be trusted: restart the process). Calls
// made while Run is not running wait (or fail with RESOURCE_EXHAUSTED when the inbox is full);
// calls made after it returned fail with UNAVAILABLE.
func (c *Coordinator) Run(ctx context.Context) error {
	defer close(c.done)
	if c.cfg.Bucket != nil {
		vctx, stopVerifiers := context.WithCancel(ctx)
		wait := c.runVerifiers(vctx, c.cfg.Verifiers)
		waitCollector := c.runCollector(vctx)
		defer func() {
			stopVerifiers()
			wait()
			waitCollector()
		}()
	}
	return c.loop.run(ctx, c.cfg.Clock, c.cfg.WatchInterval)
}

// CloseStreams ends every Work and WatchBatch stream with UNAVAILABLE so that a graceful
// server stop does not wait for them. Fetchers keep their leases: they re-announce them to the
// next coordinator, which adopts them. Call it when shutting down, before stopping the server.
func (c *Coordinator) CloseStreams() {
	c.closeStreamsOnce.Do(func() { close(c.streamsClosed) })
}

// Close closes the store. Call it after Run returned.
func (c *Coordinator) Close() error {
	c.loop.stored.release()
	return c.st.close()
}
