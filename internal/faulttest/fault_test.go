package faulttest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paperfetch/paperfetch/bench/originlib"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

// stepKind is one fault the suite injects.
type stepKind int

const (
	killCoordinator stepKind = iota // SIGKILL the coordinator mid-download, restart it on the same store
	killFetcher                     // SIGKILL a fetcher mid-download, start a new one
	termFetcher                     // SIGTERM a fetcher mid-download (it drains), start a new one
	killCommitting                  // SIGKILL a fetcher holding prefetched leases and pending commits (coordinator stopped meanwhile), start a new one
)

func (k stepKind) String() string {
	return [...]string{"SIGKILL coordinator + restart", "SIGKILL fetcher + new fetcher", "SIGTERM fetcher mid-download + new fetcher",
		"SIGKILL fetcher with prefetched leases and pending commits + new fetcher"}[k]
}

// step injects kind once at least the fraction at of the papers has succeeded.
type step struct {
	at   float64
	kind stepKind
}

// plan is one form of the suite.
type plan struct {
	name     string
	papers   int
	fetchers int
	slots    int
	steps    []step
	deadline time.Duration
}

func shortPlan() plan {
	return plan{
		name: "short", papers: 500, fetchers: 3, slots: 8, deadline: 4 * time.Minute,
		steps: []step{
			{0.08, killCoordinator},
			{0.20, killFetcher},
			{0.32, termFetcher},
			{0.44, killCoordinator},
			{0.56, killFetcher},
			{0.68, killCommitting},
		},
	}
}

func longPlan() plan {
	p := plan{name: "long", papers: 2000, fetchers: 3, slots: 8, deadline: 12 * time.Minute}
	cycle := []stepKind{killCoordinator, killFetcher, termFetcher, killCommitting}
	for i, at := 0, 0.05; at <= 0.80; i, at = i+1, at+0.05 {
		p.steps = append(p.steps, step{at, cycle[i%len(cycle)]})
	}
	return p
}

// paperDef is one paper of the batch and what the origin will serve for it.
type paperDef struct {
	n      uint64
	id     string
	url    string
	size   int64
	sha256 string
}

