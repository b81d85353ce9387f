package embedded_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paperfetch/paperfetch/coordinator"
	"github.com/paperfetch/paperfetch/embedded"
	"github.com/paperfetch/paperfetch/fetcher"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func pdf(name string) []byte { return []byte("%PDF-1.4\n" + name + "\n%%EOF\n") }

func start(t *testing.T, dir string, lis net.Listener) *embedded.System {
	t.Helper()
	return startWith(t, testOptions(dir, lis))
}

// startWith starts a system with o (its start bounded by 30 s).
func startWith(t *testing.T, o embedded.Options) *embedded.System {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sys, err := embedded.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return sys
}

// testOptions are the options of the tests: two fetchers, no politeness delay, no fsync.
func testOptions(dir string, lis net.Listener) embedded.Options {
	o := embedded.DefaultOptions()
	o.Dir, o.Listener = dir, lis
	o.Fetchers, o.Concurrency, o.PerHostDelay, o.PerHostConcurrency = 2, 4, 0, 8
	o.AllowPrivateNetworks = true
	o.TuneCoordinator = func(c *coordinator.Config) { c.NoSync = true }
	return o
}

func watchDone(t *testing.T, sys *embedded.System, id string) *pb.Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := sys.WaitBatch(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDownloadAndReopen downloads a batch through the embedded system, closes it, reopens the
// same folder and finds the batch and its blobs again.
func TestDownloadAndReopen(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pdf")
		_, _ = w.Write(pdf(r.URL.Path))
	}))
	defer origin.Close()
	dir := t.TempDir()

	sys := start(t, dir, nil)
	client := pb.NewCoordinatorServiceClient(sys.Conn())
	var papers []*pb.PaperSpec
	for i := range 10 {
		papers = append(papers, &pb.PaperSpec{PaperId: fmt.Sprintf("p%d", i), Urls: []string{fmt.Sprintf("%s/p%d.pdf", origin.URL, i)}})
	}
	ctx := context.Background()
	if _, err := client.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "b1", Papers: papers}); err != nil {
		t.Fatal(err)
	}
	b := watchDone(t, sys, "b1")
	if b.GetCounts().GetSucceeded() != 10 {
		t.Fatalf("batch %v", b)
	}
	if _, err := sys.WaitBatch(ctx, "no-such-batch"); status.Code(err) != codes.NotFound {
		t.Fatalf("WaitBatch of an unknown batch: %v, want NotFound", err)
	}
	resp, err := client.GetPaper(ctx, &pb.GetPaperRequest{BatchId: "b1", PaperId: "p3"})
	if err != nil {
		t.Fatal(err)
	}
	path, ok := blobstore.LocalPath(sys.BucketURL(), resp.GetPaper().GetBlobKey())
	if !ok {
		t.Fatalf("blob %q is not local", resp.GetPaper().GetBlobKey())
	}
	data, err := os.ReadFile(path)
	sum := sha256.Sum256(pdf("/p3.pdf"))
	if err != nil || string(data) != string(pdf("/p3.pdf")) || resp.GetPaper().GetSha256() != hex.EncodeToString(sum[:]) {
		t.Fatalf("blob %s: %q %v", path, data, err)
	}
	if err := sys.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sys.Close(); err != nil { // idempotent
		t.Fatal(err)
	}

	// Reopen on a TCP listener: the batch is still there, and a new batch with the same
	// papers completes from the cache.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sys = start(t, dir, lis)
	defer sys.Close()
	client = pb.NewCoordinatorServiceClient(sys.Conn())
	got, err := client.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "b1"})
	if err != nil || got.GetBatch().GetState() != pb.BatchState_BATCH_STATE_COMPLETED {
		t.Fatalf("reopened batch: %v %v", got, err)
	}
	if _, err := client.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "b2", Papers: papers}); err != nil {
		t.Fatal(err)
	}
	if b := watchDone(t, sys, "b2"); b.GetCounts().GetCached() != 10 {
		t.Fatalf("second batch not from the cache: %v", b)
	}
	if sys.Addr() != lis.Addr().String() {
		t.Fatalf("Addr %s, want %s", sys.Addr(), lis.Addr())
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := embedded.Start(context.Background(), embedded.Options{}); err == nil {
		t.Fatal("Start without a folder succeeded")
	}
	dir := t.TempDir()
	sys := start(t, dir, nil)
	defer sys.Close()
	// A second system on the same folder cannot lock the store.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := testOptions(dir, nil)
	o.TuneCoordinator = func(c *coordinator.Config) { c.LockTimeout = 50 * time.Millisecond }
	if _, err := embedded.Start(ctx, o); !errors.Is(err, coordinator.ErrStoreLocked) {
		t.Fatal("second Start on the same folder succeeded")
	}
}

