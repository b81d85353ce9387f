package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/paperfetch/paperfetch/coordinator"
	"github.com/paperfetch/paperfetch/fetcher"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/embedded"
	"github.com/paperfetch/paperfetch/internal/input"
	"github.com/paperfetch/paperfetch/internal/logging"
	"github.com/paperfetch/paperfetch/internal/progress"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// embeddedCallTimeout is the deadline of each unary call `get` makes to its embedded
// coordinator (in-process, so only a wedged coordinator comes near it).
const embeddedCallTimeout = 30 * time.Second

// getOptions are the flags of `paperfetch get`.
type getOptions struct {
	out                string
	concurrency        int
	fetchers           int
	perHostConcurrency int
	perHostDelay       time.Duration
	maxSize            int64
	timeout            time.Duration
	retries            int
	userAgent          string
	allowPrivate       bool
	allowCIDRs         []netip.Prefix
	arxivBase          string
	resolve            coordinator.ResolveConfig
	report             string
	quiet              bool
	json               bool
	format             string
	strict             bool
	batchID            string
	logLevel           string
}

// maxInputErrorsShown caps the malformed entries printed one by one.
const maxInputErrorsShown = 20

const getHelp = `
Downloads every paper listed in the INPUT files ("-" reads standard input) into --out, with an
embedded coordinator and fetchers. Each PDF is verified (SHA-256, "%PDF-" signature) and named
after its paper id: OUT/2301.00001.pdf, OUT/hep-th_9901001.pdf...

The state lives in OUT/.paperfetch (store, blobs, log). Running the same command again resumes
an interrupted run, and after a finished run it completes at once from the cache (papers that
failed are tried again).

Exit status: 0 all papers succeeded, 1 some failed, 2 usage or input error, 3 interrupted.`

