package faulttest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// TestDefaultFlagsFetchersOnOneMachine starts three fetchers on this machine without --id (the
// defaults an operator gets with docker host networking, systemd instances or a laptop). Each
// process has its own id, so none evicts another (issue 13: with the hostname as the id they
// replaced each other about every second, forever) and the batch finishes.
func TestDefaultFlagsFetchersOnOneMachine(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; skipped with -short")
	}
	ctx, fail := context.WithCancelCause(t.Context())
	defer fail(nil)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_, srv := startOrigin(t)

	c := newCluster(t, t.TempDir(), fail)
	coord := c.startCoordinator()
	for range 3 {
		c.startFetcherWith(4, false)
	}
	conn, err := grpc.NewClient(c.coordAdr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewCoordinatorServiceClient(conn)

	defs := makePapers(srv.URL, 120)
	papers := make([]*pb.PaperSpec, len(defs))
	for i, d := range defs {
		papers[i] = &pb.PaperSpec{PaperId: d.id, Urls: []string{d.url}, ExpectedSha256: d.sha256}
	}
	call(ctx, t, "SubmitBatch", func(ctx context.Context) error {
		_, err := client.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "default-ids", Papers: papers})
		return err
	})
	w := newBatchWatcher(client, "default-ids")
	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); w.run(watchCtx) }()
	defer func() { stopWatch(); <-watchDone }()
	if err := w.waitFor(ctx, "the batch to end", func(b *pb.Batch) bool { return isTerminalBatch(b.GetState()) }); err != nil {
		t.Fatal(err)
	}
	if b := w.snapshot(); b.GetCounts().GetSucceeded() != int64(len(defs)) {
		t.Fatalf("batch ended %v with counts %v", b.GetState(), b.GetCounts())
	}
	if bad := c.stopAll(ctx); len(bad) > 0 {
		t.Errorf("processes that did not stop cleanly: %s", strings.Join(bad, "; "))
	}
	log, err := os.ReadFile(coord.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), "replaced by a new stream"); n > 0 {
		t.Fatalf("fetchers replaced each other %d times", n)
	}
	ids := map[string]bool{}
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, `"msg":"fetcher connected"`) {
			_, rest, _ := strings.Cut(line, `"fetcher":"`)
			id, _, _ := strings.Cut(rest, `"`)
			ids[id] = true
		}
	}
	if len(ids) != 3 {
		t.Fatalf("the coordinator saw fetcher ids %v, want 3 distinct ones", fmt.Sprint(ids))
	}
}
