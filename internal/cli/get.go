package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paperfetch/paperfetch/embedded"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/atomicfile"
	"github.com/paperfetch/paperfetch/internal/fielderr"
	"github.com/paperfetch/paperfetch/internal/input"
	"github.com/paperfetch/paperfetch/internal/logging"
	"github.com/paperfetch/paperfetch/internal/progress"
	"github.com/paperfetch/paperfetch/internal/storagefull"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// embeddedCallTimeout is the deadline of each unary call `get` makes to its embedded
// coordinator (in-process, so only a wedged coordinator comes near it).
const embeddedCallTimeout = 30 * time.Second

// getOptions are the flags of `paperfetch get`: the embedded system's options (bound to the
// flags of the same names), and get's own.
type getOptions struct {
	sys          embedded.Options
	out          string
	nameTemplate string
	report       string
	quiet        bool
	json         bool
	format       string
	strict       bool
	batchID      string
	logLevel     string
	link         bool
	dashboard    string
}

// maxInputErrorsShown caps the malformed entries printed one by one.
const maxInputErrorsShown = 20

const getHelp = `
Downloads every paper of the INPUTs into --out, with an embedded coordinator and fetchers. An
INPUT is a file of papers ("-" reads standard input), or a paper itself: an http(s) URL, an
arXiv id or a DOI (paperfetch get 2301.00001 https://example.org/paper.pdf 10.1234/abc). Each
PDF is verified (SHA-256, "%PDF-" signature) and named after its paper id: OUT/2301.00001.pdf,
OUT/hep-th_9901001.pdf... Each is an ordinary file (a copy-on-write clone of the cached copy
where the file system can, else a copy); --link makes hard links to the cache instead.

The state lives in OUT/.paperfetch (store, blobs, log). Running the same command again resumes
an interrupted run, and after a finished run it completes at once from the cache (papers that
failed are tried again). The papers that failed are listed in OUT/failed.txt, an input for the
next run.

Exit status: 0 all papers succeeded, 1 some failed or input lines were skipped, 2 usage or
input error, 3 interrupted, 4 out of disk space (or quota, or a read-only file system).`

func (a *app) get(ctx context.Context, args []string) error {
	r := &getRun{a: a, started: time.Now()}
	inputs, err := r.parse(args)
	if err != nil {
		return err
	}
	defer r.cleanup()
	if err := r.prepare(ctx, inputs); err != nil {
		return err
	}
	if err := r.start(ctx); err != nil {
		return err
	}
	final, firstBytes, err := r.download(ctx)
	return r.end(ctx, final, firstBytes, err)
}

// failure is the error of a phase that failed with err: when the run was interrupted (ctx is
// done) it exits ExitInterrupted, whatever err says; else with code.
func failure(ctx context.Context, code int, err error) error {
	if ctx.Err() != nil {
		return &exitError{code: ExitInterrupted, err: errors.New("interrupted")}
	}
	return &exitError{code: code, err: err}
}

// getRun is one `paperfetch get`, in phases: parse the flags, prepare the inputs (validate,
// count, derive the batch id), start the embedded system and pick the batch, download (watch
// the batch on the progress display, placing each PDF as it succeeds), and end: finish (final
// pass, report, failed.txt) then the summary, or stop (interrupted, disk full) with what is
// done; it runs on every exit that got as far as the download.
type getRun struct {
	a        *app
	o        getOptions
	started  time.Time
	stateDir string
	in       inputSet
	scan     scanResult
	cleanups []func()

	logger  *slog.Logger
	sys     *embedded.System
	closed  bool
	client  pb.CoordinatorServiceClient
	batchID string
	state   pb.BatchState
	display progress.Display
	mat     *materializer
	placer  *placer // places succeeded papers during the download (set by download)
	// taps are the output files the downloads write as they receive them (nil with --link or
	// --name-template): set before the embedded system starts, armed once the batch is known.
	taps *outTaps

	storageMu  sync.Mutex // guards storageErr: the placers report too
	storageErr error      // the first out-of-space (quota, read-only) error: the run stops
}

// cleanup releases what the run opened, in reverse order.
func (r *getRun) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

// closeSys stops the embedded system (once).
func (r *getRun) closeSys() {
	if r.sys != nil && !r.closed {
		r.closed = true
		if err := r.sys.Close(); err != nil {
			r.logger.Warn("embedded shutdown", "err", err)
		}
	}
}