func (a *app) get(ctx context.Context, args []string) error {
	fs := a.newFlagSet("get", "[flags] INPUT...", getHelp)
	var o getOptions
	fs.StringVar(&o.out, "out", "papers", "`DIR` to write the PDFs into")
	fs.IntVar(&o.concurrency, "concurrency", 16, "`N` parallel downloads in total")
	fs.IntVar(&o.fetchers, "fetchers", 2, "run `N` embedded fetchers (the concurrency is split across them)")
	fs.IntVar(&o.perHostConcurrency, "per-host-concurrency", 2, "at most `N` parallel downloads from one host")
	fs.DurationVar(&o.perHostDelay, "per-host-delay", time.Second, "minimum time between two requests to one host (0s: none)")
	o.maxSize = 512 << 20
	fs.Var(sizeFlag{&o.maxSize}, "max-size", "maximum `SIZE` of one PDF (e.g. 100MiB)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "overall deadline of one download attempt")
	fs.IntVar(&o.retries, "retries", 4, "retry a failed download up to `N` times (transient errors; permanent ones move on to the next URL)")
	fs.StringVar(&o.userAgent, "user-agent", "", "`VALUE` of the User-Agent header (default: paperfetch/VERSION with a contact address)")
	fs.BoolVar(&o.allowPrivate, "allow-private-networks", false, "allow downloads from loopback and private addresses (unsafe; for local mirrors and tests)")
	fs.Func("allow-cidr", fetcher.AllowCIDRUsage, fetcher.AllowCIDRFlag(&o.allowCIDRs))
	fs.StringVar(&o.arxivBase, "arxiv-base", input.DefaultArxivBase, "where arXiv ids are fetched from, as `URL`/pdf/ID")
	registerResolveFlags(fs, &o.resolve)
	fs.StringVar(&o.report, "report", "", "write a JSON report of every paper to `FILE` (\"-\": standard output)")
	fs.BoolVar(&o.quiet, "quiet", false, "print only errors and the summary")
	fs.BoolVar(&o.json, "json", false, "print progress, finished papers and the summary as JSON lines on standard output")
	fs.StringVar(&o.format, "format", "auto", "`FORMAT` of the inputs: auto, lines, jsonl, csv, bibtex, ris or csl-json")
	fs.BoolVar(&o.strict, "strict", false, "fail (exit 2) on any malformed input entry instead of skipping it")
	fs.StringVar(&o.batchID, "batch-id", "", "batch `ID` to use (default: derived from the input, so a rerun resumes the same batch)")
	fs.StringVar(&o.logLevel, "log-level", "info", "`LEVEL` of the log written to OUT/.paperfetch/paperfetch.log: debug, info, warn or error")
	inputs, err := a.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := o.validate(inputs); err != nil {
		return err
	}
	format, _ := input.ParseFormat(o.format)
	started := time.Now()
	stderr := a.env.Stderr

	stateDir := filepath.Join(o.out, ".paperfetch")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return &exitError{code: ExitUsage, err: fmt.Errorf("create output folder: %w", err)}
	}
	in := inputSet{names: inputs, opts: input.Options{Format: format, ArxivBase: o.arxivBase}}
	if hasStdin(inputs) {
		spool, err := spoolStdin(a.env.Stdin, stateDir)
		if err != nil {
			return &exitError{code: ExitUsage, err: err}
		}
		defer func() { _ = spool.Close(); _ = os.Remove(spool.Name()) }()
		in.stdin = spool
	}

	// First pass: validate, count, and derive the batch id.
	shown := 0
	scan, err := in.scan(ctx, func(err error) {
		if shown < maxInputErrorsShown {
			fmt.Fprintf(stderr, "paperfetch: %v\n", err)
		}
		shown++
	})
	if err != nil {
		if ctx.Err() != nil {
			return &exitError{code: ExitInterrupted, err: errors.New("interrupted")}
		}
		return &exitError{code: ExitUsage, err: err}
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

	logFile, logger, err := openLog(stateDir, o.logLevel)
	if err != nil {
		return &exitError{code: ExitUsage, err: err}
	}
	defer logFile.Close()
	logger.Info("paperfetch get starting", "inputs", inputs, "papers", scan.papers, "malformed", scan.bad, "duplicates", scan.duplicates)

	sys, err := embedded.Start(ctx, o.embeddedConfig(stateDir, logger))
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			err = fmt.Errorf("%w (is another paperfetch get writing to %s?)", err, o.out)
		}
		return &exitError{code: ExitUsage, err: err}
	}
	closed := false
	closeSys := func() {
		if !closed {
			closed = true
			if err := sys.Close(); err != nil {
				logger.Warn("embedded shutdown", "err", err)
			}
		}
	}
	defer closeSys()
	client := pb.NewCoordinatorServiceClient(sys.Conn())

	batchID, state, err := pickBatch(ctx, client, o.batchID, "get-"+scan.digest[:16])
	if err != nil {
		if ctx.Err() != nil {
			return &exitError{code: ExitInterrupted, err: errors.New("interrupted")}
		}
		return err
	}
	logger.Info("batch chosen", "batch", batchID, "state", state)

	mode := progress.ModeAuto
	switch {
	case o.json:
		mode = progress.ModeJSON
	case o.quiet:
		mode = progress.ModeQuiet
	}
	display := progress.New(progress.Options{Mode: mode, Out: stderr, JSONOut: a.env.Stdout, Total: scan.papers})
	if state == pb.BatchState_BATCH_STATE_OPEN || state == pb.BatchState_BATCH_STATE_RUNNING {
		display.Message(fmt.Sprintf("resuming batch %s", batchID))
	}

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	submitDone := make(chan error, 1)
	if state == pb.BatchState_BATCH_STATE_UNSPECIFIED || state == pb.BatchState_BATCH_STATE_OPEN {
		// Create the batch before watching it; append the chunks while watching, so papers
		// start downloading as soon as their chunk is stored.
		sub := &submitter{client: client, callTimeout: embeddedCallTimeout}
		b, err := sub.create(runCtx, batchID, map[string]string{"created-by": "paperfetch get"})
		if err != nil {
			display.Close()
			if ctx.Err() != nil {
				return &exitError{code: ExitInterrupted, err: errors.New("interrupted")}
			}
			return &exitError{code: ExitFailed, err: err}
		}
		if b.GetState() == pb.BatchState_BATCH_STATE_OPEN || b.GetState() == pb.BatchState_BATCH_STATE_UNSPECIFIED {
			go func() {
				_, err := sub.fill(runCtx, batchID, in, nil)
				if err != nil {
					cancelRun()
				}
				submitDone <- err
			}()
		} else {
			submitDone <- nil
		}
	} else {
		submitDone <- nil
	}

	mat := &materializer{out: o.out, bucketURL: sys.BucketURL(), client: client}
	var placeErrors int64
	var firstBytes int64 = -1
	final, werr := watchBatch(runCtx, client, batchID, true, func(resp *pb.WatchBatchResponse) {
		if firstBytes < 0 {
			firstBytes = resp.GetBatch().GetBytesDownloaded()
		}
		display.Update(resp)
		for _, u := range resp.GetPaperUpdates() {
			if u.GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED {
				continue
			}
			if err := placeUpdate(runCtx, client, mat, batchID, u); err != nil && runCtx.Err() == nil {
				placeErrors++
				display.Message(fmt.Sprintf("paperfetch: %v", err))
			}
		}
	})
	subErr := <-submitDone
	if ctx.Err() != nil {
		display.Close()
		s := display.Snapshot()
		if !o.json {
			fmt.Fprintln(stderr, "Stopping: running downloads get 2s to finish (Ctrl-C again quits at once)...")
		}
		closeSys()
		fmt.Fprintf(stderr, "\nInterrupted: %d of %d papers done. Run the same command again to resume.\n", s.Done, s.Total)
		return &exitError{code: ExitInterrupted}
	}
	if subErr != nil {
		display.Close()
		return &exitError{code: ExitFailed, err: fmt.Errorf("submit batch %s: %w", batchID, subErr)}
	}
	if werr != nil {
		display.Close()
		return &exitError{code: ExitFailed, err: werr}
	}
	display.Close()

	// Final pass: make sure every succeeded paper is in place, and write the report.
	sum := &summary{BatchID: batchID, State: progress.BatchStateName(final.GetState()), Out: o.out, Report: o.report, InputErrors: scan.bad}
	sum.BytesDownloaded = final.GetBytesDownloaded() - max(firstBytes, 0)
	var rep *reportWriter
	if o.report != "" {
		if rep, err = newReportWriter(o.report, batchID, a.env.Stdout, started); err != nil {
			return &exitError{code: ExitFailed, err: err}
		}
	}
	placeErrors = 0 // the final pass retries what failed during the watch, and is authoritative
	err = listPapers(ctx, client, embeddedCallTimeout, batchID, nil, func(p *pb.Paper) error {
		e := reportEntry{ID: p.GetSpec().GetPaperId(), State: progress.StateName(p.GetState()), Attempts: p.GetAttempts(), URLs: p.GetSpec().GetUrls(),
			Cached: p.GetCached(), Reason: progress.ReasonName(p.GetLastFailureReason()), Error: p.GetLastError(), DOI: p.GetSpec().GetDoi()}
		if p.GetState() == pb.PaperState_PAPER_STATE_SUCCEEDED {
			e.SHA256, e.Size, e.FinalURL, e.Error, e.Reason = p.GetSha256(), p.GetSize(), p.GetFinalUrl(), "", ""
			e.Source = p.GetSource()
			path, _, err := mat.Place(ctx, p)
			if err != nil {
				placeErrors++
				e.Error = err.Error()
				fmt.Fprintf(stderr, "paperfetch: %v\n", err)
			} else {
				e.Path = path
			}
		}
		sum.add(p)
		if rep != nil {
			rep.add(e)
		}
		return nil
	})
	sum.PlaceErrors = placeErrors
	sum.finish(time.Since(started))
	if err != nil {
		if rep != nil {
			rep.abort()
		}
		if ctx.Err() != nil {
			return &exitError{code: ExitInterrupted, err: errors.New("interrupted")}
		}
		return &exitError{code: ExitFailed, err: fmt.Errorf("list papers: %w", err)}
	}
	if rep != nil {
		if err := rep.close(sum); err != nil {
			fmt.Fprintf(stderr, "paperfetch: %v\n", err)
			placeErrors++
		}
	}
	closeSys()
	if o.json {
		writeJSONLine(a.env.Stdout, struct {
			Type string `json:"type"`
			*summary
		}{"summary", sum})
	} else {
		sum.print(stderr)
	}
	logger.Info("paperfetch get finished", "batch", batchID, "succeeded", sum.Succeeded, "failed", sum.Failed, "cached", sum.Cached)
	if sum.Failed > 0 || sum.Cancelled > 0 || sum.Pending > 0 || placeErrors > 0 {
		return &exitError{code: ExitFailed}
	}
	return nil
}

