// Package e2e holds the end-to-end test of the service pair: a real coordinator and two real
// fetchers talking gRPC over loopback, downloading from an httptest origin.
package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/goleak"
	"gocloud.dev/blob"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/paperfetch/paperfetch/coordinator"
	"github.com/paperfetch/paperfetch/fetcher"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/grpcserver"
	"github.com/paperfetch/paperfetch/internal/validate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The HTTP client's idle connections to the origin are closed by httptest.Close, but
		// their reader goroutines may still be exiting.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// origin serves n distinct deterministic PDFs at /paper/<i>.pdf and remembers their digests.
type origin struct {
	srv    *httptest.Server
	bodies map[string][]byte
	sums   map[string]string
	hits   atomic.Int64
}

func newOrigin(t *testing.T, n int) *origin {
	t.Helper()
	o := &origin{bodies: map[string][]byte{}, sums: map[string]string{}}
	for i := range n {
		rng := rand.New(rand.NewPCG(uint64(i), 42))
		body := make([]byte, 2048+rng.IntN(64<<10))
		for j := range body {
			body[j] = byte(rng.Uint32())
		}
		copy(body, fmt.Sprintf("%%PDF-1.7\n%% paper %d\n", i))
		path := fmt.Sprintf("/paper/%d.pdf", i)
		o.bodies[path] = body
		sum := sha256.Sum256(body)
		o.sums[path] = hex.EncodeToString(sum[:])
	}
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		body, ok := o.bodies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/pdf")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = w.Write(body)
	}))
	t.Cleanup(o.srv.Close)
	return o
}