// startOrigin starts the suite's origin (2ms latency) on a 127.0.0.1 test server, closed at
// the end of the test.
func startOrigin(t *testing.T) (*originlib.Origin, *httptest.Server) {
	t.Helper()
	origin, err := originlib.New(originlib.Config{Faults: originlib.Faults{Latency: 2 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(origin)
	t.Cleanup(srv.Close)
	return origin, srv
}

// splitmix is a small deterministic hash for choosing sizes and faults.
func splitmix(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
	x = (x ^ (x >> 27)) * 0x94D049BB133111EB
	return x ^ (x >> 31)
}

// makePapers defines count papers: 16–128 KiB (every tenth 512 KiB, every hundredth 3 MiB and
// truncated once, to exercise resuming, of which every tenth 8 MiB: the commits made durable
// per file), bodies throttled (256 KiB/s) so that downloads are in
// flight when processes are killed, and a deterministic mix of injected failures, each bounded
// so that every paper succeeds within its attempt budget.
func makePapers(base string, count int) []paperDef {
	defs := make([]paperDef, count)
	for i := range defs {
		n := uint64(i)
		size, rate := int64(16<<10)+int64(splitmix(n)%(112<<10)), 256<<10
		switch {
		case n%1000 == 150:
			// Exactly blobstore.LargeCommit, truncated once and resumed: committed on its own
			// (fdatasync, folder fsync) in the fetchers' group mode, after a resume.
			size, rate = blobstore.LargeCommit, 8<<20
		case n%100 == 50:
			// Large enough for the fetcher to keep the partial body of the truncated first
			// response and resume it with Range/If-Range.
			size, rate = 3<<20, 2<<20
		case n%10 == 0:
			size = 512 << 10
		}
		q := []string{fmt.Sprintf("size=%d", size), fmt.Sprintf("rate=%d", rate), "flaky=5", "flaky_max=1"}
		if n%100 == 50 {
			q = append(q, "truncate=1")
		}
		switch n % 10 {
		case 3:
			q = append(q, "reset=1")
		case 5:
			q = append(q, "truncate=1")
		case 7:
			q = append(q, "fail500=1")
		}
		if n%50 == 11 {
			q = append(q, "fail503=1", "retry_after=1")
		}
		if n%25 == 9 {
			q = append(q, "stall=300ms")
		}
		defs[i] = paperDef{
			n:      n,
			id:     fmt.Sprintf("paper-%05d", n),
			url:    fmt.Sprintf("%s/pdf/%d?%s", base, n, strings.Join(q, "&")),
			size:   size,
			sha256: originlib.SHA256(n, size),
		}
	}
	return defs
}

func TestFault(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault-injection suite builds and runs the real binaries; skipped with -short")
	}
	p := shortPlan()
	if *flagLong {
		p = longPlan()
	}
	began := time.Now()
	dir := t.TempDir()
	if *flagKeep {
		var err error
		if dir, err = os.MkdirTemp("", "faulttest-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("work folder kept: %s", dir)
	}
	ctx, fail := context.WithCancelCause(t.Context())
	defer fail(nil)
	ctx, cancel := context.WithTimeout(ctx, p.deadline)
	defer cancel()

	origin, srv := startOrigin(t)
	defs := makePapers(srv.URL, p.papers)

	c := newCluster(t, dir, fail)
	c.startCoordinator()
	for range p.fetchers {
		c.startFetcher(p.slots)
	}
	client := c.client()

	batchID := "faulttest-" + p.name
	events := []string{submitChunked(ctx, t, c, client, batchID, defs, 200)}
	t.Log(events[0])
	w := newBatchWatcher(client, batchID)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); w.run(watchCtx) }()
	defer func() { stopWatch(); <-watchDone }()

	for i, s := range p.steps {
		need := int64(math.Ceil(s.at * float64(p.papers)))
		if err := w.waitFor(ctx, fmt.Sprintf("%d papers succeeded (step %d)", need, i+1), func(b *pb.Batch) bool {
			return b.GetCounts().GetSucceeded() >= need || isTerminalBatch(b.GetState())
		}); err != nil {
			t.Fatal(err)
		}
		if b := w.snapshot(); isTerminalBatch(b.GetState()) {
			t.Fatalf("the batch ended (%v) before step %d (%v): the faults were not all injected", b.GetState(), i+1, s.kind)
		}
		ev, err := inject(ctx, c, origin, s.kind, p.slots)
		if err != nil {
			t.Fatalf("step %d (%v): %v", i+1, s.kind, err)
		}
		ev = fmt.Sprintf("%d. at %d/%d succeeded: %s", i+2, w.snapshot().GetCounts().GetSucceeded(), p.papers, ev)
		t.Log(ev)
		events = append(events, ev)
	}
	if err := w.waitFor(ctx, "the batch to end", func(b *pb.Batch) bool { return isTerminalBatch(b.GetState()) }); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(began)

	r := verify(ctx, t, client, origin, batchID, defs, w)
	if bad := c.stopAll(ctx); len(bad) > 0 {
		t.Errorf("processes that did not stop cleanly on SIGTERM: %s", strings.Join(bad, "; "))
	}
	stray := checkBlobs(t, c.blobDir, defs, c.fates())
	r.elapsed, r.events, r.stray, r.plan, r.fates = elapsed, events, stray, p, c.fates()
	if *flagReport != "" {
		if err := os.WriteFile(*flagReport, []byte(r.markdown(t.Failed())), 0o644); err != nil {
			t.Errorf("write report: %v", err)
		}
	}
}

// submitChunked sends the batch in chunks (CreateBatch, AppendPapers, SealBatch). Right after
// the first chunk is acknowledged it SIGKILLs the coordinator, restarts it, and resends that
// chunk, which must come back as a duplicate: an acknowledged chunk is durable and chunks are
// idempotent. It describes what it did.
func submitChunked(ctx context.Context, t *testing.T, c *cluster, client pb.CoordinatorServiceClient, batchID string, defs []paperDef, chunkSize int) string {
	t.Helper()
	var chunks [][]*pb.PaperSpec
	for i, d := range defs {
		if i%chunkSize == 0 {
			chunks = append(chunks, nil)
		}
		spec := &pb.PaperSpec{PaperId: d.id, Urls: []string{d.url}}
		if i%4 == 0 {
			spec.ExpectedSha256 = d.sha256
		}
		chunks[len(chunks)-1] = append(chunks[len(chunks)-1], spec)
	}
	call(ctx, t, "CreateBatch", func(cctx context.Context) error {
		_, err := client.CreateBatch(cctx, &pb.CreateBatchRequest{BatchId: batchID, Labels: map[string]string{"suite": "faulttest"}}, grpc.WaitForReady(true))
		return err
	})
	appendChunk := func(i int) *pb.AppendPapersResponse {
		var resp *pb.AppendPapersResponse
		call(ctx, t, fmt.Sprintf("AppendPapers(chunk %d)", i), func(cctx context.Context) error {
			var err error
			resp, err = client.AppendPapers(cctx, &pb.AppendPapersRequest{BatchId: batchID, ChunkIndex: int64(i), Papers: chunks[i]}, grpc.WaitForReady(true))
			return err
		})
		return resp
	}
	appendChunk(0)
	old := c.coordinator()
	c.signal(old, syscall.SIGKILL)
	if err := waitExit(ctx, old, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	c.startCoordinator()
	if resp := appendChunk(0); !resp.GetDuplicate() || resp.GetTotalPapers() != int64(len(chunks[0])) {
		t.Fatalf("chunk 0 resent after the coordinator restarted: duplicate=%v total=%d, want a duplicate of the %d papers acknowledged before the SIGKILL",
			resp.GetDuplicate(), resp.GetTotalPapers(), len(chunks[0]))
	}
	for i := 1; i < len(chunks); i++ {
		appendChunk(i)
	}
	var sealed *pb.SealBatchResponse
	call(ctx, t, "SealBatch", func(cctx context.Context) error {
		var err error
		sealed, err = client.SealBatch(cctx, &pb.SealBatchRequest{BatchId: batchID, ChunkCount: int64(len(chunks))}, grpc.WaitForReady(true))
		return err
	})
	if got := sealed.GetBatch().GetTotalPapers(); got != int64(len(defs)) {
		t.Fatalf("sealed batch has %d papers, want %d", got, len(defs))
	}
	return fmt.Sprintf("1. submitted in %d chunks of %d; SIGKILL %s right after chunk 0 was acknowledged, restarted it, chunk 0 resent came back as a duplicate", len(chunks), chunkSize, old.name)
}

// call runs one RPC with a per-call deadline, retrying while the coordinator is restarting or
// overloaded (UNAVAILABLE, RESOURCE_EXHAUSTED), a bounded number of times.
func call(ctx context.Context, t *testing.T, what string, rpc func(context.Context) error) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := rpc(cctx)
		cancel()
		if err == nil {
			return
		}
		if st := status.Code(err); (st != codes.Unavailable && st != codes.ResourceExhausted) || attempt == 10 || ctx.Err() != nil {
			t.Fatalf("%s: %v", what, err)
		}
		// Waiting on another process (the restarting coordinator): a short bounded pause.
		timer := time.NewTimer(100 * time.Millisecond)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
		}
	}
}