// parse reads the flags.
func (r *getRun) parse(args []string) ([]string, error) {
	fs := r.a.newFlagSet("get", "[flags] INPUT...", getHelp)
	o := &r.o
	fs.StringVar(&o.out, "out", "papers", "`DIR` to write the PDFs into (-o)")
	fs.StringVar(&o.out, "o", "papers", "`DIR`: short for --out")
	e := &o.sys
	*e = embedded.DefaultOptions()
	fs.IntVar(&e.Concurrency, "concurrency", e.Concurrency, "`N` parallel downloads in total (-j)")
	fs.IntVar(&e.Concurrency, "j", e.Concurrency, "`N`: short for --concurrency")
	fs.IntVar(&e.Fetchers, "fetchers", e.Fetchers, "run `N` embedded fetchers (the concurrency is split across them)")
	fs.IntVar(&e.PerHostConcurrency, "per-host-concurrency", e.PerHostConcurrency, "at most `N` parallel downloads from one host")
	fs.Var(delayFlag{&e.PerHostDelay}, "per-host-delay", "minimum `DURATION` between two requests to one host, e.g. 500ms, 2s (0: none)")
	fs.Var(sizeFlag{&e.MaxSize}, "max-size", "maximum `SIZE` of one PDF (e.g. 100MiB)")
	fs.DurationVar(&e.Timeout, "timeout", e.Timeout, "overall deadline of one download attempt")
	fs.IntVar(&e.Retries, "retries", e.Retries, "retry a failed download up to `N` times (transient errors; permanent ones move on to the next URL)")
	fs.StringVar(&e.UserAgent, "user-agent", "", "`VALUE` of the User-Agent header (default: paperfetch/VERSION with a contact address)")
	fs.BoolVar(&e.AllowPrivateNetworks, "allow-private-networks", false, "allow downloads from loopback and private addresses (unsafe; for local mirrors and tests)")
	fs.Func("allow-cidr", embedded.AllowCIDRUsage, embedded.AllowCIDRFlag(&e.AllowCIDRs))
	fs.StringVar(&e.ArxivBase, "arxiv-base", input.DefaultArxivBase, "where arXiv ids are fetched from, as `URL`/pdf/ID")
	registerResolveFlags(fs, e)
	fs.Func("host-limit", "politeness of one host `HOST=DELAY/CONCURRENCY`, e.g. doi.org=2s/1 (repeatable; overrides the DOI APIs' defaults too)", embedded.HostLimitFlag(&e.HostLimits))
	fs.StringVar(&o.nameTemplate, "name-template", "", "name the PDFs `TEMPLATE`.pdf from {id}, {doi}, {year}, {first_author}, {title} (at most 1024 bytes; default: the paper id)")
	fs.StringVar(&o.report, "report", "", "write a JSON report of every paper to `FILE` (\"-\": standard output)")
	fs.BoolVar(&o.quiet, "quiet", false, "print only errors and the summary (-q)")
	fs.BoolVar(&o.quiet, "q", false, "short for --quiet")
	fs.BoolVar(&o.json, "json", false, "print progress, finished papers and the summary as JSON lines on standard output")
	fs.StringVar(&o.format, "format", "auto", "`FORMAT` of the inputs: auto, lines, jsonl, csv, bibtex, ris or csl-json")
	fs.BoolVar(&o.strict, "strict", false, "fail (exit 2) on any malformed input entry instead of skipping it")
	fs.StringVar(&o.batchID, "batch-id", "", "batch `ID` to use (default: derived from the input, so a rerun resumes the same batch)")
	fs.StringVar(&o.dashboard, "dashboard", "", "serve the live web dashboard (and the /v1/ JSON API) of this run on `ADDR`, e.g. 127.0.0.1:7480; its URL is printed (no authentication: keep it on loopback)")
	fs.StringVar(&o.logLevel, "log-level", "info", "`LEVEL` of the log written to OUT/.paperfetch/paperfetch.log: debug, info, warn or error")
	fs.StringVar(&e.Proxy, "proxy", "", "download through the proxy at `URL`: http(s)://HOST:PORT for an HTTP proxy, or a prefix such as https://ezproxy.example.edu/login?url= (see docs/cli.md for what the address guard checks through it)")
	fs.Func("header", "add the request header `'NAME: VALUE'` to every download, e.g. an API key or a cookie you hold (repeatable, at most 32, each at most 8 KiB; sent to every host of the list)", embedded.HeaderFlag(&e.Headers))
	fs.BoolVar(&o.link, "link", false, "make each PDF a hard link to the cached copy instead of a file of its own (saves space; editing the PDF then edits the cache)")
	inputs, err := r.a.parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	return inputs, o.validate(inputs)
}

