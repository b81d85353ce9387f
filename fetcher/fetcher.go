// Package fetcher is the paperfetch fetcher: a stateless worker that pulls download leases
// from the coordinator over the FetcherGatewayService Work stream, downloads each PDF with a
// hardened HTTP client (SSRF guard, timeouts, stall detection, size limit, redirect limit,
// landing-page links, safe Range resume), validates and hashes it while streaming, stores it in
// the blob store under its content-addressed key, and reports DownloadEvents. It also serves
// FetcherService, which runs the same download for an operator (e.g. from grpcurl).
//
// Downloads never leave partial objects in the blob store: bodies are spooled to a local file
// (inside the bucket folder, hidden from List, for file:// buckets) and committed only after
// they are complete, valid and, when expected, checksum-verified; a file:// commit is an
// fsync + rename + directory fsync, an S3 commit an acknowledged PUT or multipart completion.
//
// Spool files do not outlive their use:
//
//   - A failed download removes its file, except a transient failure after which the body may
//     be resumed with a Range request (enough bytes and a validator from the origin): that
//     partial is kept, with a sidecar, under a name made of the fetcher id and the URL.
//   - When a URL is finished, by any fetcher sharing the spool folder (for file:// buckets, the
//     bucket's hidden temp folder), every spool file of that URL is removed, whichever fetcher
//     wrote it: stored (nothing is left to resume) or failed permanently (404, not a PDF, too
//     large, checksum mismatch...). A download still writing to a file removed this way (a
//     duplicate of a reassigned lease) keeps writing to the unlinked file and then fails
//     cleanly when committing it (a transient storage failure), unless the identical content
//     is already stored, in which case it completes with the same blob.
//   - Files not modified for Config.SpoolMaxAge (default 1h) are swept at start and every
//     Config.SpoolSweepInterval while Run runs: those of killed fetchers and partials that were
//     never resumed. Writes refresh a file's modification time, a partial is touched when a
//     retry reopens it, and files of this fetcher's running downloads are never swept.
//   - Drain (SIGTERM) aborts the downloads still running after the grace period: their files
//     are removed, except resumable partials, which stay for the retry (by this fetcher after a
//     restart with the same id) until the URL is finished by any fetcher or the sweep removes
//     them. A fetcher that drained with no running download leaves nothing.
package fetcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/clock"
	"github.com/paperfetch/paperfetch/internal/lifecycle"
	"github.com/paperfetch/paperfetch/internal/redact"
)

// flushTimeout bounds how long Drain waits, after its grace period, for aborted downloads to
// stop and their final events to be sent.
const flushTimeout = 5 * time.Second

// Fetcher downloads papers for the coordinator. Create it with New, serve its FetcherService
// with Register, run its Work stream with Run, and stop it with Drain then by cancelling Run.
type Fetcher struct {
	cfg    Config
	log    *slog.Logger
	clk    clock.Clock
	dl     *downloader
	m      *metrics
	bootID string

	mu               sync.Mutex
	book             *leaseBook
	sessionID        uint64 // id of the current (or last) Work stream
	connected        bool   // a Work stream is open
	draining         bool
	drainSentSession uint64
	// changed is closed (and set to nil) whenever the set of leases changes; made by the first
	// waitFor after that, so that the many changes nobody waits for cost no channel each.
	changed chan struct{}

	// commits holds a token per received body waiting for, or running, its commit (capacity
	// Config.PendingCommits): a slot that received a body takes a token before it returns its
	// credit, so a full queue holds the slots back (back-pressure).
	commits chan struct{}

	wake      chan struct{} // capacity 1: the session has something to send
	drained   chan struct{} // closed when Drain is done: the session closes the stream
	drainOnce sync.Once
	wg        sync.WaitGroup // running leases (downloads and their commits)

	// idle hands a lease to a lease goroutine that finished its last one (runner), so that the
	// goroutine, whose stack has grown to what a download needs, is reused rather than a new
	// one started (and its stack grown again) for every paper. Unbuffered: a send succeeds only
	// when a runner waits. There are at most as many runners as leases ever ran at once (the
	// slots, the prefetch window and the pending commits). stopRunners (closed when Run ends)
	// ends the idle ones (Run makes it before its first session); runners counts them all.
	idle        chan *lease
	stopRunners chan struct{}
	runners     sync.WaitGroup
	// running: Run is running (it is not reentrant: a second Run would replace stopRunners,
	// and both would close it).
	running atomic.Bool

	// afterSweep, when set (by tests, before Run), is called after every periodic spool sweep
	// with the number of files removed.
	afterSweep func(removed int)
}