// inject performs one fault, once a download is in flight at the origin, and describes it.
func inject(ctx context.Context, c *cluster, origin *originlib.Origin, kind stepKind, slots int) (string, error) {
	switch kind {
	case killCoordinator:
		if err := origin.WaitFor(ctx, func(s originlib.Stats) bool { return s.InFlight > 0 }); err != nil {
			return "", err
		}
		inFlight := origin.Stats().InFlight
		old := c.coordinator()
		c.signal(old, syscall.SIGKILL)
		if err := waitExit(ctx, old, 30*time.Second); err != nil {
			return "", err
		}
		c.startCoordinator()
		return fmt.Sprintf("SIGKILL %s with %d download(s) in flight at the origin, restarted on the same store", old.name, inFlight), nil
	case killFetcher, termFetcher:
		var victim *proc
		var busy int64
		if err := origin.WaitFor(ctx, func(s originlib.Stats) bool {
			victim, busy = nil, 0
			for _, f := range c.liveFetchers() {
				if n := s.InFlightByUA[f.ua]; n > busy {
					victim, busy = f, n
				}
			}
			return victim != nil
		}); err != nil {
			return "", err
		}
		sig := syscall.SIGKILL
		if kind == termFetcher {
			sig = syscall.SIGTERM
		}
		c.signal(victim, sig)
		fresh := c.startFetcher(slots)
		if err := waitExit(ctx, victim, 40*time.Second); err != nil {
			return "", err
		}
		if kind == termFetcher && victim.err != nil {
			return "", fmt.Errorf("%s exited with %v after SIGTERM, want a clean exit (last lines:\n%s)", victim.name, victim.err, tail(victim.logPath, 10))
		}
		name := map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGTERM: "SIGTERM (exited cleanly)"}[sig]
		return fmt.Sprintf("%s %s with %d of its download(s) in flight; started %s", name, victim.name, busy, fresh.name), nil
	case killCommitting:
		return killPrefetching(ctx, c, slots)
	}
	return "", fmt.Errorf("unknown step %d", kind)
}

