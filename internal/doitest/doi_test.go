package doitest_test

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/paperfetch/paperfetch/coordinator"
	"github.com/paperfetch/paperfetch/embedded"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/doitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const email = "librarian@example.org"

func start(t *testing.T, w *doitest.World, dir string) *embedded.System {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resolver, _ := url.Parse(w.Resolver.URL)
	o := embedded.DefaultOptions()
	o.Dir, o.Fetchers, o.Concurrency = dir, 2, 16
	o.PerHostDelay, o.PerHostConcurrency, o.Retries = 0, 8, 4
	// The resolver's default (1s between requests) would make the test slow; the API hosts
	// keep their defaults (OpenAlex 150ms/4, Unpaywall 500ms/2), checked below.
	o.HostLimits = map[string]embedded.HostLimits{resolver.Host: {Delay: new(10 * time.Millisecond), Concurrency: new(2)}}
	o.ArxivBase, o.DOIBase, o.OpenAlexBase, o.UnpaywallBase, o.Email = w.Arxiv.URL, w.Resolver.URL, w.OpenAlex.URL, w.Unpaywall.URL, email
	o.AllowPrivateNetworks = true
	o.TuneCoordinator = func(c *coordinator.Config) { c.NoSync, c.RetryBaseDelay = true, 100*time.Millisecond }
	sys, err := embedded.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return sys
}