// validate checks the flag values and the inputs.
func (o *getOptions) validate(inputs []string) error {
	switch {
	case len(inputs) == 0:
		return usagef("no INPUT given (a file of URLs, arXiv ids or JSON lines; \"-\" for standard input)")
	case o.out == "":
		return usagef("--out must not be empty")
	case o.concurrency < 1 || o.concurrency > 10000:
		return usagef("--concurrency must be between 1 and 10000, got %d", o.concurrency)
	case o.fetchers < 1 || o.fetchers > 64:
		return usagef("--fetchers must be between 1 and 64, got %d", o.fetchers)
	case o.perHostConcurrency < 1:
		return usagef("--per-host-concurrency must be at least 1, got %d", o.perHostConcurrency)
	case o.perHostDelay < 0:
		return usagef("--per-host-delay must not be negative")
	case o.maxSize <= 0:
		return usagef("--max-size must be positive")
	case o.timeout <= 0:
		return usagef("--timeout must be positive")
	case o.retries < 0 || o.retries > 100:
		return usagef("--retries must be between 0 and 100, got %d", o.retries)
	case o.quiet && o.json:
		return usagef("--quiet and --json cannot be combined")
	case o.report == "-" && o.json:
		return usagef("--report - and --json would both write to standard output; give --report a file")
	}
	if _, err := input.ParseFormat(o.format); err != nil {
		return usagef("--format: %v", err)
	}
	if u, err := url.Parse(o.arxivBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usagef("--arxiv-base must be an http(s) URL, got %q", o.arxivBase)
	}
	if err := checkBatchIDFlag(o.batchID); err != nil {
		return err
	}
	o.resolve.ArxivBase = o.arxivBase
	if err := o.resolve.Validate(); err != nil {
		return usagef("%v", err)
	}
	if _, err := logging.ParseLevel(o.logLevel); err != nil {
		return usagef("--log-level: %v", err)
	}
	stdins := 0
	for _, name := range inputs {
		if name == "-" {
			stdins++
			continue
		}
		st, err := os.Stat(name)
		if err != nil {
			return &exitError{code: ExitUsage, err: fmt.Errorf("input: %w", err)}
		}
		if st.IsDir() {
			return &exitError{code: ExitUsage, err: fmt.Errorf("input %s is a directory", name)}
		}
	}
	if stdins > 1 {
		return usagef("standard input (\"-\") can be given only once")
	}
	return nil
}