// Bounds of the killCommitting step (killPrefetching).
const (
	prefetchTries = 5               // attempts at catching a victim in the state wanted
	prefetchStop  = 5 * time.Second // longest stop of the coordinator per attempt
)

// killPrefetching SIGKILLs a fetcher while it holds prefetched leases (successors waiting for
// the slot of a running download) and pending commits (received bodies whose result the
// coordinator has not committed and acknowledged yet). Both are held deterministically, not
// caught by luck (a commit takes milliseconds): the step picks the fetcher with the most
// waiting successors and stops the coordinator (SIGSTOP), so that the victim's downloads that
// finish keep their results unacknowledged and no new work arrives, while the successors of
// the downloads still running keep waiting; it kills the victim as soon as its /metrics show
// both, then resumes the coordinator (SIGCONT) and starts a new fetcher. When the victim's
// successors all started first, the coordinator resumes and the step tries again (bounded).
func killPrefetching(ctx context.Context, c *cluster, slots int) (string, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	for try := 1; ; try++ {
		victim, err := busiestPrefetcher(ctx, c, client)
		if err != nil {
			return "", err
		}
		coord := c.coordinator()
		if err := coord.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			return "", fmt.Errorf("SIGSTOP %s: %w", coord.name, err)
		}
		g, caught, err := catchPrefetching(ctx, client, victim)
		if caught {
			c.signal(victim, syscall.SIGKILL)
		}
		if err := coord.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			return "", fmt.Errorf("SIGCONT %s: %w", coord.name, err)
		}
		if err != nil {
			return "", err
		}
		if !caught {
			if try == prefetchTries {
				return "", fmt.Errorf("%d times, no fetcher held prefetched leases and unacknowledged results together", try)
			}
			continue
		}
		fresh := c.startFetcher(slots)
		if err := waitExit(ctx, victim, 40*time.Second); err != nil {
			return "", err
		}
		return fmt.Sprintf("SIGKILL %s holding %d prefetched leases (successors waiting for a slot), %d received bodies not yet durable and %d results not yet acknowledged "+
			"(its /metrics, read while %s was stopped, attempt %d); resumed %s, started %s",
			victim.name, int(g[gaugePrefetched]), int(g[gaugePendingCommits]), int(g[gaugeUnacknowledged]), coord.name, try, coord.name, fresh.name), nil
	}
}

