package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// storingFetcher is a fake fetcher that writes each paper's content (derived from its id) to
// the blob store, content-addressed, before it reports the completion.
func storingFetcher(t *testing.T, bucket *blob.Bucket) func(*fakeFetcher, *pb.Assign) {
	return func(f *fakeFetcher, a *pb.Assign) {
		content := []byte("%PDF-1.7\n" + a.GetPaperId())
		sum := sha256.Sum256(content)
		sha := hex.EncodeToString(sum[:])
		key := "sha256/" + sha[:2] + "/" + sha + ".pdf"
		if err := bucket.WriteAll(context.Background(), key, content, nil); err != nil {
			t.Errorf("write blob: %v", err)
			return
		}
		f.sendEvent(a, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Completed{Completed: &pb.DownloadCompleted{
			Sha256: sha, Size: int64(len(content)), BlobKey: key, FinalUrl: a.GetUrl(), ContentType: "application/pdf"}}})
		f.credit(1)
	}
}

func blobKeyOf(t *testing.T, h *harness, batchID, paperID string) string {
	t.Helper()
	p, err := h.api.GetPaper(ctxT(t), &pb.GetPaperRequest{BatchId: batchID, PaperId: paperID})
	if err != nil {
		t.Fatal(err)
	}
	return p.GetPaper().GetBlobKey()
}

func exists(dir, key string) bool {
	_, err := os.Stat(filepath.Join(dir, filepath.FromSlash(key)))
	return err == nil
}

func readAll(t *testing.T, h *harness, batchID, paperID string) error {
	t.Helper()
	rs, err := h.api.ReadPaper(ctxT(t), &pb.ReadPaperRequest{BatchId: batchID, PaperId: paperID})
	if err != nil {
		return err
	}
	for {
		if _, err := rs.Recv(); err != nil {
			if err.Error() == "EOF" {
				return nil
			}
			return err
		}
	}
}

// DeleteBatch removes a settled batch, its papers and the blobs no other paper refers to
// (issue 13, item 7).
func TestDeleteBatchReleasesUnsharedBlobs(t *testing.T) {
	blobDir := t.TempDir()
	bucket, err := fileblob.OpenBucket(blobDir, &fileblob.Options{Metadata: fileblob.MetadataDontWrite})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bucket.Close() }()
	dataDir := t.TempDir()
	cfg := func(c *Config) { c.DataDir, c.Bucket, c.NoSync = dataDir, bucket, true }
	h := startHarness(t, cfg)
	ctx := ctxT(t)
	startFetcher(t, h, "f", 4, storingFetcher(t, bucket))
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "a", Papers: specs("p", 5, 1)}); err != nil {
		t.Fatal(err)
	}
	watchToEnd(t, h, "a")
	// Batch b shares p-0 (a cache hit: same paper id) and adds q-0.
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "b", Papers: append(specs("p", 1, 1), specs("q", 1, 1)...)}); err != nil {
		t.Fatal(err)
	}
	if b := watchToEnd(t, h, "b"); b.GetCounts().GetCached() != 1 || b.GetCounts().GetSucceeded() != 2 {
		t.Fatalf("batch b: %v", b)
	}
	shared := blobKeyOf(t, h, "a", "p-0")
	var own []string
	for i := 1; i < 5; i++ {
		own = append(own, blobKeyOf(t, h, "a", fmt.Sprint("p-", i)))
	}

	// A batch that is not settled cannot be deleted.
	if _, err := h.api.CreateBatch(ctx, &pb.CreateBatchRequest{BatchId: "open"}); err != nil {
		t.Fatal(err)
	}
	_, err = h.api.DeleteBatch(ctx, &pb.DeleteBatchRequest{BatchId: "open"})
	if pf, ok := detail[*errdetails.PreconditionFailure](err); status.Code(err) != codes.FailedPrecondition || !ok || pf.GetViolations()[0].GetType() != preconditionBatchState {
		t.Fatalf("delete an open batch: %v", err)
	}
	if _, err := h.api.DeleteBatch(ctx, &pb.DeleteBatchRequest{BatchId: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("delete unknown: %v", err)
	}

	r, err := h.api.DeleteBatch(ctx, &pb.DeleteBatchRequest{BatchId: "a"})
	if err != nil || r.GetPapersDeleted() != 5 {
		t.Fatalf("delete a: %v %v", r, err)
	}
	if _, err := h.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "a"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetBatch of a deleted batch: %v", err)
	}
	if err := readAll(t, h, "a", "p-1"); status.Code(err) != codes.NotFound {
		t.Fatalf("ReadPaper of a deleted batch: %v", err)
	}
	waitFor(t, "unshared blobs removed", func() bool {
		for _, k := range own {
			if exists(blobDir, k) {
				return false
			}
		}
		return true
	})
	if !exists(blobDir, shared) {
		t.Fatal("the blob batch b still uses was removed")
	}
	if err := readAll(t, h, "b", "p-0"); err != nil {
		t.Fatalf("ReadPaper of the shared paper: %v", err)
	}
	lb, err := h.api.ListBatches(ctx, &pb.ListBatchesRequest{})
	if err != nil || len(lb.GetBatches()) != 2 {
		t.Fatalf("ListBatches after delete: %v %v", lb, err)
	}

	// After a restart the deletion holds, and deleting b releases the shared blob.
	h.stop()
	h = startHarness(t, cfg)
	if _, err := h.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "a"}); status.Code(err) != codes.NotFound {
		t.Fatalf("after restart, GetBatch a: %v", err)
	}
	if _, err := h.api.DeleteBatch(ctx, &pb.DeleteBatchRequest{BatchId: "b"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "shared blob removed", func() bool { return !exists(blobDir, shared) })
	// The id is free again, and the deleted papers are no longer cache hits.
	startFetcher(t, h, "f2", 4, storingFetcher(t, bucket))
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "a", Papers: specs("p", 2, 1)}); err != nil {
		t.Fatal(err)
	}
	if b := watchToEnd(t, h, "a"); b.GetCounts().GetSucceeded() != 2 || b.GetCounts().GetCached() != 0 {
		t.Fatalf("resubmitted a: %v", b)
	}
	if err := readAll(t, h, "a", "p-0"); err != nil {
		t.Fatalf("read the re-downloaded paper: %v", err)
	}
}

