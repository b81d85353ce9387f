package coordinator

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gocloud.dev/blob"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

// TestVerifyBlobLocalMatchesAPI: for a file:// bucket, the stat(2) check (BucketURL set) and
// the blob store API (BucketURL "") give the same verdicts.
func TestVerifyBlobLocalMatchesAPI(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	url := "file://" + filepath.ToSlash(dir)
	bucket, err := blobstore.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bucket.Close() }()
	present := blobstore.ContentKey(strings.Repeat("ab", 32))
	if err := bucket.WriteAll(ctx, present, []byte("%PDF-1.7 body"), nil); err != nil {
		t.Fatal(err)
	}
	folder := blobstore.ContentKey(strings.Repeat("cd", 32))
	if err := os.MkdirAll(filepath.Join(dir, filepath.FromSlash(folder)), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  string
		size int64
		ok   bool
	}{
		{"present", present, 13, true},
		{"truncated", present, 14, false},
		{"missing", blobstore.ContentKey(strings.Repeat("ef", 32)), 13, false},
		{"a folder", folder, 4096, false},
		{"not a content key", "../escape.pdf", 13, false},
	} {
		for _, via := range []string{url, ""} {
			err := verifyBlob(ctx, bucket, via, tc.key, tc.size)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, errNotVerified)) {
				t.Errorf("%s (bucket URL %q): err = %v, want ok=%v", tc.name, via, err, tc.ok)
			}
		}
	}
	// The stat(2) check is the one taken: through a bucket of another (empty) folder, the
	// API would not find the blob that the URL's folder holds.
	other, err := blobstore.Open(ctx, "file://"+filepath.ToSlash(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	if err := verifyBlob(ctx, other, url, present, 13); err != nil {
		t.Errorf("the file the bucket URL names, through another bucket: %v (not checked with stat(2)?)", err)
	}
}

// TestVerifyBlobStatsTheBlobStoresFile: with a prefix parameter on the file:// URL (the blob
// store prefixes every key), the stat(2) check looks at the blob store's file for the key, not
// at a file of the same key at the folder's root; a prefix it cannot map to a folder is
// checked through the API.
func TestVerifyBlobStatsTheBlobStoresFile(t *testing.T) {
	ctx := context.Background()
	key := blobstore.ContentKey(strings.Repeat("ab", 32))
	for _, prefix := range []string{"pf/", "pf-"} {
		dir := t.TempDir()
		url := "file://" + filepath.ToSlash(dir) + "?prefix=" + prefix
		// blob.OpenBucket: blobstore.Open refuses the prefix no folder holds.
		bucket, err := blob.OpenBucket(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = bucket.Close() }()
		if err := bucket.WriteAll(ctx, key, []byte("%PDF-1.7 body"), nil); err != nil {
			t.Fatal(err)
		}
		// A file of the same key outside the prefix, of another size.
		decoy := filepath.Join(dir, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(decoy), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(decoy, []byte("%PDF-1.7 another body"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := verifyBlob(ctx, bucket, url, key, 13); err != nil {
			t.Errorf("prefix %q: the blob the store holds: %v", prefix, err)
		}
		if err := verifyBlob(ctx, bucket, url, key, 21); !errors.Is(err, errNotVerified) {
			t.Errorf("prefix %q: the size of the file outside the prefix: err = %v, want not verified", prefix, err)
		}
	}
}

// TestLocalBlobStoreCompletionsCheckedByTheReceiver: with a local (file://) blob store, a Work
// stream's receiver checks the completions itself (checkCompletions) and the loop applies
// them at once: the verifiers get none. Here no verifier ever gets a job (the loop's hand-off
// channel is nil), yet the stored paper SUCCEEDED and the one whose blob is missing failed (its only
// attempt refused: not in the blob store), as the verifiers would have decided. On the code before, both
// completions waited for a verifier forever.
func TestLocalBlobStoreCompletionsCheckedByTheReceiver(t *testing.T) {
	blobDir := t.TempDir()
	url := "file://" + filepath.ToSlash(blobDir)
	bucket, err := blobstore.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bucket.Close() }()
	h := startHarnessWith(t, func(c *Config) {
		c.Bucket, c.BucketURL, c.MaxAttempts = bucket, url, 1
	}, func(c *Coordinator) { c.loop.verifyCh = nil })
	store := storingFetcher(t, bucket)
	startFetcher(t, h, "f", 2, func(f *fakeFetcher, a *pb.Assign) {
		if a.GetPaperId() == "v-0" {
			store(f, a)
			return
		}
		f.complete(a) // no blob written
		f.credit(1)
	})
	ctx := ctxT(t)
	if _, err := h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{BatchId: "v", Papers: specs("v", 2, 1)}); err != nil {
		t.Fatal(err)
	}
	b := watchToEnd(t, h, "v")
	if b.GetCounts().GetSucceeded() != 1 || b.GetCounts().GetFailed() != 1 {
		t.Fatalf("final counts %v, want 1 succeeded and 1 failed", b.GetCounts())
	}
	missing, err := h.api.GetPaper(ctx, &pb.GetPaperRequest{BatchId: "v", PaperId: "v-1"})
	if err != nil {
		t.Fatal(err)
	}
	if p := missing.GetPaper(); p.GetLastFailureReason() != pb.FailureReason_FAILURE_REASON_ATTEMPTS_EXHAUSTED || !strings.Contains(p.GetLastError(), "not in the coordinator's blob store") {
		t.Fatalf("paper without a blob: %v", p)
	}
}