// Fetcher gauges read by the suite.
const (
	gaugePrefetched     = "paperfetch_fetcher_prefetched_leases"
	gaugePendingCommits = "paperfetch_fetcher_pending_commits"
	gaugeUnacknowledged = "paperfetch_fetcher_unacknowledged_results"
)

// busiestPrefetcher polls the live fetchers' /metrics until one holds prefetched leases, and
// returns the one holding most.
func busiestPrefetcher(ctx context.Context, c *cluster, client *http.Client) (*proc, error) {
	for {
		var victim *proc
		most := 0.0
		for _, f := range c.liveFetchers() {
			if n := fetcherGauges(ctx, client, f.metrics)[gaugePrefetched]; n > most {
				victim, most = f, n
			}
		}
		if victim != nil {
			return victim, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("no fetcher was seen holding prefetched leases: %w", err)
		}
	}
}

// catchPrefetching polls victim's /metrics (for at most prefetchStop) until it holds prefetched
// leases and results not yet acknowledged; caught is false when its prefetched leases all
// started first.
func catchPrefetching(ctx context.Context, client *http.Client, victim *proc) (g map[string]float64, caught bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, prefetchStop)
	defer cancel()
	for {
		g = fetcherGauges(wctx, client, victim.metrics)
		switch {
		case g[gaugePrefetched] > 0 && g[gaugeUnacknowledged]+g[gaugePendingCommits] > 0:
			return g, true, nil
		case g[gaugePrefetched] == 0 && wctx.Err() == nil:
			return g, false, nil
		case ctx.Err() != nil:
			return g, false, ctx.Err()
		case wctx.Err() != nil:
			return g, false, nil
		}
	}
}

// fetcherGauges reads the suite's gauges from a fetcher's /metrics (none when it cannot).
func fetcherGauges(ctx context.Context, client *http.Client, url string) map[string]float64 {
	out := map[string]float64{}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return out
	}
	resp, err := client.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(body), "\n") {
		for _, name := range []string{gaugePrefetched, gaugePendingCommits, gaugeUnacknowledged} {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					out[name] = f
				}
			}
		}
	}
	return out
}

// result summarises a run for the report.
type result struct {
	plan                        plan
	elapsed                     time.Duration
	events                      []string
	stray                       []string
	fates                       map[string]string
	attempts                    int64
	origin                      originlib.Stats
	streams                     int
	batchSucceeded, batchFailed int64
	bytesStored                 int64
}