// A completion of a blob that a deletion released is refused: the collector may delete it
// after the fetcher wrote it.
func TestCompletionOfCollectedBlobIsRefused(t *testing.T) {
	h := newEngHarness(t, nil)
	h.e.collector = true
	l := &lease{assignedAt: t0}
	h.e.noteCollectable([]string{"k"})
	if !h.e.blobCollected("k", t0) {
		t.Fatal("pending blob not refused")
	}
	(&collectedMsg{keys: []string{"k"}}).apply(h.e, t0.Add(time.Second))
	if !h.e.blobCollected("k", l.assignedAt) {
		t.Fatal("blob collected after the lease was assigned not refused")
	}
	if h.e.blobCollected("k", t0.Add(2*time.Second)) {
		t.Fatal("a lease assigned after the collection refused")
	}
}

// completeAll completes every paper assigned to c (the engine believes completions without a
// blob store), applying each round of completions in one loop iteration.
func completeAll(h *engHarness, c *fetcherConn) int {
	n := 0
	for {
		as, _, _ := recv(c)
		if len(as) == 0 {
			return n
		}
		now := h.clk.Now()
		for _, a := range as {
			(&streamMsg{c: c, req: eventReq(a, 1, completedEv(a))}).apply(h.e, now)
			(&streamMsg{c: c, req: creditsReq(1)}).apply(h.e, now)
			n++
		}
		h.step()
	}
}