// embeddedConfig turns the flags into the embedded system's configuration.
func (o *getOptions) embeddedConfig(stateDir string, logger *slog.Logger) embedded.Config {
	delay := o.perHostDelay
	if delay <= 0 {
		delay = -1 // the coordinator reads 0 as "default"; negative is "none"
	}
	limits := &pb.DownloadLimits{MaxSizeBytes: o.maxSize, Timeout: durationpb.New(o.timeout)}
	return embedded.Config{
		Dir:         stateDir,
		Fetchers:    o.fetchers,
		Concurrency: o.concurrency,
		Coordinator: coordinator.Config{
			PerHostDelay:       delay,
			PerHostConcurrency: o.perHostConcurrency,
			MaxAttempts:        o.retries + 1,
			Limits:             limits,
			Resolve:            o.resolve,
		},
		Fetcher: fetcher.Config{
			AllowPrivateNetworks: o.allowPrivate,
			AllowCIDRs:           o.allowCIDRs,
			UserAgent:            o.userAgent,
			Contact:              o.resolve.Email,
			MaxSize:              o.maxSize,
			Timeout:              o.timeout,
		},
		Logger: logger,
	}
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
func placeUpdate(ctx context.Context, client pb.CoordinatorServiceClient, mat *materializer, batchID string, u *pb.PaperUpdate) error {
	if u.GetBlobKey() == "" || u.GetSha256() == "" {
		return placeOne(ctx, client, mat, batchID, u.GetPaperId())
	}
	_, _, err := mat.PlaceNew(ctx, &pb.Paper{
		BatchId: batchID, Spec: &pb.PaperSpec{PaperId: u.GetPaperId()}, State: u.GetState(),
		BlobKey: u.GetBlobKey(), Sha256: u.GetSha256(), Size: u.GetSize(),
	})
	return err
}

// placeOne materializes one succeeded paper.
func placeOne(ctx context.Context, client pb.CoordinatorServiceClient, mat *materializer, batchID, paperID string) error {
	callCtx, cancel := context.WithTimeout(ctx, embeddedCallTimeout)
	resp, err := client.GetPaper(callCtx, &pb.GetPaperRequest{BatchId: batchID, PaperId: paperID})
	cancel()
	if err != nil {
		return fmt.Errorf("get paper %s: %w", paperID, err)
	}
	_, _, err = mat.Place(ctx, resp.GetPaper())
	return err
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