// verify checks the coordinator's final view against the origin's.
func verify(ctx context.Context, t *testing.T, client pb.CoordinatorServiceClient, origin *originlib.Origin, batchID string, defs []paperDef, w *batchWatcher) result {
	t.Helper()
	var r result
	get, err := client.GetBatch(ctx, &pb.GetBatchRequest{BatchId: batchID}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("GetBatch: %v", err)
	}
	b := get.GetBatch()
	cnt := b.GetCounts()
	r.batchSucceeded, r.batchFailed, r.bytesStored = cnt.GetSucceeded(), cnt.GetFailed(), b.GetBytesStored()
	var wantBytes int64
	for _, d := range defs {
		wantBytes += d.size
	}
	n := int64(len(defs))
	if b.GetState() != pb.BatchState_BATCH_STATE_COMPLETED || cnt.GetSucceeded() != n || cnt.GetFailed() != 0 ||
		cnt.GetCancelled() != 0 || cnt.GetQueued() != 0 || cnt.GetDownloading() != 0 || cnt.GetRetryWait() != 0 || b.GetTotalPapers() != n {
		t.Errorf("batch = %v with counts %v and %d papers; want COMPLETED with all %d succeeded", b.GetState(), cnt, b.GetTotalPapers(), n)
	}
	if b.GetBytesStored() != wantBytes {
		t.Errorf("batch bytes_stored = %d, want %d", b.GetBytesStored(), wantBytes)
	}

	papers := map[string]*pb.Paper{}
	token := ""
	for {
		resp, err := client.ListPapers(ctx, &pb.ListPapersRequest{BatchId: batchID, PageSize: 500, PageToken: token})
		if err != nil {
			t.Fatalf("ListPapers: %v", err)
		}
		for _, p := range resp.GetPapers() {
			if _, dup := papers[p.GetSpec().GetPaperId()]; dup {
				t.Errorf("ListPapers returned %s twice", p.GetSpec().GetPaperId())
			}
			papers[p.GetSpec().GetPaperId()] = p
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(papers) != len(defs) {
		t.Errorf("ListPapers returned %d papers, want %d", len(papers), len(defs))
	}
	// Every download has ended: wait for the origin to account the last responses.
	if err := origin.WaitFor(ctx, func(s originlib.Stats) bool { return s.InFlight == 0 }); err != nil {
		t.Fatalf("the origin still serves requests after the batch completed: %v", err)
	}
	o := origin.Papers()
	var bad []string
	for _, d := range defs {
		p := papers[d.id]
		switch {
		case p == nil:
			bad = append(bad, d.id+": missing")
			continue
		case p.GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED:
			bad = append(bad, fmt.Sprintf("%s: %v after %d attempts (%v: %s)", d.id, p.GetState(), p.GetAttempts(), p.GetLastFailureReason(), p.GetLastError()))
		case p.GetSha256() != d.sha256 || p.GetSize() != d.size:
			bad = append(bad, fmt.Sprintf("%s: sha256 %s size %d, the origin served %s size %d", d.id, p.GetSha256(), p.GetSize(), d.sha256, d.size))
		case p.GetBlobKey() != "sha256/"+d.sha256[:2]+"/"+d.sha256+".pdf":
			bad = append(bad, fmt.Sprintf("%s: blob key %q is not the content address", d.id, p.GetBlobKey()))
		case p.GetCached():
			bad = append(bad, d.id+": marked as a cache hit in a fresh store")
		case o[d.n].Completes == 0:
			bad = append(bad, d.id+": SUCCEEDED but the origin never delivered it completely")
		}
		r.attempts += int64(p.GetAttempts())
	}
	if len(bad) > 0 {
		t.Errorf("%d papers are wrong, e.g.:\n  %s", len(bad), strings.Join(bad[:min(len(bad), 15)], "\n  "))
	}

	r.origin = origin.Stats()
	if r.origin.DistinctComplete != cnt.GetSucceeded() {
		t.Errorf("the origin delivered %d distinct papers completely, the coordinator counts %d succeeded", r.origin.DistinctComplete, cnt.GetSucceeded())
	}
	w.mu.Lock()
	regressions, terminal := slices.Clone(w.regressions), len(w.terminal)
	r.streams = w.streams
	w.mu.Unlock()
	if len(regressions) > 0 {
		t.Errorf("papers left a terminal state (WatchBatch): %s", strings.Join(regressions[:min(len(regressions), 10)], "; "))
	}
	if terminal > len(defs) {
		t.Errorf("WatchBatch reported %d terminal papers for %d", terminal, len(defs))
	}
	// Read a few papers back through the API.
	for _, d := range []paperDef{defs[0], defs[len(defs)/2], defs[len(defs)-1]} {
		if got, err := readPaper(ctx, client, batchID, d.id); err != nil || got != d.sha256 {
			t.Errorf("ReadPaper(%s) = sha256 %s, %v; want %s", d.id, got, err, d.sha256)
		}
	}
	return r
}

// readPaper streams a paper through ReadPaper and returns the SHA-256 of the bytes.
func readPaper(ctx context.Context, client pb.CoordinatorServiceClient, batchID, paperID string) (string, error) {
	stream, err := client.ReadPaper(ctx, &pb.ReadPaperRequest{BatchId: batchID, PaperId: paperID})
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
		if err != nil {
			return "", err
		}
		h.Write(msg.GetData())
	}
}

// checkBlobs requires the blob folder to hold exactly the content-addressed blobs of defs, each
// with the right content, and nothing else (no temporary, partial or stray files). It returns
// the stray files.
func checkBlobs(t *testing.T, root string, defs []paperDef, fates map[string]string) []string {
	t.Helper()
	want := map[string]bool{}
	for _, d := range defs {
		want[filepath.Join("sha256", d.sha256[:2], d.sha256+".pdf")] = true
	}
	var stray []string
	found := 0
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		if !want[rel] {
			stray = append(stray, rel)
			return nil
		}
		found++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		if name := strings.TrimSuffix(filepath.Base(rel), ".pdf"); hex.EncodeToString(sum[:]) != name {
			t.Errorf("blob %s holds content with sha256 %x", rel, sum)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk the blob folder: %v", err)
	}
	if found != len(want) {
		t.Errorf("the blob folder holds %d of the %d expected blobs", found, len(want))
	}
	if len(stray) > 0 {
		t.Errorf("the blob folder holds %d files that are not content-addressed blobs (%s), e.g. %s",
			len(stray), attribute(stray, fates), strings.Join(stray[:min(len(stray), 6)], ", "))
	}
	return stray
}

// attribute groups stray spool files by the fetcher that wrote them: the fetcher names its
// spool files after the first 4 bytes of the SHA-256 of its id (fetcher/spool.go).
func attribute(stray []string, fates map[string]string) string {
	owner := map[string]string{}
	for id, fate := range fates {
		h := sha256.Sum256([]byte(id))
		owner[hex.EncodeToString(h[:4])] = id + " (" + fate + ")"
	}
	count := map[string]int{}
	for _, s := range stray {
		prefix, _, _ := strings.Cut(filepath.Base(s), "-")
		who := owner[prefix]
		if who == "" {
			who = "unknown writer"
		}
		count[who]++
	}
	var parts []string
	for who, n := range count {
		parts = append(parts, fmt.Sprintf("%d from %s", n, who))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// markdown renders the result for bench/RESULTS.md.
func (r result) markdown(failed bool) string {
	var b strings.Builder
	verdict := "PASS"
	if failed {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "Form **%s**: %d papers, %d fetchers × %d slots, binaries built with -race: %v. Verdict: **%s** in %.1f s.\n\n",
		r.plan.name, r.plan.papers, r.plan.fetchers, r.plan.slots, bins.race, verdict, r.elapsed.Seconds())
	fmt.Fprintf(&b, "| measure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| papers succeeded / failed (coordinator) | %d / %d |\n", r.batchSucceeded, r.batchFailed)
	fmt.Fprintf(&b, "| papers delivered completely (origin, distinct) | %d |\n", r.origin.DistinctComplete)
	fmt.Fprintf(&b, "| complete bodies served (re-downloads after kills included) | %d |\n", r.origin.CompleteBodies)
	fmt.Fprintf(&b, "| origin requests / injected 503 / 500 / resets / truncations | %d / %d / %d / %d / %d |\n",
		r.origin.Requests, r.origin.Status["503"], r.origin.Status["500"], r.origin.Resets, r.origin.Truncated)
	fmt.Fprintf(&b, "| ranged (resumed) responses served, 206 | %d |\n", r.origin.Status["206"])
	fmt.Fprintf(&b, "| attempts recorded by the coordinator | %d |\n", r.attempts)
	fmt.Fprintf(&b, "| bytes stored | %d |\n", r.bytesStored)
	fmt.Fprintf(&b, "| WatchBatch streams opened (reconnects across restarts) | %d |\n", r.streams)
	fmt.Fprintf(&b, "| stray files in the blob folder | %d |\n\n", len(r.stray))
	b.WriteString("Faults injected:\n\n")
	for _, e := range r.events {
		fmt.Fprintf(&b, "- %s\n", e)
	}
	if len(r.stray) > 0 {
		fmt.Fprintf(&b, "\nStray files: %s; e.g. %s\n", attribute(r.stray, r.fates), strings.Join(r.stray[:min(len(r.stray), 4)], ", "))
	}
	return b.String()
}