// Retention deletes finished batches once they are older than --retention (fake clock).
func TestRetentionDeletesOldBatches(t *testing.T) {
	h := newEngHarness(t, func(c *Config) {
		c.Retention = time.Hour
		c.PerHostConcurrency = 100
	})
	c := h.connect("f", 50)
	h.submit("old", oneHost("o", 20))
	completeAll(h, c)
	if h.batch("old").state != pb.BatchState_BATCH_STATE_COMPLETED {
		t.Fatal("old batch not completed")
	}
	h.advance(30 * time.Minute)
	h.submit("young", oneHost("y", 20))
	completeAll(h, c)
	h.advance(31 * time.Minute)
	if _, err := h.e.batchByName("old"); err == nil {
		t.Fatal("a batch finished 61 minutes ago was kept")
	}
	if _, err := h.e.batchByName("young"); err != nil {
		t.Fatal("a batch finished 31 minutes ago was deleted")
	}
	h.restart()
	if _, err := h.e.batchByName("old"); err == nil {
		t.Fatal("deleted batch back after a restart")
	}
	if b := h.batch("young"); b.counts[stateSucceeded] != 20 {
		t.Fatalf("young batch after restart: %v", b.counts)
	}
	// A running batch is never deleted by retention.
	h.submit("running", oneHost("r", 3))
	h.advance(3 * time.Hour)
	if _, err := h.e.batchByName("running"); err != nil {
		t.Fatal("retention deleted a running batch")
	}
}

