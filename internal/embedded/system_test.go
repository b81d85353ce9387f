package embedded_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/paperfetch/paperfetch/coordinator"
	"github.com/paperfetch/paperfetch/fetcher"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/embedded"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func pdf(name string) []byte { return []byte("%PDF-1.4\n" + name + "\n%%EOF\n") }

func start(t *testing.T, dir string, lis net.Listener) *embedded.System {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sys, err := embedded.Start(ctx, embedded.Config{
		Dir: dir, Fetchers: 2, Concurrency: 4, Listener: lis,
		Coordinator: coordinator.Config{PerHostDelay: -1, PerHostConcurrency: 8, NoSync: true},
		Fetcher:     fetcher.Config{AllowPrivateNetworks: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	return sys
}

func watchDone(t *testing.T, c pb.CoordinatorServiceClient, id string) *pb.Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stream, err := c.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: id})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if s := resp.GetBatch().GetState(); s == pb.BatchState_BATCH_STATE_COMPLETED || s == pb.BatchState_BATCH_STATE_CANCELLED {
			return resp.GetBatch()
		}
	}
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
	b := watchDone(t, client, "b1")
	if b.GetCounts().GetSucceeded() != 10 {
		t.Fatalf("batch %v", b)
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
	if b := watchDone(t, client, "b2"); b.GetCounts().GetCached() != 10 {
		t.Fatalf("second batch not from the cache: %v", b)
	}
	if sys.Addr() != lis.Addr().String() {
		t.Fatalf("Addr %s, want %s", sys.Addr(), lis.Addr())
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := embedded.Start(context.Background(), embedded.Config{}); err == nil {
		t.Fatal("Start without a folder succeeded")
	}
	dir := t.TempDir()
	sys := start(t, dir, nil)
	defer sys.Close()
	// A second system on the same folder cannot lock the store.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := embedded.Start(ctx, embedded.Config{Dir: dir, Coordinator: coordinator.Config{LockTimeout: 50 * time.Millisecond}}); err == nil {
		t.Fatal("second Start on the same folder succeeded")
	}
}