// prepare reads the inputs once: malformed entries are reported, the papers counted, and the
// batch id derived.
func (r *getRun) prepare(ctx context.Context, inputs []string) error {
	o := &r.o
	format, _ := input.ParseFormat(o.format)
	stderr := r.a.env.Stderr
	r.stateDir = o.sys.Dir // OUT/.paperfetch (validate)
	if err := os.MkdirAll(r.stateDir, 0o755); err != nil {
		return &exitError{code: exitCodeFor(err, ExitUsage), err: fmt.Errorf("create output folder: %w", err)}
	}
	atomicfile.RemoveTemps(o.out)
	in, err := newInputSet(inputs, input.Options{Format: format, ArxivBase: o.sys.ArxivBase})
	if err != nil {
		return err
	}
	r.in = in
	r.in.kept = &keptPapers{} // the submission takes the papers the scan read (keptPapers)
	if hasStdin(inputs) {
		spool, err := spoolStdin(r.a.env.Stdin, r.stateDir)
		if err != nil {
			return &exitError{code: exitCodeFor(err, ExitUsage), err: err}
		}
		r.cleanups = append(r.cleanups, func() { _ = spool.Close(); _ = os.Remove(spool.Name()) })
		r.in.stdin = spool
	}
	shown := 0
	scan, err := r.in.scan(ctx, func(err error) {
		if shown < maxInputErrorsShown {
			fmt.Fprintf(stderr, "paperfetch: %v\n", err)
		}
		shown++
	})
	if err != nil {
		return failure(ctx, ExitUsage, err)
	}
	if scan.bad > maxInputErrorsShown {
		fmt.Fprintf(stderr, "paperfetch: ... and %d more malformed entries\n", scan.bad-maxInputErrorsShown)
	}
	if scan.bad > 0 && o.strict {
		return &exitError{code: ExitUsage, err: fmt.Errorf("%d malformed input entr%s (--strict); nothing was downloaded", scan.bad, plural(scan.bad, "y", "ies"))}
	}
	if scan.papers == 0 {
		return &exitError{code: ExitUsage, err: errors.New("no papers in the input")}
	}
	r.scan = scan
	logFile, logger, err := openLog(r.stateDir, o.logLevel)
	if err != nil {
		return &exitError{code: exitCodeFor(err, ExitUsage), err: err}
	}
	r.cleanups = append(r.cleanups, func() { _ = logFile.Close() })
	r.logger = logger
	logger.Info("paperfetch get starting", "inputs", inputs, "papers", scan.papers, "malformed", scan.bad, "duplicates", scan.duplicates)
	return nil
}

// start runs the embedded system and picks the batch (resuming an unfinished one).
func (r *getRun) start(ctx context.Context) error {
	o := &r.o
	ecfg := o.sys
	ecfg.Logger = r.logger
	if o.dashboard != "" {
		var err error
		if ecfg.HTTPListener, err = net.Listen("tcp", o.dashboard); err != nil {
			return &exitError{code: ExitUsage, err: fmt.Errorf("--dashboard: %w", err)}
		}
	}
	if !o.link && o.nameTemplate == "" {
		// Downloads write the output files as they receive them, once armed (below).
		r.taps = newOutTaps(outTapBound(descriptorLimit()))
		ecfg.Tap = r.taps
	}
	sys, err := embedded.Start(ctx, ecfg)
	if err != nil {
		if errors.Is(err, embedded.ErrStoreLocked) {
			return &exitError{code: ExitUsage, err: fmt.Errorf("another paperfetch get is already downloading into %s; wait for it to finish, or use another --out", o.out)}
		}
		return &exitError{code: exitCodeFor(err, ExitUsage), err: err}
	}
	r.sys = sys
	r.cleanups = append(r.cleanups, r.closeSys)
	if ecfg.HTTPListener != nil {
		url, exposed := dashboardURL(ecfg.HTTPListener.Addr())
		fmt.Fprintf(r.a.env.Stderr, "Dashboard: %s\n", url)
		if exposed {
			fmt.Fprintf(r.a.env.Stderr, "Warning: the dashboard listens on %s, reachable from other machines, and has no authentication: anyone who reaches it can read, submit and cancel. Prefer --dashboard 127.0.0.1:PORT.\n", ecfg.HTTPListener.Addr())
		}
	}
	r.client = pb.NewCoordinatorServiceClient(sys.Conn())
	if r.a.wrapClient != nil {
		r.client = r.a.wrapClient(r.client)
	}
	r.batchID, r.state, err = pickBatch(ctx, r.client, o.batchID, "get-"+r.scan.digest[:16])
	if err != nil {
		return failure(ctx, ExitFailed, err)
	}
	r.logger.Info("batch chosen", "batch", r.batchID, "state", r.state)
	if err := r.supersede(ctx); err != nil {
		return err
	}
	r.mat = &materializer{out: o.out, bucketURL: sys.BucketURL(), client: r.client, link: o.link, template: o.nameTemplate}
	r.mat.holdDirs()
	r.cleanups = append(r.cleanups, r.mat.release)
	if r.taps != nil {
		// The copies left are aborted before the output folder is released (cleanups run
		// last first).
		r.cleanups = append(r.cleanups, r.taps.close)
		if r.mat.outDir != nil {
			r.taps.arm(r.mat.outDir, r.batchID)
			r.mat.taps = r.taps
		}
	}
	return nil
}

// dashboardURL is the URL to print for a dashboard listening on addr (an unspecified address
// is shown as localhost), and whether other machines can reach the listener.
func dashboardURL(addr net.Addr) (url string, exposed bool) {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/", true
	}
	ip := ap.Addr().Unmap()
	host := ip.String()
	switch {
	case ip.IsUnspecified():
		host = "localhost"
	case ip.Is6():
		host = "[" + host + "]"
	}
	return fmt.Sprintf("http://%s:%d/", host, ap.Port()), !ip.IsLoopback()
}