// serve runs a grpcserver on 127.0.0.1:0 until the test ends and returns its address.
func serve(t *testing.T, ctx context.Context, wg *sync.WaitGroup, logger *slog.Logger, register func(grpc.ServiceRegistrar)) string {
	t.Helper()
	srv := grpcserver.New(grpcserver.Config{Logger: logger, HardStopTimeout: 5 * time.Second, Validate: validate.Request})
	register(srv.GRPC)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx, lis); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	return lis.Addr().String()
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestCoordinatorAndTwoFetchersDownloadABatch(t *testing.T) {
	const papers = 200
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	org := newOrigin(t, papers)
	dir := t.TempDir()
	blobURL := "file://" + filepath.Join(dir, "blobs")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	// Metrics are scraped over HTTP, as Prometheus would.
	reg := prometheus.NewRegistry()
	metricsSrv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer metricsSrv.Close()

	bucket := openBucket(t, ctx, blobURL)
	ccfg := coordinator.DefaultConfig()
	ccfg.Registerer = reg
	ccfg.DataDir = filepath.Join(dir, "data")
	ccfg.Bucket = bucket
	ccfg.PerHostDelay = 0 // no politeness delay against the test origin
	ccfg.PerHostConcurrency = 16
	ccfg.Logger = logger.With("component", "coordinator")
	coord, err := coordinator.Open(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := coord.Run(ctx); err != nil {
			t.Errorf("coordinator run: %v", err)
		}
		if err := coord.Close(); err != nil {
			t.Errorf("coordinator close: %v", err)
		}
	}()
	coordAddr := serve(t, ctx, &wg, logger, coord.Register)
	coordConn := dial(t, coordAddr)

	var fetcherAddrs []string
	for i := range 2 {
		fcfg := fetcher.DefaultConfig()
		fcfg.ID = fmt.Sprintf("fetcher-%d", i)
		fcfg.Slots = 4
		fcfg.Bucket = openBucket(t, ctx, blobURL)
		fcfg.BlobURL = blobURL
		fcfg.AllowPrivateNetworks = true
		fcfg.Registerer = prometheus.WrapRegistererWith(prometheus.Labels{"fetcher": fmt.Sprint(i)}, reg)
		fcfg.Logger = logger.With("component", "fetcher", "fetcher", i)
		f, err := fetcher.New(fcfg)
		if err != nil {
			t.Fatal(err)
		}
		fetcherAddrs = append(fetcherAddrs, serve(t, ctx, &wg, logger, f.Register))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.Run(ctx, coordConn); err != nil {
				t.Errorf("fetcher %d run: %v", i, err)
			}
		}()
	}

	// Both binaries serve health and reflection.
	for _, addr := range append([]string{coordAddr}, fetcherAddrs...) {
		checkHealthAndReflection(t, ctx, dial(t, addr))
	}

	if got := scrape(t, metricsSrv.URL, `paperfetch_coordinator_papers{state="succeeded"}`); got != 0 {
		t.Errorf("before the batch: succeeded papers metric = %v, want 0", got)
	}

	client := pb.NewCoordinatorServiceClient(coordConn)
	req := &pb.SubmitBatchRequest{BatchId: "e2e-batch"}
	for i := range papers {
		req.Papers = append(req.Papers, &pb.PaperSpec{
			PaperId: fmt.Sprintf("paper-%03d", i),
			Urls:    []string{org.srv.URL + fmt.Sprintf("/paper/%d.pdf", i)},
		})
	}
	callCtx, callCancel := context.WithTimeout(ctx, 30*time.Second)
	defer callCancel()
	resp, err := client.SubmitBatch(callCtx, req)
	if err != nil {
		t.Fatalf("SubmitBatch: %v", err)
	}
	if resp.GetBatchId() != "e2e-batch" || !resp.GetCreated() {
		t.Fatalf("SubmitBatch = %v, want the new batch e2e-batch", resp)
	}

	watchCtx, watchCancel := context.WithTimeout(ctx, 2*time.Minute)
	defer watchCancel()
	stream, err := client.WatchBatch(watchCtx, &pb.WatchBatchRequest{BatchId: "e2e-batch"})
	if err != nil {
		t.Fatalf("WatchBatch: %v", err)
	}
	var last *pb.Batch
	first := true
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("WatchBatch recv: %v", err)
		}
		if first && !msg.GetSnapshot() {
			t.Errorf("first WatchBatch message is not a snapshot")
		}
		first = false
		last = msg.GetBatch()
		if s := last.GetState(); s == pb.BatchState_BATCH_STATE_COMPLETED || s == pb.BatchState_BATCH_STATE_CANCELLED {
			break
		}
	}
	if last.GetState() != pb.BatchState_BATCH_STATE_COMPLETED {
		t.Fatalf("batch ended in %v, want COMPLETED", last.GetState())
	}
	if c := last.GetCounts(); c.GetSucceeded() != papers || c.GetFailed() != 0 {
		t.Fatalf("counts = %v, want %d succeeded", c, papers)
	}

	// Every paper's record and stored bytes match the origin.
	for i := range papers {
		path := fmt.Sprintf("/paper/%d.pdf", i)
		got, err := client.GetPaper(callCtx, &pb.GetPaperRequest{BatchId: "e2e-batch", PaperId: fmt.Sprintf("paper-%03d", i)})
		if err != nil {
			t.Fatalf("GetPaper %d: %v", i, err)
		}
		p := got.GetPaper()
		if p.GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED || p.GetSha256() != org.sums[path] || p.GetSize() != int64(len(org.bodies[path])) {
			t.Fatalf("paper %d = state %v sha %s size %d; want SUCCEEDED %s %d", i, p.GetState(), p.GetSha256(), p.GetSize(), org.sums[path], len(org.bodies[path]))
		}
		stored, err := bucket.ReadAll(callCtx, p.GetBlobKey())
		if err != nil {
			t.Fatalf("read blob %s: %v", p.GetBlobKey(), err)
		}
		if sum := sha256.Sum256(stored); hex.EncodeToString(sum[:]) != org.sums[path] {
			t.Fatalf("stored blob of paper %d has the wrong sha256", i)
		}
	}
	if hits := org.hits.Load(); hits != papers {
		t.Errorf("origin served %d requests for %d papers, want exactly one each", hits, papers)
	}

	// The key series moved as the batch ran.
	if got := scrape(t, metricsSrv.URL, `paperfetch_coordinator_papers{state="succeeded"}`); got != papers {
		t.Errorf("succeeded papers metric = %v, want %d", got, papers)
	}
	if got := scrape(t, metricsSrv.URL, `paperfetch_coordinator_connected_fetchers`); got != 2 {
		t.Errorf("connected fetchers metric = %v, want 2", got)
	}
	var wantBytes int64
	for _, b := range org.bodies {
		wantBytes += int64(len(b))
	}
	if got := scrape(t, metricsSrv.URL, `paperfetch_coordinator_downloaded_bytes_total`); got != float64(wantBytes) {
		t.Errorf("downloaded bytes metric = %v, want %d", got, wantBytes)
	}
	fetched := scrape(t, metricsSrv.URL, `paperfetch_fetcher_downloaded_bytes_total{fetcher="0"}`) +
		scrape(t, metricsSrv.URL, `paperfetch_fetcher_downloaded_bytes_total{fetcher="1"}`)
	if fetched != float64(wantBytes) {
		t.Errorf("fetchers' downloaded bytes = %v, want %d", fetched, wantBytes)
	}

	// ReadPaper streams the stored file back.
	rs, err := client.ReadPaper(callCtx, &pb.ReadPaperRequest{BatchId: "e2e-batch", PaperId: "paper-007"})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for {
		chunk, err := rs.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("ReadPaper: %v", err)
		}
		h.Write(chunk.GetData())
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != org.sums["/paper/7.pdf"] {
		t.Errorf("ReadPaper returned bytes with sha256 %s, want %s", got, org.sums["/paper/7.pdf"])
	}
}

// scrape fetches url (a Prometheus text exposition) and returns the value of the series named
// exactly by series (name plus labels as exposed), or 0 when it is absent.
func scrape(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || name != series {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("scrape: series %s has value %q", series, value)
		}
		return v
	}
	return 0
}

func openBucket(t *testing.T, ctx context.Context, url string) *blob.Bucket {
	t.Helper()
	b, err := blobstore.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func checkHealthAndReflection(t *testing.T, ctx context.Context, conn *grpc.ClientConn) {
	t.Helper()
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	hr, err := healthpb.NewHealthClient(conn).Check(callCtx, &healthpb.HealthCheckRequest{})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v; want SERVING", hr, err)
	}
	rc, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(callCtx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := rc.Recv()
	if err != nil {
		t.Fatalf("reflection: %v", err)
	}
	if len(r.GetListServicesResponse().GetService()) < 3 {
		t.Errorf("reflection lists %v, want the service, health and reflection", r.GetListServicesResponse().GetService())
	}
	_ = rc.CloseSend()
}