// A deletion goes slice by slice, is NOT_FOUND from its start, and resumes after a restart.
func TestDeleteInSlicesResumesAfterRestart(t *testing.T) {
	h := newEngHarness(t, nil)
	h.submit("big", oneHost("p", 250))
	h.submit("other", oneHost("o", 3))
	for _, id := range []string{"big", "other"} {
		h.apply(&cancelBatchReq{id: id, reply: make(chan batchResult, 1)})
	}
	h.e.deleteSlice = 100
	r := &deleteReq{id: "big", reply: make(chan deleteResult, 1)}
	h.apply(r)
	if res := <-r.reply; res.err != nil || res.papers != 250 {
		t.Fatalf("delete: %+v", res)
	}
	if _, err := h.e.batchByName("big"); err == nil {
		t.Fatal("a batch being deleted is still found")
	}
	if len(h.e.deletions) != 1 || h.e.deletions[0].deleted != 100 {
		t.Fatalf("after one iteration: %d deletions in progress", len(h.e.deletions))
	}
	// A crash after the first slice: the next process resumes the deletion.
	h.restart()
	if _, err := h.e.batchByName("big"); err == nil || len(h.e.deletions) != 0 {
		t.Fatalf("after restart: %v, %d deletions", err, len(h.e.deletions))
	}
	var papers, batches int
	if err := h.st.db.View(func(tx *bolt.Tx) error {
		papers = tx.Bucket([]byte(bucketPapers)).Stats().KeyN
		batches = tx.Bucket([]byte(bucketBatches)).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if papers != 3 || batches != 1 {
		t.Fatalf("store holds %d papers and %d batches, want 3 and 1", papers, batches)
	}
	if b := h.batch("other"); b.counts[stateCancelled] != 3 {
		t.Fatalf("the other batch: %v", b.counts)
	}
}

// churn submits rounds batches of perBatch papers, completes them and, with del, deletes
// each one; it returns the store file's size after every round.
func churn(t testing.TB, rounds, perBatch int, del bool) []int64 {
	h := newEngHarness(t, func(c *Config) {
		c.PerHostConcurrency = 1000
	})
	c := h.connect("f", 1000)
	path := filepath.Join(h.cfg.DataDir, "coordinator.db")
	sizes := make([]int64, rounds)
	for r := range rounds {
		ps := oneHost(fmt.Sprintf("r%d-", r), perBatch)
		for _, p := range ps {
			p.Metadata = map[string]string{"title": strings.Repeat("t", 200)}
		}
		id := fmt.Sprint("batch-", r)
		h.submit(id, ps)
		if n := completeAll(h, c); n != perBatch {
			t.Fatalf("round %d: %d completed", r, n)
		}
		if del {
			dr := &deleteReq{id: id, reply: make(chan deleteResult, 1)}
			h.apply(dr)
			if res := <-dr.reply; res.err != nil {
				t.Fatal(res.err)
			}
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		sizes[r] = st.Size()
	}
	return sizes
}

// The store file stops growing under a steady stream of batches that are deleted: bbolt
// reuses the freed pages (issue 13, item 7). Without deletion the same stream grows it.
func TestStoreSizeBoundedUnderChurn(t *testing.T) {
	const rounds, perBatch = 24, 1500
	kept := churn(t, rounds, perBatch, false)
	deleted := churn(t, rounds, perBatch, true)
	t.Logf("store file after %d batches of %d papers: %d bytes when they are kept, %d when each is deleted (%d after %d batches)",
		rounds, perBatch, kept[rounds-1], deleted[rounds-1], deleted[rounds/2-1], rounds/2)
	if deleted[rounds-1] > deleted[rounds/2-1] {
		t.Fatalf("store grew from %d bytes (batch %d) to %d (batch %d) although every batch was deleted", deleted[rounds/2-1], rounds/2, deleted[rounds-1], rounds)
	}
	if kept[rounds-1] <= deleted[rounds-1] {
		t.Fatalf("control: the store of kept batches (%d bytes) did not outgrow the churned one (%d)", kept[rounds-1], deleted[rounds-1])
	}
}

// BenchmarkStoreChurn reports the store file's size after 80 batches of 2,000 papers, each
// completed then deleted, against the same stream kept.
func BenchmarkStoreChurn(b *testing.B) {
	for range b.N {
		kept := churn(b, 80, 2000, false)
		deleted := churn(b, 80, 2000, true)
		b.ReportMetric(float64(kept[79])/(1<<20), "kept-MB")
		b.ReportMetric(float64(deleted[39])/(1<<20), "deleted-MB@40")
		b.ReportMetric(float64(deleted[79])/(1<<20), "deleted-MB@80")
	}
}

// Paper and batch indexes are never reused, not even after a restart that follows the
// deletion of the newest batch: a lease id (store, paper index, attempt) names one download
// only, so a fetcher still holding a lease of the deleted paper cannot pass its events off as
// the new paper's (found by the in-memory property test: two leases with one id).
func TestIndexesNotReusedAfterDeletingTheNewestBatch(t *testing.T) {
	for _, name := range []string{"bbolt", "memory"} {
		t.Run(name, func(t *testing.T) {
			h := newEngHarness(t, nil)
			if name == "memory" {
				h = newMemEngHarness(t, nil)
			}
			c := h.connect("f", 1)
			h.submit("old", oneHost("p", 1))
			as, _, _ := recv(c)
			if len(as) != 1 {
				t.Fatalf("%d assigns", len(as))
			}
			old := as[0].GetLeaseId()
			h.send(c, eventReq(as[0], 1, failedEv(pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_NOT_FOUND, 404, 0)))
			r := &deleteReq{id: "old", reply: make(chan deleteResult, 1)}
			h.apply(r)
			if res := <-r.reply; res.err != nil {
				t.Fatal(res.err)
			}
			for len(h.e.deletions) > 0 {
				h.step()
			}
			h.restart()
			c = h.connect("f", 1)
			h.submit("new", oneHost("p", 1))
			as, _, _ = recv(c)
			if len(as) != 1 {
				t.Fatalf("%d assigns after the restart", len(as))
			}
			if as[0].GetLeaseId() == old {
				t.Fatalf("lease id %s issued twice", old)
			}
			if b := h.batch("new"); b.idx == 0 {
				t.Fatal("batch index 0 reused")
			}
		})
	}
}

// A paper parked on another paper's download (single flight), cancelled and then deleted with
// its batch, is no longer parked: a tombstone waits for nothing (found by the in-memory
// property test: "parked paper N in state 0").
func TestDeletedParkedPaperIsNotParked(t *testing.T) {
	h := newMemEngHarness(t, func(c *Config) { c.PerHostConcurrency = 4 })
	c := h.connect("f", 4)
	h.submit("a", []*pb.PaperSpec{{PaperId: "p", Urls: []string{sharedURL}}})
	if as, _, _ := recv(c); len(as) != 1 {
		t.Fatalf("%d assigns", len(as))
	}
	h.submit("b", []*pb.PaperSpec{{PaperId: "q", Urls: []string{sharedURL}}})
	if as, _, _ := recv(c); len(as) != 0 {
		t.Fatalf("q was assigned while p downloads its URL: %v", as)
	}
	h.apply(&cancelBatchReq{id: "b", reply: make(chan batchResult, 1)})
	r := &deleteReq{id: "b", reply: make(chan deleteResult, 1)}
	h.apply(r)
	if res := <-r.reply; res.err != nil {
		t.Fatal(res.err)
	}
	for len(h.e.deletions) > 0 {
		h.step()
	}
	if err := singleFlightConsistent(h.e); err != nil {
		t.Fatal(err)
	}
}