// supersede cancels the unfinished batches of earlier runs on this output folder with another
// input list (an interrupted run, then the list was edited): they would otherwise be
// downloaded first, before the new list. What they already downloaded is kept and completes
// the new batch's papers as cache hits, and so is what they are downloading: their running
// downloads finish (finish_running) and the new batch's papers with the same id or URL wait
// for them instead of downloading them a second time; the user is told.
func (r *getRun) supersede(ctx context.Context) error {
	if r.o.batchID != "" {
		return nil // an explicit --batch-id: the user manages the batches
	}
	var stale []*pb.Batch
	token := ""
	for page := 0; page < 10; page++ { // the most recent 1,000 batches are plenty for one folder
		callCtx, cancel := context.WithTimeout(ctx, embeddedCallTimeout)
		resp, err := r.client.ListBatches(callCtx, &pb.ListBatchesRequest{PageSize: 100, PageToken: token})
		cancel()
		if err != nil {
			return &exitError{code: ExitFailed, err: fmt.Errorf("list batches: %w", err)}
		}
		for _, b := range resp.GetBatches() {
			if b.GetBatchId() != r.batchID && !batchDone(b.GetState()) && b.GetLabels()["created-by"] == "paperfetch get" {
				stale = append(stale, b)
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	for _, b := range stale {
		c := b.GetCounts()
		done := c.GetSucceeded() + c.GetFailed() + c.GetCancelled()
		callCtx, cancel := context.WithTimeout(ctx, embeddedCallTimeout)
		_, err := r.client.CancelBatch(callCtx, &pb.CancelBatchRequest{
			BatchId: b.GetBatchId(), Reason: "superseded by a run with another input list", FinishRunning: true,
		})
		cancel()
		if err != nil {
			return &exitError{code: ExitFailed, err: fmt.Errorf("cancel the earlier batch %s: %w", b.GetBatchId(), err)}
		}
		fmt.Fprintf(r.a.env.Stderr, "paperfetch: the input differs from the interrupted run in %s (batch %s, %d of %d done): "+
			"that run is replaced by this one; its finished papers are reused\n", r.o.out, b.GetBatchId(), done, b.GetTotalPapers())
		r.logger.Info("superseded an unfinished batch", "batch", b.GetBatchId(), "by", r.batchID)
	}
	return nil
}

// download creates or resumes the batch and watches it to its end on the progress display
// (closed when it returns), placing each PDF as it succeeds. It returns the batch as last
// seen and the bytes downloaded before this run (the first update's count).
func (r *getRun) download(ctx context.Context) (*pb.Batch, int64, error) {
	o := &r.o
	mode := progress.ModeAuto
	switch {
	case o.json:
		mode = progress.ModeJSON
	case o.quiet:
		mode = progress.ModeQuiet
	}
	r.display = progress.New(progress.Options{Mode: mode, Out: r.a.env.Stderr, JSONOut: r.a.env.Stdout, Total: r.scan.papers, PathOf: r.mat.Path})
	defer r.display.Close()
	if r.state == pb.BatchState_BATCH_STATE_OPEN || r.state == pb.BatchState_BATCH_STATE_RUNNING {
		r.display.Message(fmt.Sprintf("resuming batch %s", r.batchID))
	}

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	go func() { // the embedded system stopping by itself (its store's disk full) ends the run
		select {
		case <-r.sys.Exited():
			cancelRun()
		case <-runCtx.Done():
		}
	}()
	submitDone := make(chan error, 1)
	var fill func() // appends the papers; nil when there is nothing to append
	if r.state == pb.BatchState_BATCH_STATE_UNSPECIFIED || r.state == pb.BatchState_BATCH_STATE_OPEN {
		// Create the batch before watching it; append the chunks while watching, so papers
		// start downloading as soon as their chunk is stored.
		sub := &submitter{client: r.client, callTimeout: embeddedCallTimeout}
		b, err := sub.create(runCtx, r.batchID, map[string]string{"created-by": "paperfetch get"})
		if err != nil {
			return nil, 0, failure(ctx, ExitFailed, err)
		}
		if b.GetState() == pb.BatchState_BATCH_STATE_OPEN || b.GetState() == pb.BatchState_BATCH_STATE_UNSPECIFIED {
			fill = func() {
				_, err := sub.fill(runCtx, r.batchID, r.in, nil)
				if err != nil {
					cancelRun()
				}
				submitDone <- err
			}
		}
	}
	if fill == nil {
		submitDone <- nil
	}

	// Succeeded papers are placed by a pool of placers, off the watch stream: the display
	// keeps up while files are copied, and the watch waits only when placeQueue papers wait.
	var place placeFunc = func(ctx context.Context, u *pb.PaperUpdate) (string, error) {
		return placeUpdate(ctx, r.client, r.mat, r.batchID, u)
	}
	if r.a.wrapPlace != nil {
		place = r.a.wrapPlace(place)
	}
	r.placer = newPlacer(runCtx, placeWorkers, placeQueue, place, func(_ string, err error) {
		if storagefull.Is(err) {
			r.stopForStorage(err, cancelRun)
			return
		}
		r.display.Message(fmt.Sprintf("paperfetch: %v", err))
	})
	var firstBytes int64 = -1
	final, werr := watchBatch(runCtx, r.client, r.batchID, true, func(resp *pb.WatchBatchResponse) {
		if fill != nil {
			// The watch has begun (this is its snapshot): the appends start now, so that it
			// sees every paper succeed, cache hits completed by their append included (the
			// display lists each, and the final pass counts the placed ones).
			go fill()
			fill = nil
		}
		if firstBytes < 0 {
			firstBytes = resp.GetBatch().GetBytesDownloaded()
		}
		r.display.Update(resp)
		var succeeded []*pb.PaperUpdate
		for _, u := range resp.GetPaperUpdates() {
			if u.GetLastFailureReason() == pb.FailureReason_FAILURE_REASON_STORAGE_FULL && u.GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED {
				r.stopForStorage(storagefull.FromMessage(u.GetLastError()), cancelRun)
			}
			switch u.GetState() {
			case pb.PaperState_PAPER_STATE_SUCCEEDED:
				succeeded = append(succeeded, u)
			case pb.PaperState_PAPER_STATE_FAILED, pb.PaperState_PAPER_STATE_CANCELLED:
				if r.mat.taps != nil {
					r.mat.taps.drop(r.batchID, u.GetPaperId())
				}
			}
		}
		r.placer.add(runCtx, succeeded)
	})
	r.placer.close() // the queued papers are placed (or dropped: the run stopped)
	r.logger.Info("watch ended, placers done", "batch", r.batchID, "err", werr)
	if fill != nil { // the watch ended before its first message: nothing was appended
		submitDone <- nil
	}
	subErr := <-submitDone
	select {
	case <-r.sys.Exited():
		return final, max(firstBytes, 0), r.sysStopped()
	default:
	}
	storageErr := r.storageError()
	switch {
	case subErr != nil && storageErr == nil && ctx.Err() == nil:
		return final, max(firstBytes, 0), &exitError{code: ExitFailed, err: fmt.Errorf("submit batch %s: %w", r.batchID, subErr)}
	case werr != nil && storageErr == nil && ctx.Err() == nil:
		return final, max(firstBytes, 0), &exitError{code: ExitFailed, err: werr}
	}
	return final, max(firstBytes, 0), nil
}

// end finishes a download that returned err: a run stopped by a full disk or an interrupt
// keeps what is done (stop); a failed one returns its error; a finished one places what is
// left, writes the report and failed.txt (finish) and prints the summary.
func (r *getRun) end(ctx context.Context, final *pb.Batch, downloaded int64, err error) error {
	switch {
	case r.storageError() != nil:
		return r.stop(ctx, ExitStorage, downloaded)
	case ctx.Err() != nil:
		return r.stop(ctx, ExitInterrupted, downloaded)
	case err != nil:
		return err
	}
	sum, err := r.finish(ctx, final, final.GetBytesDownloaded()-downloaded, true)
	if r.storageError() != nil {
		return r.stop(ctx, ExitStorage, downloaded)
	}
	if err != nil {
		return err
	}
	r.closeSys()
	r.printSummary(sum)
	r.logger.Info("paperfetch get finished", "batch", r.batchID, "succeeded", sum.Succeeded, "failed", sum.Failed, "cached", sum.Cached)
	if sum.Failed > 0 || sum.Cancelled > 0 || sum.Pending > 0 || sum.PlaceErrors > 0 || sum.InputErrors > 0 {
		return &exitError{code: ExitFailed}
	}
	return nil
}

// sysStopped ends a run whose embedded system stopped by itself: it is closed, and its error
// is the run's: a full disk (its store's) stops the run like any other (nil is returned and
// the storage error recorded), anything else fails it.
func (r *getRun) sysStopped() error {
	r.closed = true
	err := r.sys.Close()
	r.logger.Error("the embedded coordinator stopped by itself", "err", err)
	if storagefull.Is(err) {
		r.stopForStorage(err, func() {})
		return nil
	}
	return &exitError{code: ExitFailed, err: fmt.Errorf("the embedded coordinator stopped: %w", cmp.Or(err, errors.New("no error given")))}
}

// stopForStorage records the first out-of-space error and stops the run.
func (r *getRun) stopForStorage(err error, cancel context.CancelFunc) {
	r.storageMu.Lock()
	defer r.storageMu.Unlock()
	if r.storageErr == nil {
		r.storageErr = err
		r.logger.Error("storage full: stopping", "err", err)
		cancel()
	}
}

// storageError returns the out-of-space error that stopped the run, if any.
func (r *getRun) storageError() error {
	r.storageMu.Lock()
	defer r.storageMu.Unlock()
	return r.storageErr
}

// stop ends a run that did not reach the batch's end (Ctrl-C, a full disk): it stops the
// downloads, keeps what is done, writes the report and failed.txt, and says how to go on.
func (r *getRun) stop(ctx context.Context, code int, firstBytes int64) error {
	stderr := r.a.env.Stderr
	if !r.o.json && code == ExitInterrupted {
		fmt.Fprintln(stderr, "Stopping: running downloads get 2s to finish (Ctrl-C again quits at once)...")
	}
	// The run's context is cancelled: the final listing gets a short deadline of its own.
	finCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var sum *summary
	var err error
	if resp, gerr := r.client.GetBatch(finCtx, &pb.GetBatchRequest{BatchId: r.batchID}); gerr == nil { // else not created yet
		b := resp.GetBatch()
		sum, err = r.finish(finCtx, b, b.GetBytesDownloaded()-firstBytes, false)
	}
	r.closeSys()
	if err != nil {
		fmt.Fprintf(stderr, "paperfetch get: %v\n", err)
	}
	if sum == nil { // the coordinator cannot say: the counts last seen
		sum = &summary{Total: r.scan.papers}
		if r.display != nil {
			s := r.display.Snapshot()
			sum.Succeeded, sum.Failed, sum.Cancelled = s.Succeeded, s.Failed, s.Cancelled
		}
	}
	done := sum.Succeeded + sum.Failed + sum.Cancelled
	if code == ExitStorage {
		storageErr := r.storageError()
		what := cmpOr(storagefull.Describe(storageErr), "no space left")
		fmt.Fprintf(stderr, "\nStopped: %s (%v).\n%d of %d papers are done and kept in %s. Free some space, then run the same command again to resume.\n",
			what, storageErr, done, sum.Total, r.o.out)
		return &exitError{code: ExitStorage}
	}
	failed := ""
	if sum.FailedList != "" {
		failed = fmt.Sprintf(" (%d failed, listed in %s)", sum.Failed, sum.FailedList)
	}
	fmt.Fprintf(stderr, "\nInterrupted: %d of %d papers done%s. Run the same command again to resume.\n", done, sum.Total, failed)
	return &exitError{code: ExitInterrupted}
}

// finish makes sure every succeeded paper is in place (when place is set), then writes the
// report and OUT/failed.txt; it returns the summary. b is the batch as last seen (nil when
// unknown). The final pass lists every paper of the batch, unless no report is asked for and
// the placers placed every succeeded paper (placedEverything): then it lists only the papers
// that did not succeed (for failed.txt and the summary) and counts the others from the
// placers' tally. A paper whose update the watch missed, or whose placement failed, is not in
// the tally: the pass then lists every paper, and places it.
func (r *getRun) finish(ctx context.Context, b *pb.Batch, downloaded int64, place bool) (*summary, error) {
	var placed *placedTally
	if place && r.o.report == "" {
		placed = r.placedEverything(b)
	}
	sum, err := r.finalPass(ctx, b, downloaded, place, placed)
	if errors.Is(err, errTallyShort) {
		r.logger.Warn("final pass: the papers listed and the papers placed do not add up to the batch; listing every paper", "batch", r.batchID, "total", b.GetTotalPapers())
		sum, err = r.finalPass(ctx, b, downloaded, place, nil)
	}
	return sum, err
}

// errTallyShort is the error of a final pass without the placed papers whose papers do not add
// up to the batch's total.
var errTallyShort = errors.New("the listed and the placed papers do not add up to the batch")

// placedEverything returns the placers' tally when it accounts for every succeeded paper of the
// finished batch b: as many papers, cache hits and bytes as the batch counts, each in a file of
// its own that is still in the output folder (one read of the folder, not a stat per file: a
// file removed during the run sends the final pass through every paper, which places it
// again). Else it returns nil.
func (r *getRun) placedEverything(b *pb.Batch) *placedTally {
	if r.placer == nil || !batchDone(b.GetState()) {
		return nil
	}
	t, ok := r.placer.placedAll()
	c := b.GetCounts()
	if !ok || t.papers != c.GetSucceeded() || t.cached != c.GetCached() || t.bytes != b.GetBytesStored() {
		return nil
	}
	if t.names = slices.Compact(t.names); int64(len(t.names)) != t.papers {
		return nil // two papers in one file: the later one replaced the other
	}
	if n, err := countNames(r.o.out, t.names); err != nil || n != len(t.names) {
		return nil
	}
	return &t
}

// countNames counts the entries of folder dir whose nameKey is in want (sorted), reading the
// folder 1,024 names at a time.
func countNames(dir string, want []uint64) (int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	for {
		names, err := f.Readdirnames(1024)
		for _, name := range names {
			if _, found := slices.BinarySearch(want, nameKey(name)); found {
				n++
			}
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// notSucceeded is every paper state but SUCCEEDED: the papers a final pass with the placers'
// tally lists.
func notSucceeded() []pb.PaperState {
	var states []pb.PaperState
	for v := range pb.PaperState_name {
		if st := pb.PaperState(v); st != pb.PaperState_PAPER_STATE_UNSPECIFIED && st != pb.PaperState_PAPER_STATE_SUCCEEDED {
			states = append(states, st)
		}
	}
	slices.Sort(states)
	return states
}

// finalPass is finish's pass over the batch: every paper, or, with the placers' tally placed,
// the papers that did not succeed (errTallyShort when they and the tally are not the batch's
// total).
func (r *getRun) finalPass(ctx context.Context, b *pb.Batch, downloaded int64, place bool, placed *placedTally) (*summary, error) {
	o := &r.o
	stderr := r.a.env.Stderr
	sum := &summary{BatchID: r.batchID, State: progress.BatchStateName(b.GetState()), Out: o.out, Report: o.report, InputErrors: r.scan.bad}
	sum.BytesDownloaded = max(downloaded, 0)
	var rep *reportWriter
	if o.report != "" {
		var err error
		if rep, err = newReportWriter(o.report, r.batchID, r.a.env.Stdout, r.started); err != nil {
			return nil, &exitError{code: exitCodeFor(err, ExitFailed), err: err}
		}
	}
	failed, err := newFailedList(o.out)
	if err != nil {
		return nil, &exitError{code: exitCodeFor(err, ExitFailed), err: err}
	}
	var states []pb.PaperState
	if placed != nil {
		states = notSucceeded()
	}
	listed := int64(0)
	err = listPapers(ctx, r.client, embeddedCallTimeout, r.batchID, states, func(p *pb.Paper) error {
		listed++
		e := reportEntry{ID: p.GetSpec().GetPaperId(), State: progress.StateName(p.GetState()), Attempts: p.GetAttempts(), URLs: p.GetSpec().GetUrls(),
			Cached: p.GetCached(), Reason: progress.ReasonName(p.GetLastFailureReason()), Error: p.GetLastError(), DOI: p.GetSpec().GetDoi()}
		switch p.GetState() {
		case pb.PaperState_PAPER_STATE_SUCCEEDED:
			e.SHA256, e.Size, e.FinalURL, e.Error, e.Reason = p.GetSha256(), p.GetSize(), p.GetFinalUrl(), "", ""
			e.Source = p.GetSource()
			switch {
			case place && r.placer != nil && r.placer.done(p.GetSpec().GetPaperId(), p.GetSha256()):
				if target := r.mat.target(p); fileHasSize(target, p.GetSize()) {
					e.Path = target // placed and verified by this run a moment ago
					break
				}
				fallthrough
			case place:
				path, _, err := r.mat.Place(ctx, p)
				if err != nil {
					if storagefull.Is(err) {
						return err
					}
					sum.PlaceErrors++
					e.Error = err.Error()
					fmt.Fprintf(stderr, "paperfetch: %v\n", err)
				} else {
					e.Path = path
				}
			default:
				if path := r.mat.Path(p.GetSpec().GetPaperId()); fileExists(path) {
					e.Path = path
				}
			}
		case pb.PaperState_PAPER_STATE_FAILED:
			failed.add(p)
		}
		sum.add(p)
		if rep != nil {
			rep.add(e)
		}
		return nil
	})
	if placed != nil && err == nil {
		if listed+placed.papers != b.GetTotalPapers() {
			failed.abort()
			return nil, errTallyShort
		}
		sum.addPlaced(placed)
	}
	r.logger.Info("final pass", "batch", r.batchID, "listed", listed, "placed_not_listed", sum.Total-listed)
	sum.finish(time.Since(r.started))
	sum.FailedList = failed.close(sum.Failed)
	if err != nil {
		if rep != nil {
			rep.abort()
		}
		if storagefull.Is(err) {
			r.storageMu.Lock()
			r.storageErr = cmp.Or(r.storageErr, err)
			r.storageMu.Unlock()
			return nil, err
		}
		return nil, failure(ctx, ExitFailed, fmt.Errorf("list papers: %w", err))
	}
	if rep != nil {
		if err := rep.close(sum); err != nil {
			fmt.Fprintf(stderr, "paperfetch: %v\n", err)
			sum.PlaceErrors++
		}
	}
	return sum, nil
}

// printSummary prints the summary: a table, or a JSON line with --json.
func (r *getRun) printSummary(sum *summary) {
	if r.o.json {
		writeJSONLine(r.a.env.Stdout, struct {
			Type string `json:"type"`
			*summary
		}{"summary", sum})
		return
	}
	sum.print(r.a.env.Stderr)
}

// flagMessages renders the errors of an invalid configuration for the command line: each
// one as "--flag what is wrong" where a flag sets the field.
func flagMessages(err error) string {
	var fe *fielderr.Error
	if !errors.As(err, &fe) {
		return err.Error()
	}
	msgs := make([]string, len(fe.Errs))
	for i, e := range fe.Errs {
		msgs[i] = fielderr.FlagMessage(e)
	}
	return strings.Join(msgs, "; ")
}

// validate checks the flag values (the embedded system's options with Options.Validate)
// and the inputs.
func (o *getOptions) validate(inputs []string) error {
	switch {
	case len(inputs) == 0:
		return usagef("no INPUT given (a file of URLs, arXiv ids or JSON lines, \"-\" for standard input, or the URLs and ids themselves)")
	case o.out == "":
		return usagef("--out must not be empty")
	case o.quiet && o.json:
		return usagef("--quiet and --json cannot be combined")
	case o.report == "-" && o.json:
		return usagef("--report - and --json would both write to standard output; give --report a file")
	}
	if _, err := input.ParseFormat(o.format); err != nil {
		return usagef("--format: %v", err)
	}
	if err := checkBatchIDFlag(o.batchID); err != nil {
		return err
	}
	if err := checkNameTemplate(o.nameTemplate); err != nil {
		return usagef("%v", err)
	}
	o.sys.Dir = filepath.Join(o.out, ".paperfetch")
	if err := o.sys.Validate(); err != nil {
		return usagef("%s", flagMessages(err))
	}
	if _, err := logging.ParseLevel(o.logLevel); err != nil {
		return usagef("--log-level: %v", err)
	}
	return checkInputArgs(inputs)
}

// pickBatch chooses the batch of a `get` run. An explicit id is used as is. Otherwise the id
// is derived from the input: base, then base.2, base.3...: the first one that does not exist
// yet or is still unfinished (an interrupted run, resumed). A finished batch is not reused, so
// a rerun after a complete run starts a new batch whose stored papers complete as cache hits
// and whose failed papers are tried again. It returns the id and the batch's state
// (UNSPECIFIED when it does not exist).
func pickBatch(ctx context.Context, client pb.CoordinatorServiceClient, explicit, base string) (string, pb.BatchState, error) {
	if explicit != "" {
		st, err := batchState(ctx, client, explicit)
		return explicit, st, err
	}
	for gen := 1; ; gen++ {
		id := base
		if gen > 1 {
			id = fmt.Sprintf("%s.%d", base, gen)
		}
		st, err := batchState(ctx, client, id)
		if err != nil {
			return "", 0, err
		}
		if !batchDone(st) {
			return id, st, nil
		}
	}
}

// batchState returns a batch's state, or UNSPECIFIED when it does not exist.
func batchState(ctx context.Context, client pb.CoordinatorServiceClient, id string) (pb.BatchState, error) {
	callCtx, cancel := context.WithTimeout(ctx, embeddedCallTimeout)
	defer cancel()
	resp, err := client.GetBatch(callCtx, &pb.GetBatchRequest{BatchId: id})
	if status.Code(err) == codes.NotFound {
		return pb.BatchState_BATCH_STATE_UNSPECIFIED, nil
	}
	if err != nil {
		return 0, fmt.Errorf("get batch %s: %w", id, err)
	}
	return resp.GetBatch().GetState(), nil
}

// placeUpdate materializes the succeeded paper of a watch update: from the update itself when
// it carries the blob key and checksum (a coordinator that fills them), else through GetPaper.
// It returns the file's path.
func placeUpdate(ctx context.Context, client pb.CoordinatorServiceClient, mat *materializer, batchID string, u *pb.PaperUpdate) (string, error) {
	if u.GetBlobKey() == "" || u.GetSha256() == "" || mat.template != "" { // a template needs the spec
		return placeOne(ctx, client, mat, batchID, u.GetPaperId())
	}
	path, _, err := mat.PlaceNew(ctx, &pb.Paper{
		BatchId: batchID, Spec: &pb.PaperSpec{PaperId: u.GetPaperId()}, State: u.GetState(),
		BlobKey: u.GetBlobKey(), Sha256: u.GetSha256(), Size: u.GetSize(), Cached: u.GetCached(),
	})
	return path, err
}

// placeOne materializes one succeeded paper and returns the file's path.
func placeOne(ctx context.Context, client pb.CoordinatorServiceClient, mat *materializer, batchID, paperID string) (string, error) {
	callCtx, cancel := context.WithTimeout(ctx, embeddedCallTimeout)
	resp, err := client.GetPaper(callCtx, &pb.GetPaperRequest{BatchId: batchID, PaperId: paperID})
	cancel()
	if err != nil {
		return "", fmt.Errorf("get paper %s: %w", paperID, err)
	}
	path, _, err := mat.Place(ctx, resp.GetPaper())
	return path, err
}

// listPapers calls fn for every paper of a batch (in the given states; all when empty), a page
// at a time; callTimeout is the deadline of each ListPapers call.
func listPapers(ctx context.Context, client pb.CoordinatorServiceClient, callTimeout time.Duration, batchID string, states []pb.PaperState, fn func(*pb.Paper) error) error {
	token := ""
	for {
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := client.ListPapers(callCtx, &pb.ListPapersRequest{BatchId: batchID, States: states, PageSize: 1000, PageToken: token})
		cancel()
		if err != nil {
			return err
		}
		for _, p := range resp.GetPapers() {
			if err := fn(p); err != nil {
				return err
			}
		}
		token = resp.GetNextPageToken()
		if token == "" {
			return nil
		}
	}
}

// hasStdin reports whether "-" is among the inputs.
func hasStdin(inputs []string) bool {
	for _, n := range inputs {
		if n == "-" {
			return true
		}
	}
	return false
}

// spoolStdin copies standard input to a temporary file in dir, so it can be read twice (a
// validating pass, then the submission).
func spoolStdin(stdin io.Reader, dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, "stdin-*.txt")
	if err != nil {
		return nil, fmt.Errorf("copy standard input: %w", err)
	}
	if _, err := io.Copy(f, stdin); err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return nil, fmt.Errorf("read standard input: %w", err)
	}
	return f, nil
}

// openLog opens the log file of the embedded system (appending).
func openLog(dir, level string) (*os.File, *slog.Logger, error) {
	lvl, err := logging.ParseLevel(level)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "paperfetch.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open log: %w", err)
	}
	return f, slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: lvl})), nil
}

// checkBatchIDFlag checks --batch-id (empty: not given) against the contract's syntax.
func checkBatchIDFlag(id string) error {
	if id == "" || validate.BatchID("batch_id", id) == nil {
		return nil
	}
	return usagef("--batch-id must be 1 to %d characters of [A-Za-z0-9._-], got %q", validate.MaxBatchIDBytes, id)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// fileHasSize reports whether path is a regular file of size bytes.
func fileHasSize(path string, size int64) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Size() == size
}