// TestOptionsValidate: every invalid option is rejected by Start with an error naming the
// field and its flag, before anything is created; so is an invalid value left by the tuning
// hooks (named by the coordinator's or fetcher's field). Zero means what the flag's 0 means.
func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		field  string
		mutate func(*embedded.Options)
	}{
		{"Options.Dir", func(o *embedded.Options) { o.Dir = "" }},
		{"Options.Fetchers (--fetchers)", func(o *embedded.Options) { o.Fetchers = 0 }},
		{"Options.Fetchers (--fetchers)", func(o *embedded.Options) { o.Fetchers = embedded.MaxFetchers + 1 }},
		{"Options.Concurrency (--concurrency)", func(o *embedded.Options) { o.Concurrency = 0 }},
		{"Options.Concurrency (--concurrency)", func(o *embedded.Options) { o.Concurrency = embedded.MaxConcurrency + 1 }},
		{"Options.PerHostConcurrency (--per-host-concurrency)", func(o *embedded.Options) { o.PerHostConcurrency = 0 }},
		{"Options.PerHostDelay (--per-host-delay)", func(o *embedded.Options) { o.PerHostDelay = -time.Second }},
		{"Options.Retries (--retries)", func(o *embedded.Options) { o.Retries = -1 }},
		{"Options.Retries (--retries)", func(o *embedded.Options) { o.Retries = embedded.MaxRetries + 1 }},
		{"Options.MaxSize (--max-size)", func(o *embedded.Options) { o.MaxSize = 0 }},
		{"Options.Timeout (--timeout)", func(o *embedded.Options) { o.Timeout = -time.Minute }},
		{"Options.Proxy (--proxy)", func(o *embedded.Options) { o.Proxy = "ftp://proxy.example" }},
		{"--doi-base must be an http(s) URL", func(o *embedded.Options) { o.DOIBase = "not a url" }},
		{"Options.DrainGrace", func(o *embedded.Options) { o.DrainGrace = -time.Second }},
		{`Config.HostOverrides["a.example"].Delay (--host-limit)`, func(o *embedded.Options) {
			o.HostLimits = map[string]embedded.HostLimits{"a.example": {Delay: new(-time.Second)}}
		}},
		{"Config.WatchInterval", func(o *embedded.Options) {
			o.TuneCoordinator = func(c *coordinator.Config) { c.WatchInterval = 0 }
		}},
		{"Config.HeartbeatInterval (--heartbeat-interval)", func(o *embedded.Options) {
			o.TuneFetcher = func(c *fetcher.Config) { c.HeartbeatInterval = -time.Second }
		}},
	} {
		dir := filepath.Join(t.TempDir(), "state")
		o := testOptions(dir, nil)
		tc.mutate(&o)
		_, err := embedded.Start(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), tc.field+" ") {
			t.Errorf("%s: %v", tc.field, err)
		}
		if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
			t.Errorf("%s: the state folder was created (%v)", tc.field, serr)
		}
	}
}

