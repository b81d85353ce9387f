package coordinator

import (
	"slices"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// TestOrphanLeasesAdoptedOnlyByTheirFetcher: after a restart, leases re-announced by another
// fetcher id are refused (each gets a Cancel, "unknown lease": the lease id is bound to the id
// it was issued to) and stay orphaned; the fetcher they were issued to adopts them and
// completes them, and nothing is downloaded twice (issue 10, attack 3).
func TestOrphanLeasesAdoptedOnlyByTheirFetcher(t *testing.T) {
	dir := t.TempDir()
	cfg := func(c *Config) { c.DataDir, c.PerHostConcurrency = dir, 10 }
	h1 := startHarness(t, cfg)
	ctx := ctxT(t)
	f := startFetcher(t, h1, "f", 3, holdAll)
	if _, err := h1.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "g", Papers: specs("p", 3, 1)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "assigns", func() bool { return f.assignCount() == 3 })
	h1.stop()
	f.kill()

	h2 := startHarness(t, cfg)
	var again []*pb.InFlightLease
	var ids []string
	for _, a := range f.assigns {
		again = append(again, &pb.InFlightLease{LeaseId: a.GetLeaseId(), Attempt: a.GetAttempt()})
		ids = append(ids, a.GetLeaseId())
	}
	rogue := startFetcher(t, h2, "rogue", 3, holdAll, again...)
	waitFor(t, "the rogue's re-announced leases to be cancelled", func() bool {
		rogue.mu.Lock()
		defer rogue.mu.Unlock()
		return len(rogue.cancels) == len(ids)
	})
	rogue.mu.Lock()
	cancelled := slices.Clone(rogue.cancels)
	rogue.mu.Unlock()
	slices.Sort(cancelled)
	slices.Sort(ids)
	if !slices.Equal(cancelled, ids) {
		t.Fatalf("the rogue got cancels %v, want %v", cancelled, ids)
	}
	if g, err := h2.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "g"}); err != nil || g.GetBatch().GetCounts().GetDownloading() != 3 {
		t.Fatalf("after the rogue's hello: %v %v; want the 3 leases still waiting for their fetcher", g, err)
	}

	owner := startFetcher(t, h2, "f", 1, holdAll, again...)
	for _, a := range f.assigns {
		owner.complete(a)
	}
	if b := watchToEnd(t, h2, "g"); b.GetCounts().GetSucceeded() != 3 {
		t.Fatalf("final %v", b)
	}
	if n := owner.assignCount() + rogue.assignCount(); n != 0 {
		t.Fatalf("%d papers assigned again", n)
	}
}
