package fetcher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// pdfBody returns a deterministic fake PDF of n bytes (n >= 16).
func pdfBody(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	copy(b, "%PDF-1.7\n")
	return b
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// testFetcher is a Fetcher on a fresh file:// bucket in a temp folder.
type testFetcher struct {
	*Fetcher
	dir string
}

func newTestFetcher(t *testing.T, mutate func(*Config)) *testFetcher {
	t.Helper()
	return newTestFetcherTB(t, mutate)
}

func newTestFetcherTB(t testing.TB, mutate func(*Config)) *testFetcher {
	t.Helper()
	return newTestFetcherAt(t, t.TempDir(), mutate)
}

// newTestFetcherAt is a Fetcher on the file:// bucket in dir (which other test fetchers may
// share).
func newTestFetcherAt(t testing.TB, dir string, mutate func(*Config)) *testFetcher {
	t.Helper()
	url := "file://" + dir
	bucket, err := blobstore.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ID = "test-fetcher"
	cfg.Bucket, cfg.BlobURL = bucket, url
	cfg.AllowPrivateNetworks = true
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.ResumeMinBytes = 1024
	cfg.Slots = 4
	// Tests on a fake clock would wait for it to advance between groups of commits: the
	// gathering window has tests of its own (blobstore.TestGroupCommitWindow).
	cfg.BlobSyncWindow = 0
	if mutate != nil {
		mutate(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.dl.client.CloseIdleConnections()
		_ = bucket.Close()
	})
	return &testFetcher{Fetcher: f, dir: dir}
}

// keys lists the bucket's keys.
func (tf *testFetcher) keys(t *testing.T) []string {
	t.Helper()
	var out []string
	it := tf.cfg.Bucket.List(nil)
	for {
		obj, err := it.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, obj.Key)
	}
	sort.Strings(out)
	return out
}

// tempFiles lists the files in the bucket's hidden temp/spool folder.
func (tf *testFetcher) tempFiles(t *testing.T) []string {
	t.Helper()
	return dirNames(t, blobstore.TempDir(tf.dir))
}

// dirNames lists the names in the folder dir (none when it does not exist).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// assertStore checks that the bucket holds exactly want (keys) and no temporary file.
func (tf *testFetcher) assertStore(t *testing.T, want ...string) {
	t.Helper()
	got := tf.keys(t)
	sort.Strings(want)
	if len(got) != len(want) {
		t.Fatalf("bucket keys = %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("bucket keys = %v, want %v", got, want)
		}
	}
	if tmp := tf.tempFiles(t); len(tmp) != 0 {
		t.Fatalf("temporary files left: %v", tmp)
	}
	// Nothing else on disk either (no stray partial objects).
	n := 0
	_ = filepath.WalkDir(tf.dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	if n != len(want) {
		t.Fatalf("%d files on disk, want %d", n, len(want))
	}
}

// recorder is a reporter that records events.
type recorder struct {
	mu       sync.Mutex
	startURL string
	resumed  int64
	progs    []int64
	starts   int
	startedC chan struct{}
}

func newRecorder() *recorder { return &recorder{startedC: make(chan struct{}, 16)} }

func (r *recorder) started(url string, off int64) {
	r.mu.Lock()
	r.starts++
	r.startURL, r.resumed = url, off
	r.mu.Unlock()
	r.startedC <- struct{}{}
}

func (r *recorder) progress(b, _ int64, _ float64) {
	r.mu.Lock()
	r.progs = append(r.progs, b)
	r.mu.Unlock()
}

// run downloads url with tf's defaults (store on, resume on) adjusted by mutate.
func (tf *testFetcher) run(t *testing.T, url string, mutate func(*job)) (outcome, *failure, *recorder) {
	t.Helper()
	j := job{url: url, maxSize: tf.cfg.MaxSize, timeout: 30 * time.Second, stall: 10 * time.Second, store: true, resume: true}
	if mutate != nil {
		mutate(&j)
	}
	rec := newRecorder()
	out, fail := tf.dl.download(context.Background(), j, rec)
	return out, fail, rec
}

func wantFailure(t *testing.T, fail *failure, class pb.FailureClass, reason pb.FailureReason) {
	t.Helper()
	if fail == nil {
		t.Fatalf("download succeeded, want %v/%v", class, reason)
	}
	if fail.class != class || fail.reason != reason {
		t.Fatalf("failure %v/%v (%s), want %v/%v", fail.class, fail.reason, fail.msg, class, reason)
	}
}

func readKey(t *testing.T, tf *testFetcher, key string) []byte {
	t.Helper()
	b, err := tf.cfg.Bucket.ReadAll(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var _ = bytes.Equal