// TestCloseEndsStreams: Close ends the coordinator's streams (a WatchBatch of a client of the
// system, the fetchers' Work streams) with UNAVAILABLE "shutting down" as the coordinator
// binary does, instead of leaving them to the hard stop or cutting the client's connection
// under them; running downloads are aborted after DrainGrace (0 here) and stay queued.
func TestCloseEndsStreams(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers: the downloads are running when Close comes
	}))
	defer origin.Close()
	o := testOptions(t.TempDir(), nil)
	o.DrainGrace = 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sys, err := embedded.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	client := pb.NewCoordinatorServiceClient(sys.Conn())
	if _, err := client.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "b", Papers: []*pb.PaperSpec{
		{PaperId: "p", Urls: []string{origin.URL + "/p.pdf"}}}}); err != nil {
		t.Fatal(err)
	}
	stream, err := client.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for { // until the paper is downloading
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetBatch().GetCounts().GetDownloading() == 1 {
			break
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- sys.Close() }()
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "shutting down") {
			t.Fatalf("the watch stream ended with %v, want UNAVAILABLE shutting down", err)
		}
		break
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

// The embedded coordinator updates its in-process watchers every embedded.WatchInterval, not
// every coordinator.DefaultWatchInterval: get places the papers of the last update after the
// last download.
func TestWatchInterval(t *testing.T) {
	o := testOptions(t.TempDir(), nil)
	var got time.Duration
	o.TuneCoordinator = func(c *coordinator.Config) { c.NoSync, got = true, c.WatchInterval }
	sys, err := embedded.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.Close(); err != nil {
		t.Fatal(err)
	}
	if got != embedded.WatchInterval || got >= coordinator.DefaultWatchInterval {
		t.Fatalf("watch interval %v, want %v", got, embedded.WatchInterval)
	}
}

// memTap is a BodyTap keeping each finished copy in memory, by paper.
type memTap struct {
	mu       sync.Mutex
	finished map[string]*memCopy // batch/paper -> copy
}

type memCopy struct {
	t   *memTap
	key string
	buf []byte
	sha string
}

func (m *memTap) Open(batchID, paperID string) embedded.TapWriter {
	return &memCopy{t: m, key: batchID + "/" + paperID}
}

func (c *memCopy) Write(p []byte) (int, error) { c.buf = append(c.buf, p...); return len(p), nil }

func (c *memCopy) Finish(sha string, size int64) {
	c.sha = sha
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	c.t.finished[c.key] = c
}

func (c *memCopy) Abort() {}

// Options.Tap reaches every fetcher: each paper's download is copied to it, named by batch and
// paper, and finished with the paper's digest once it succeeded.
func TestTapGetsEveryDownload(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(pdf(r.URL.Path))
	}))
	defer origin.Close()
	tap := &memTap{finished: map[string]*memCopy{}}
	o := testOptions(t.TempDir(), nil)
	o.Tap = tap
	sys := startWith(t, o)
	defer sys.Close()
	client := pb.NewCoordinatorServiceClient(sys.Conn())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var papers []*pb.PaperSpec
	for i := range 6 {
		papers = append(papers, &pb.PaperSpec{PaperId: fmt.Sprintf("p%d", i), Urls: []string{fmt.Sprintf("%s/p%d.pdf", origin.URL, i)}})
	}
	if _, err := client.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "b1", Papers: papers}); err != nil {
		t.Fatal(err)
	}
	if b := watchDone(t, sys, "b1"); b.GetCounts().GetSucceeded() != 6 {
		t.Fatalf("batch %v", b)
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	for i := range 6 {
		body := pdf(fmt.Sprintf("/p%d.pdf", i))
		sum := sha256.Sum256(body)
		c := tap.finished[fmt.Sprintf("b1/p%d", i)]
		if c == nil || string(c.buf) != string(body) || c.sha != hex.EncodeToString(sum[:]) {
			t.Fatalf("paper p%d: copy %+v, want the body finished with its digest", i, c)
		}
	}
}