func waitDone(t *testing.T, sys *embedded.System, id string) *pb.Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	b, err := sys.WaitBatch(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func papers(t *testing.T, c pb.CoordinatorServiceClient, batch string) map[string]*pb.Paper {
	t.Helper()
	resp, err := c.ListPapers(context.Background(), &pb.ListPapersRequest{BatchId: batch, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*pb.Paper{}
	for _, p := range resp.GetPapers() {
		out[p.GetSpec().GetPaperId()] = p
	}
	return out
}

// TestEveryRoute submits one paper per route and trap, checks which route produced each PDF,
// that only real PDFs were stored, the failure reasons and messages, the contact address on
// every API call, the API hosts' politeness, that no step was resolved twice (not even for two
// papers with one DOI), and the cache by DOI.
func TestEveryRoute(t *testing.T) {
	w := doitest.Start(email)
	defer w.Close()
	sys := start(t, w, t.TempDir())
	defer sys.Close()
	c := pb.NewCoordinatorServiceClient(sys.Conn())
	specs := []*pb.PaperSpec{
		{PaperId: "arxiv", Doi: doitest.DOIArxiv},
		{PaperId: "oa", Doi: "https://doi.org/" + doitest.DOIOpenAlex},
		{PaperId: "oa-twin", Doi: strings.ToUpper(doitest.DOIOpenAlex)}, // the same DOI: resolved and fetched once
		{PaperId: "old", Doi: doitest.DOIOldOA},
		{PaperId: "up", Doi: doitest.DOIUnpaywall},
		{PaperId: "abs", Doi: "doi:" + doitest.DOIMetaAbs},
		{PaperId: "rel", Doi: doitest.DOIMetaRel},
		{PaperId: "alt", Doi: doitest.DOILinkAlt},
		{PaperId: "forward", Doi: doitest.DOIForward},
		{PaperId: "csl", Doi: doitest.DOICSL},
		{PaperId: "trap", Doi: doitest.DOITrap},
		{PaperId: "unknown", Doi: doitest.DOIUnknown},
		{PaperId: "special", Doi: doitest.DOISpecial},
		{PaperId: "slow", Doi: doitest.DOISlow},
		{PaperId: "both", Doi: doitest.DOIBoth, Urls: []string{w.Publisher.URL + "/article/landing"}},
		{PaperId: "url-first", Doi: doitest.DOITrap + "/x", Urls: []string{w.Publisher.URL + "/pdf/direct.pdf"}},
	}
	if _, err := c.SubmitBatch(context.Background(), &pb.SubmitBatchRequest{BatchId: "b1", Papers: specs}); err != nil {
		t.Fatal(err)
	}
	b := waitDone(t, sys, "b1")
	got := papers(t, c, "b1")
	want := map[string]string{
		"arxiv": "arxiv", "oa": "openalex", "oa-twin": "openalex", "old": "openalex", "up": "unpaywall", "abs": "landing_page", "rel": "landing_page",
		"alt": "landing_page", "forward": "landing_page", "csl": "csl_link", "special": "openalex", "slow": "openalex", "both": "openalex", "url-first": "url",
	}
	for id, src := range want {
		p := got[id]
		if p.GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED || p.GetSource() != src {
			t.Errorf("%s: %v source %q (want %q), error %q", id, p.GetState(), p.GetSource(), src, p.GetLastError())
			continue
		}
		path, ok := blobstore.LocalPath(sys.BucketURL(), p.GetBlobKey())
		data, err := os.ReadFile(path)
		if !ok || err != nil || !bytes.HasPrefix(data, []byte("%PDF-")) {
			t.Errorf("%s: blob %s is not a PDF: %v %q", id, path, err, data[:min(len(data), 40)])
		}
	}
	if !got["oa"].GetCached() == !got["oa-twin"].GetCached() || w.Hits("repo", "/oa/oa1.pdf") != 1 {
		t.Errorf("two papers with one DOI: cached %v and %v, the copy fetched %d times, want once", got["oa"].GetCached(), got["oa-twin"].GetCached(), w.Hits("repo", "/oa/oa1.pdf"))
	}
	if u := got["abs"].GetFinalUrl(); u != w.Publisher.URL+"/pdf/abs.pdf?download=1&type=main" {
		t.Errorf("abs: final URL %q (the &amp; entity must be decoded)", u)
	}
	if u := got["rel"].GetFinalUrl(); u != w.Publisher.URL+"/pdf/rel.pdf" {
		t.Errorf("rel: final URL %q (relative to the page reached after the redirects)", u)
	}
	trap := got["trap"]
	if trap.GetState() != pb.PaperState_PAPER_STATE_FAILED || trap.GetLastFailureReason() != pb.FailureReason_FAILURE_REASON_NO_OPEN_COPY {
		t.Errorf("trap: %v %v %q", trap.GetState(), trap.GetLastFailureReason(), trap.GetLastError())
	}
	for _, route := range []string{"openalex", "unpaywall", "landing_page: forwards to 127.0.0.1", "csl_link", "not_pdf"} {
		if !strings.Contains(trap.GetLastError(), route) {
			t.Errorf("trap: message %q does not mention %s", trap.GetLastError(), route)
		}
	}
	unknown := got["unknown"]
	if unknown.GetLastFailureReason() != pb.FailureReason_FAILURE_REASON_NOT_FOUND || !strings.Contains(unknown.GetLastError(), "DOI 10.9999/unknown not found") {
		t.Errorf("unknown: %v %q", unknown.GetLastFailureReason(), unknown.GetLastError())
	}
	if b.GetCounts().GetSucceeded() != int64(len(want)) || b.GetCounts().GetFailed() != 2 {
		t.Errorf("counts %v", b.GetCounts())
	}
	if v := w.Violations(); len(v) > 0 {
		t.Errorf("contact address or encoding violations:\n%s", strings.Join(v, "\n"))
	}
	// Each route was asked once per DOI (the 429 once more), the URL before the DOI.
	for _, d := range []string{doitest.DOIOpenAlex, doitest.DOIUnpaywall, doitest.DOITrap, doitest.DOISpecial, doitest.DOIUnknown} {
		if n := w.Hits("openalex", d); n != 1 {
			t.Errorf("openalex asked %d times for %s", n, d)
		}
	}
	if n := w.Hits("openalex", doitest.DOISlow); n != 2 {
		t.Errorf("openalex asked %d times for the rate-limited DOI, want 2", n)
	} else if at := w.HitTimes("openalex", doitest.DOISlow); at[1].Sub(at[0]) < time.Second {
		t.Errorf("the 429's Retry-After (1 s) was not honoured: asked again after %s", at[1].Sub(at[0]))
	}
	if n := w.Hits("resolver-csl", doitest.DOIUnknown); n != 0 {
		t.Errorf("the CSL route was tried for a DOI the resolver does not know")
	}
	if w.Hits("openalex", doitest.DOITrap+"/x") != 0 || w.Hits("publisher", "/pdf/direct.pdf") != 1 {
		t.Errorf("an entry's URL must be tried before its DOI's routes")
	}
	if w.Hits("repo", "/oa/both.pdf") != 1 || w.Hits("publisher", "/article/landing") != 1 {
		t.Errorf("URL then DOI: landing %d, copy %d", w.Hits("publisher", "/article/landing"), w.Hits("repo", "/oa/both.pdf"))
	}
	// Politeness of the API hosts (defaults): concurrency and spacing of request starts.
	if n := w.MaxActive("openalex"); n > 4 {
		t.Errorf("openalex saw %d concurrent requests, limit 4", n)
	}
	if n := w.MaxActive("unpaywall"); n > 2 {
		t.Errorf("unpaywall saw %d concurrent requests, limit 2", n)
	}
	// The coordinator spaces the leases it hands out (exactly: TestAPIHostPoliteness in the
	// coordinator, on a fake clock); the origin sees those starts shifted by each fetcher's
	// scheduling (up to 145 ms seen on a loaded machine, which made two starts 5 ms apart),
	// which does not add up: on average the starts are at least the delay apart.
	for server, minGap := range map[string]time.Duration{"openalex": 100 * time.Millisecond, "unpaywall": 400 * time.Millisecond} {
		starts := w.Starts(server)
		sort.Slice(starts, func(i, j int) bool { return starts[i].Before(starts[j]) })
		// The first and last starts are one scheduling jitter off at most: allow one half-delay.
		if n := len(starts); n > 2 {
			if span := starts[n-1].Sub(starts[0]); span < time.Duration(n-1)*minGap-minGap/2 {
				t.Errorf("%s: %d requests within %s, want at least %s between starts on average", server, n, span, minGap)
			}
		}
	}

	// The cache works by DOI: another id, another spelling of the same DOI.
	before := w.Hits("openalex", doitest.DOIOpenAlex)
	if _, err := c.SubmitBatch(context.Background(), &pb.SubmitBatchRequest{BatchId: "b2", Papers: []*pb.PaperSpec{
		{PaperId: "another-id", Doi: "doi:" + strings.ToUpper(doitest.DOIOpenAlex)},
	}}); err != nil {
		t.Fatal(err)
	}
	waitDone(t, sys, "b2")
	p := papers(t, c, "b2")["another-id"]
	if !p.GetCached() || p.GetSource() != "openalex" || p.GetSha256() != got["oa"].GetSha256() || w.Hits("openalex", doitest.DOIOpenAlex) != before {
		t.Errorf("DOI cache: %v cached=%v source=%q", p.GetState(), p.GetCached(), p.GetSource())
	}
}

// TestRestartDoesNotResolveAgain resolves a DOI whose open copy fails transiently, restarts
// the system while the paper waits for its retry, and checks that the recorded candidate is
// downloaded without asking OpenAlex again, and that a second paper with the same DOI waited
// for the first (a cache hit) instead of resolving it too.
func TestRestartDoesNotResolveAgain(t *testing.T) {
	w := doitest.Start(email)
	defer w.Close()
	dir := t.TempDir()
	sys := start(t, w, dir)
	c := pb.NewCoordinatorServiceClient(sys.Conn())
	if _, err := c.SubmitBatch(context.Background(), &pb.SubmitBatchRequest{BatchId: "r1", Papers: []*pb.PaperSpec{{PaperId: "flaky", Doi: doitest.DOIFlaky}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.FlakyHit:
	case <-time.After(60 * time.Second):
		t.Fatal("the candidate was never requested")
	}
	// Another paper with the same DOI, while the first one's plan waits for a retry: it must
	// neither resolve the DOI again nor download it, before or after the restart.
	if _, err := c.SubmitBatch(context.Background(), &pb.SubmitBatchRequest{BatchId: "r2", Papers: []*pb.PaperSpec{{PaperId: "twin", Doi: "doi:" + strings.ToUpper(doitest.DOIFlaky)}}}); err != nil {
		t.Fatal(err)
	}
	// Two more failed tries of the copy (retry delays 100 ms, 200 ms): time enough for the twin's
	// OpenAlex step (150 ms after the first one), were it not waiting.
	for range 2 {
		select {
		case <-w.FlakyHit:
		case <-time.After(60 * time.Second):
			t.Fatal("the candidate was not retried")
		}
	}
	if err := sys.Close(); err != nil {
		t.Fatal(err)
	}
	w.ReleaseFlaky()
	sys = start(t, w, dir)
	defer sys.Close()
	c = pb.NewCoordinatorServiceClient(sys.Conn())
	waitDone(t, sys, "r1")
	p := papers(t, c, "r1")["flaky"]
	if p.GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED || p.GetSource() != "openalex" {
		t.Fatalf("flaky: %v %q %q", p.GetState(), p.GetSource(), p.GetLastError())
	}
	if n := w.Hits("openalex", doitest.DOIFlaky); n != 1 {
		t.Fatalf("OpenAlex asked %d times; the restart must reuse the recorded candidate and the twin wait for it", n)
	}
	waitDone(t, sys, "r2")
	if twin := papers(t, c, "r2")["twin"]; !twin.GetCached() || twin.GetSha256() != p.GetSha256() || twin.GetSource() != "openalex" {
		t.Fatalf("twin: %v cached=%v source=%q", twin.GetState(), twin.GetCached(), twin.GetSource())
	}
}