// New creates a Fetcher. It removes the spool files not modified for Config.SpoolMaxAge (those
// of a killed fetcher); Run repeats that periodically. The Fetcher does not own cfg.Bucket.
// cfg must be valid (Validate; start from DefaultConfig).
func New(cfg Config) (*Fetcher, error) {
	cfg = cfg.withDefaults()
	if err := cfg.check(true); err != nil {
		return nil, fmt.Errorf("fetcher: %w", err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("fetcher metrics: %w", err)
	}
	st := newStore(cfg.Bucket, cfg.BlobURL, cfg.Committer, cfg.BlobSync, cfg.CommitterOptions())
	sp, err := newSpool(st.spoolDir(cfg.SpoolDir), cfg.ID, cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("fetcher: %w", err)
	}
	sp.metaAfter = cfg.ResumeMinBytes
	if !st.unnamedSpool() {
		sp.noUnnamed.Store(true)
	}
	g := &guard{allowAll: cfg.AllowPrivateNetworks, allow: cfg.AllowCIDRs}
	var boot [8]byte
	_, _ = rand.Read(boot[:])
	f := &Fetcher{
		cfg:    cfg,
		log:    cfg.Logger,
		clk:    cfg.Clock,
		m:      m,
		bootID: hex.EncodeToString(boot[:]),
		dl: &downloader{
			client:    newHTTPClient(&cfg, g),
			userAgent: cfg.userAgent(),
			reqHeader: newRequestHeader(cfg.Headers, cfg.userAgent()),
			proxy:     proxyConfig(&cfg),
			guard:     g,
			clk:       cfg.Clock,
			spool:     sp,
			store:     st,
			minResume: cfg.ResumeMinBytes,
			log:       cfg.Logger,
			metrics:   m,
			buffers: sync.Pool{New: func() any {
				b := make([]byte, copyBufSize)
				return &b
			}},
			tap: cfg.Tap,
		},
		book:    newLeaseBook(cfg.Prefetch),
		commits: make(chan struct{}, cfg.PendingCommits),
		wake:    make(chan struct{}, 1),
		drained: make(chan struct{}),
		idle:    make(chan *lease),
	}
	if cfg.Registerer != nil {
		if err := registerLeaseGauges(cfg.Registerer, f); err != nil {
			return nil, fmt.Errorf("fetcher metrics: %w", err)
		}
	}
	f.sweepSpool(context.Background())
	return f, nil
}

// Register registers the FetcherService on s.
func (f *Fetcher) Register(s grpc.ServiceRegistrar) {
	pb.RegisterFetcherServiceServer(s, &fetchService{f: f, calls: make(chan struct{}, f.cfg.MaxFetchCalls)})
}

// ID returns the fetcher id sent in Hello.
func (f *Fetcher) ID() string { return f.cfg.ID }

// Part is the fetcher's work loop (Run on conn) as a part of a process (package lifecycle):
// when the process stops it drains first (Drain, with Config.DrainGrace for the running
// downloads; aborted ones are logged), then Run's context is cancelled.
func (f *Fetcher) Part(conn grpc.ClientConnInterface) lifecycle.Part {
	return lifecycle.Part{
		Name: "fetcher " + f.cfg.ID,
		Run:  func(ctx context.Context) error { return f.Run(ctx, conn) },
		Drain: func() {
			ctx, cancel := context.WithTimeout(context.Background(), f.cfg.DrainGrace)
			defer cancel()
			if err := f.Drain(ctx); err != nil {
				f.cfg.Logger.Warn("drained with aborted downloads", "grace", f.cfg.DrainGrace, "err", err)
			}
		},
	}
}

// Drain tells the coordinator the fetcher is shutting down (no more work), waits until the
// running downloads have finished and their results are acknowledged, or until ctx ends; then
// it aborts what still runs, lets the aborted downloads report, and makes Run close the Work
// stream and return. It returns an error when downloads had to be aborted.
func (f *Fetcher) Drain(ctx context.Context) error {
	f.mu.Lock()
	f.draining = true
	if f.book.handBackWaiting(f.clk.Now()) > 0 {
		f.notifyLocked()
	}
	f.mu.Unlock()
	f.poke()
	defer f.drainOnce.Do(func() { close(f.drained) })

	if f.waitFor(ctx, func() bool { return f.book.len() == 0 }) {
		return nil
	}
	f.mu.Lock()
	aborted := 0
	for _, l := range f.book.running() {
		aborted++
		l.cancel(&abortError{why: "fetcher shutting down: drain grace period over"})
	}
	f.mu.Unlock()
	fctx, cancel := clockTimeout(f.clk, flushTimeout)
	defer cancel()
	f.waitFor(fctx, func() bool { return f.book.settled(f.sessionID, f.connected) })
	if aborted > 0 {
		return fmt.Errorf("drain: aborted %d running downloads: %w", aborted, context.Cause(ctx))
	}
	return nil
}

// waitFor waits until cond (called with f.mu held) is true or ctx ends; it reports whether
// cond became true.
func (f *Fetcher) waitFor(ctx context.Context, cond func() bool) bool {
	for {
		f.mu.Lock()
		ok := cond()
		if f.changed == nil {
			f.changed = make(chan struct{})
		}
		ch := f.changed
		f.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// notifyLocked wakes waitFor callers; f.mu must be held.
func (f *Fetcher) notifyLocked() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// poke tells the session there is something to send.
func (f *Fetcher) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// emit queues a non-terminal event of l.
func (f *Fetcher) emit(l *lease, set func(*pb.DownloadEvent)) {
	f.mu.Lock()
	ok := f.book.emit(l, f.clk.Now(), set)
	f.mu.Unlock()
	if ok {
		f.poke()
	}
}

// startLease registers an Assign and starts its download under parent (a prefetched
// successor may wait for its predecessor's slot, see leaseBook.add).
func (f *Fetcher) startLease(parent context.Context, a *pb.Assign) {
	id := a.GetLeaseId()
	if id == "" {
		f.log.Warn("ignoring an Assign without lease id")
		return
	}
	f.mu.Lock()
	l, start := f.book.add(a, f.clk.Now(), f.draining)
	if l == nil {
		f.mu.Unlock()
		f.log.Debug("ignoring a duplicate Assign", "lease", id)
		return
	}
	if f.draining && l.running {
		p := (&failure{
			class: pb.FailureClass_FAILURE_CLASS_TRANSIENT, reason: pb.FailureReason_FAILURE_REASON_ABORTED,
			msg: "fetcher is draining", url: a.GetUrl(),
		}).proto()
		f.book.finish(l, f.clk.Now(), true, func(ev *pb.DownloadEvent) { ev.Kind = &pb.DownloadEvent_Failed{Failed: p} })
	}
	if !l.running { // finished at once: draining, or a void successor
		f.notifyLocked()
		f.mu.Unlock()
		f.poke()
		return
	}
	l.ctx, l.cancel = context.WithCancelCause(parent)
	f.mu.Unlock()
	if start {
		f.launch(l)
	}
}

// launch runs lease l, which holds a slot, in a goroutine of its own.
func (f *Fetcher) launch(l *lease) {
	if l == nil {
		return
	}
	f.wg.Add(1)
	select {
	case f.idle <- l:
	default:
		f.runners.Add(1)
		go f.runner(l)
	}
}

// runner runs l, then each lease handed to it by launch while it waits idle, until Run ends.
func (f *Fetcher) runner(l *lease) {
	defer f.runners.Done()
	for l != nil {
		f.runLease(l.ctx, l)
		l = nil
		select {
		case l = <-f.idle:
		case <-f.stopRunners:
		}
	}
}

// jobFor builds the download job of an Assign.
func (f *Fetcher) jobFor(a *pb.Assign) job {
	j := job{
		url:         a.GetUrl(),
		expectedSHA: strings.ToLower(a.GetExpectedSha256()),
		maxSize:     f.cfg.MaxSize,
		timeout:     f.cfg.Timeout,
		stall:       f.cfg.StallTimeout,
		store:       true,
		resume:      true,
		// Every Assign counts an attempt (committed before it is sent), so attempt 1 is the
		// paper's first Assign ever.
		firstAttempt: a.GetAttempt() == 1,
		batchID:      a.GetBatchId(),
		paperID:      a.GetPaperId(),
	}
	if lim := a.GetLimits(); lim != nil {
		if lim.GetMaxSizeBytes() > 0 {
			j.maxSize = lim.GetMaxSizeBytes()
		}
		if d := lim.GetTimeout(); d != nil && d.AsDuration() > 0 {
			j.timeout = d.AsDuration()
		}
		if d := lim.GetStallTimeout(); d != nil && d.AsDuration() > 0 {
			j.stall = d.AsDuration()
		}
	}
	return j
}

// runLease runs one lease and records its terminal event. A download's slot is freed as soon
// as its body is received and a place in the commit queue is taken; the commit (making the
// blob durable) then runs off the slot's path, and the completed event follows it.
func (f *Fetcher) runLease(ctx context.Context, l *lease) {
	defer f.wg.Done()
	defer l.cancel(nil)
	start := f.clk.Now()
	f.m.active.Inc()
	var (
		out  outcome
		fail *failure
		kind func(*pb.DownloadEvent)
	)
	if step := l.a.GetResolve(); step != nil {
		var res *pb.ResolveResult
		res, fail = f.dl.resolve(ctx, f.jobFor(l.a), step, &leaseReporter{f: f, l: l})
		f.m.active.Dec()
		if fail != nil {
			kind = f.terminalKind(out, fail, start)
		} else {
			kind = func(ev *pb.DownloadEvent) { ev.Kind = &pb.DownloadEvent_Resolved{Resolved: res} }
			f.log.Debug("resolved", "lease", l.a.GetLeaseId(), "paper", l.a.GetPaperId(), "route", step.GetRoute(), "candidates", len(res.GetCandidateUrls()))
		}
	} else {
		out, fail = f.downloadLease(ctx, l)
		kind = f.terminalKind(out, fail, start)
	}
	if fail != nil {
		f.log.Info("download failed", "lease", l.a.GetLeaseId(), "paper", l.a.GetPaperId(), "class", fail.class, "reason", fail.reason, "status", fail.status, "err", redact.Text(fail.msg))
	} else if f.log.Enabled(ctx, slog.LevelDebug) { // building the attributes allocates
		f.log.Debug("download completed", "lease", l.a.GetLeaseId(), "paper", l.a.GetPaperId(), "sha256", out.sha256, "size", out.size)
	}
	f.mu.Lock()
	next := f.book.finish(l, f.clk.Now(), f.draining, kind)
	f.notifyLocked()
	f.mu.Unlock()
	f.poke()
	f.launch(next)
}

// downloadLease receives the body of a download lease, reports it received, takes a place in
// the commit queue (waiting while it is full), frees the slot and commits the body.
func (f *Fetcher) downloadLease(ctx context.Context, l *lease) (outcome, *failure) {
	// The download runs under the lease's own context (ctx is l.ctx): its watchdog cancels the
	// lease, which runLease cancels at its end anyway.
	r, fail := f.dl.receiveIn(ctx, l.cancel, f.jobFor(l.a), &leaseReporter{f: f, l: l})
	f.m.active.Dec()
	if fail != nil {
		return outcome{}, fail
	}
	f.m.pendingCommits.Inc()
	defer f.m.pendingCommits.Dec()
	var next *lease
	select {
	case f.commits <- struct{}{}:
		// A place was free: the body_received event and the freed slot are queued together,
		// so that the slot's credit can ride on the event (leaseBook.take).
		f.mu.Lock()
		now := f.clk.Now()
		f.book.received(l, r.out.size, now)
		next = f.book.freeSlot(l, now, f.draining)
		f.mu.Unlock()
	default:
		// The commit queue is full: the exchange is over all the same (body_received goes
		// now), but the slot waits for a place (back-pressure).
		f.mu.Lock()
		f.book.received(l, r.out.size, f.clk.Now())
		f.mu.Unlock()
		f.poke()
		select {
		case f.commits <- struct{}{}:
		case <-r.ctx.Done():
			f.dl.drop(r)
			return outcome{}, classifyError(r.ctx, context.Cause(r.ctx))
		}
		f.mu.Lock()
		next = f.book.freeSlot(l, f.clk.Now(), f.draining)
		f.mu.Unlock()
	}
	defer func() { <-f.commits }()
	f.poke()
	f.launch(next)
	return f.dl.commit(r)
}

// terminalKind returns a setter for the completed or failed part of an event, and records the
// download's metrics.
func (f *Fetcher) terminalKind(out outcome, fail *failure, start time.Time) func(*pb.DownloadEvent) {
	elapsed := f.clk.Now().Sub(start)
	if fail != nil {
		f.m.failed.Inc()
		f.m.failures.WithLabelValues(fail.class.String(), fail.reason.String()).Inc()
		f.m.failedDur.Observe(elapsed.Seconds())
		p := fail.proto()
		return func(ev *pb.DownloadEvent) { ev.Kind = &pb.DownloadEvent_Failed{Failed: p} }
	}
	f.m.completed.Inc()
	f.m.completedDur.Observe(elapsed.Seconds())
	c := fitCompleted(&pb.DownloadCompleted{
		Sha256:      out.sha256,
		Size:        out.size,
		ContentType: out.contentType,
		FinalUrl:    out.finalURL,
		BlobKey:     out.blobKey,
		Duration:    durationpb.New(elapsed),
	})
	return func(ev *pb.DownloadEvent) { ev.Kind = &pb.DownloadEvent_Completed{Completed: c} }
}

// clockTimeout returns a context cancelled after d on clk.
func clockTimeout(clk clock.Clock, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	t := clk.NewTimer(d)
	stop := context.AfterFunc(ctx, func() { t.Stop() })
	go func() {
		select {
		case <-t.C():
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() { stop(); cancel() }
}
