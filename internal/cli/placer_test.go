package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/syncbuf"
)

// testPDF is the body the test origins serve for paper id.
func testPDF(id string) []byte {
	return fmt.Appendf(nil, "%%PDF-1.7\n%s\n%%%%EOF\n", strings.Repeat("paper "+id+" ", 400))
}

// pdfOrigin serves testPDF(N) at /pdf/N; before serving, it calls gate (when set) with N and the
// request, which may hold the response back.
func pdfOrigin(t *testing.T, gate func(id string, r *http.Request) bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := path.Base(r.URL.Path)
		if gate != nil && !gate(id, r) {
			http.Error(w, "gone", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/pdf")
		_, _ = w.Write(testPDF(id))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// writeList writes the URLs of papers 0..n-1 of srv to a file and returns its path.
func writeList(t *testing.T, srv *httptest.Server, n int) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%s/pdf/%d\n", srv.URL, i)
	}
	p := filepath.Join(t.TempDir(), "list.txt")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// lineCounter counts the JSON paper records of succeeded papers written to it (get --json) and
// closes all when it has seen want of them.
type lineCounter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	seen int
	want int
	all  chan struct{}
}

// Write implements io.Writer.
func (c *lineCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	for {
		line, err := c.buf.ReadBytes('\n')
		if err != nil {
			c.buf.Write(line) // an incomplete line: keep it for the next write
			return len(p), nil
		}
		var rec struct{ Type, State string }
		if json.Unmarshal(line, &rec) == nil && rec.Type == "paper" && rec.State == "succeeded" {
			if c.seen++; c.seen == c.want {
				close(c.all)
			}
		}
	}
}

// getArgs are the flags of the tests' `get` runs: loopback origin, no politeness delay.
func getArgs(out string, extra ...string) []string {
	return append([]string{"--out", out, "--allow-private-networks", "--per-host-delay", "0s",
		"--per-host-concurrency", "4", "--concurrency", "4", "--retries", "0"}, extra...)
}

// Placing files is off the watch stream: while every placement is held back, the downloads
// still complete and the display still shows each of them (the watch goes on), and
// placeWorkers files are placed at once. Once released, every file is in place, verified, and
// no temporary file is left. (Before the placer pool, the first held placement stopped the
// watch: the display never saw the other papers.)
func TestGetPlacesOffTheWatch(t *testing.T) {
	const n = 12
	placing := make(chan struct{}) // closed when the first placement has started
	var placingOnce sync.Once
	release := make(chan struct{})
	// Paper 0 is served at once; the others only once its placement holds, so that they
	// complete while it is held.
	srv := pdfOrigin(t, func(id string, r *http.Request) bool {
		if id == "0" {
			return true
		}
		select {
		case <-placing:
			return true
		case <-r.Context().Done():
			return false
		}
	})
	var inFlight, most atomic.Int32
	full := make(chan struct{}) // closed when placeWorkers placements are in flight
	var fullOnce sync.Once
	stdout := &lineCounter{want: n, all: make(chan struct{})}
	var stderr syncbuf.Buffer
	out := filepath.Join(t.TempDir(), "out")
	a := &app{env: Env{Stdin: strings.NewReader(""), Stdout: stdout, Stderr: &stderr, LookupEnv: func(string) (string, bool) { return "", false }},
		wrapPlace: func(next placeFunc) placeFunc {
			return func(ctx context.Context, u *pb.PaperUpdate) (string, error) {
				k := inFlight.Add(1)
				for m := most.Load(); k > m && !most.CompareAndSwap(m, k); m = most.Load() {
				}
				placingOnce.Do(func() { close(placing) })
				if k == placeWorkers {
					fullOnce.Do(func() { close(full) })
				}
				select {
				case <-release:
				case <-ctx.Done():
				}
				inFlight.Add(-1)
				return next(ctx, u)
			}
		}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	report := filepath.Join(t.TempDir(), "report.json")
	go func() { done <- a.get(ctx, append(getArgs(out, "--json", "--report", report), writeList(t, srv, n))) }()

	bound := time.NewTimer(60 * time.Second) // a failure bound, not a synchronisation
	defer bound.Stop()
	for _, step := range []struct {
		what string
		ch   chan struct{}
	}{{"the display to show all papers succeeded while placing is held", stdout.all}, {"placeWorkers placements at once", full}} {
		select {
		case <-step.ch:
		case err := <-done:
			t.Fatalf("get ended (%v) before %s\n%s", err, step.what, stderr.String())
		case <-bound.C:
			close(release)
			<-done
			t.Fatalf("waited 60 s for %s: placing holds the watch (most placements at once: %d)\n%s", step.what, most.Load(), stderr.String())
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("get: %v\n%s", err, stderr.String())
	}
	if got := most.Load(); got != placeWorkers {
		t.Errorf("at most %d placements at once, want placeWorkers = %d", got, placeWorkers)
	}
	checkPlaced(t, out, readTestReport(t, report), n)
}

// The final pass skips reading again what the placers placed, but not blindly: a placed file
// that is gone by then (here removed right after its placement; or a placed-set hash shared
// by two ids) is placed again, with --report (the pass lists every paper) and without (the
// pass finds a placed file missing from the output folder and lists every paper).
func TestGetFinalPassChecksPlacedFiles(t *testing.T) {
	const n = 6
	srv := pdfOrigin(t, nil)
	for _, withReport := range []bool{true, false} {
		out := filepath.Join(t.TempDir(), "out")
		var stdout, stderr syncbuf.Buffer
		a := &app{env: Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, LookupEnv: func(string) (string, bool) { return "", false }},
			wrapPlace: func(next placeFunc) placeFunc {
				return func(ctx context.Context, u *pb.PaperUpdate) (string, error) {
					path, err := next(ctx, u)
					if err != nil || !withReport && !strings.HasPrefix(u.GetPaperId(), "2-") {
						return path, err
					}
					return path, os.Remove(filepath.Join(out, FileName(u.GetPaperId())+".pdf"))
				}
			}}
		report := filepath.Join(t.TempDir(), "report.json")
		args := getArgs(out, "--quiet")
		if withReport {
			args = append(args, "--report", report)
		}
		if err := a.get(context.Background(), append(args, writeList(t, srv, n))); err != nil {
			t.Fatalf("get (report %v): %v\n%s", withReport, err, stderr.String())
		}
		if withReport {
			checkPlaced(t, out, readTestReport(t, report), n)
		} else {
			checkFiles(t, out, []string{"0", "1", "2", "3", "4", "5"}, false)
		}
	}
}

// checkPlaced checks that out holds exactly the n PDFs of the report, where it says, with their
// content (paper "N-…" is testPDF(N)), and the state folder: no temporary file, nothing else.
func checkPlaced(t *testing.T, out string, rep testReport, n int) {
	t.Helper()
	if len(rep.Papers) != n {
		t.Fatalf("report lists %d papers, want %d", len(rep.Papers), n)
	}
	want := []string{".paperfetch"}
	for _, p := range rep.Papers {
		num, _, _ := strings.Cut(p.ID, "-")
		if p.State != "succeeded" || filepath.Dir(p.Path) != out {
			t.Errorf("paper %s: %s at %q", p.ID, p.State, p.Path)
			continue
		}
		want = append(want, filepath.Base(p.Path))
		if got, err := os.ReadFile(p.Path); err != nil || !bytes.Equal(got, testPDF(num)) {
			t.Errorf("paper %s: content differs or missing (%v)", p.ID, err)
		}
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("output folder holds %q, want %q", names, want)
	}
}

// testReport is the part of the --report file the tests read.
type testReport struct {
	Papers []struct {
		ID, State, Path, Error string
	} `json:"papers"`
}

func readTestReport(t *testing.T, path string) testReport {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r testReport
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("report: %v\n%s", err, data)
	}
	return r
}

// With --link a freshly downloaded paper whose blob file already existed with other bytes (a
// PDF edited through an earlier hard link: the fetcher keeps an existing object unread) is
// not linked: the damaged blob is found, removed and reported, and the run fails. (Before, the
// fast path linked the damaged blob unchecked.)
func TestGetLinkChecksAnExistingBlob(t *testing.T) {
	srv := pdfOrigin(t, nil)
	list := writeList(t, srv, 2)
	out := filepath.Join(t.TempDir(), "out")
	sum := sha256.Sum256(testPDF("0"))
	blob := filepath.Join(out, ".paperfetch", "blobs", filepath.FromSlash(blobstore.ContentKey(hex.EncodeToString(sum[:]))))
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		t.Fatal(err)
	}
	damaged := testPDF("0") // edited in place: same size (the coordinator checks the size)
	copy(damaged[len(damaged)-12:], "edited here!")
	if err := os.WriteFile(blob, damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncbuf.Buffer
	a := &app{env: Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, LookupEnv: func(string) (string, bool) { return "", false }}}
	err := a.get(context.Background(), append(getArgs(out, "--link", "--quiet"), list))
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != ExitFailed {
		t.Fatalf("get: %v, want exit %d\n%s", err, ExitFailed, stderr.String())
	}
	if got, err := filepath.Glob(filepath.Join(out, "0-*.pdf")); err != nil || len(got) != 0 {
		t.Fatalf("paper 0 was placed from the damaged blob: %q (%v)\n%s", got, err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "is damaged") {
		t.Errorf("get does not say the stored copy is damaged:\n%s", stderr.String())
	}
	if _, err := os.Stat(blob); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the damaged blob is still there (%v)", err)
	}
	if got, err := filepath.Glob(filepath.Join(out, "1-*.pdf")); err != nil || len(got) != 1 {
		t.Errorf("paper 1: %q (%v)", got, err)
	} else if data, err := os.ReadFile(got[0]); err != nil || !bytes.Equal(data, testPDF("1")) {
		t.Errorf("paper 1 differs (%v)", err)
	}
}

// The pool's bookkeeping: a placed paper is done (and not queued again), a failure is reported
// and not done, and once ctx is done the queue is drained without placing.
func TestPlacer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var placed, failed []string
	p := newPlacer(ctx, 2, 4, func(_ context.Context, u *pb.PaperUpdate) (string, error) {
		if strings.HasPrefix(u.GetPaperId(), "bad") {
			return "", errors.New("no")
		}
		mu.Lock()
		placed = append(placed, u.GetPaperId())
		mu.Unlock()
		return u.GetPaperId() + ".pdf", nil
	}, func(id string, err error) {
		mu.Lock()
		failed = append(failed, id)
		mu.Unlock()
	})
	sha := strings.Repeat("0f", 32)
	p.add(ctx, []*pb.PaperUpdate{{PaperId: "a", Sha256: sha}, {PaperId: "b", Sha256: sha}})
	p.add(ctx, []*pb.PaperUpdate{{PaperId: "bad1", Sha256: sha}, {PaperId: "c", Sha256: sha}})
	p.add(ctx, nil)
	p.close()
	slices.Sort(placed)
	if !slices.Equal(placed, []string{"a", "b", "c"}) || !slices.Equal(failed, []string{"bad1"}) {
		t.Fatalf("placed %q, failed %q", placed, failed)
	}
	if !p.done("a", sha) || p.done("bad1", sha) || p.done("x", sha) || p.done("a", "") {
		t.Fatalf("done: a %v, bad1 %v, x %v", p.done("a", sha), p.done("bad1", sha), p.done("x", sha))
	}

	// A stopped run: the worker holds its paper until ctx is done; the queued ones are dropped
	// and add no longer waits for room.
	ctx2, cancel2 := context.WithCancel(context.Background())
	started := make(chan struct{}, 1)
	var calls atomic.Int32
	p2 := newPlacer(ctx2, 1, 1, func(ctx context.Context, u *pb.PaperUpdate) (string, error) {
		calls.Add(1)
		started <- struct{}{}
		<-ctx.Done()
		return "", ctx.Err()
	}, func(string, error) { t.Error("a failure reported after the run stopped") })
	p2.add(ctx2, []*pb.PaperUpdate{{PaperId: "held", Sha256: sha}})
	<-started
	p2.add(ctx2, []*pb.PaperUpdate{{PaperId: "queued", Sha256: sha}})
	cancel2()
	p2.add(ctx2, []*pb.PaperUpdate{{PaperId: "after"}}) // the queue is full: returns since ctx is done
	p2.close()
	if calls.Load() != 1 || p2.done("held", sha) || p2.done("queued", sha) {
		t.Fatalf("after the stop: %d placements, held done %v, queued done %v", calls.Load(), p2.done("held", sha), p2.done("queued", sha))
	}
}

// Two ids whose 64-bit keys collide are two papers: placing one never makes the other look
// placed (it is queued and placed, and the final pass checks its file).
func TestPlacerKeyCollision(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var placed []string
	p := newPlacer(ctx, 1, 4, func(_ context.Context, u *pb.PaperUpdate) (string, error) {
		mu.Lock()
		placed = append(placed, u.GetPaperId())
		mu.Unlock()
		return u.GetPaperId() + ".pdf", nil
	}, func(id string, err error) { t.Errorf("%s: %v", id, err) })
	p.key = func(string) uint64 { return 7 } // every id collides
	shaA, shaB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	p.add(ctx, []*pb.PaperUpdate{{PaperId: "a", Sha256: shaA}})
	p.close()
	p.jobs = make(chan []*pb.PaperUpdate, 1) // a second pool on the same placed set
	p.wg.Go(func() { p.work(ctx) })
	p.add(ctx, []*pb.PaperUpdate{{PaperId: "b", Sha256: shaB}})
	p.close()
	if !slices.Equal(placed, []string{"a", "b"}) {
		t.Fatalf("placed %q, want a and b: a colliding id was skipped", placed)
	}
	if p.done("c", strings.Repeat("c", 64)) {
		t.Fatal("an unplaced paper whose key collides is reported done")
	}
	if !p.done("b", shaB) || p.done("b", shaA) {
		t.Fatal("done: b is placed with shaB only")
	}
}

// A paper reported again while it waits for a placer or is being placed is placed once (the
// materializer copies a new paper without looking for its file first: a second placement would
// copy it again); reported with other content, it is placed again.
func TestPlacerQueuesAPaperOnce(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	var placed []string
	started, release := make(chan struct{}), make(chan struct{})
	p := newPlacer(ctx, 1, 4, func(_ context.Context, u *pb.PaperUpdate) (string, error) {
		if u.GetPaperId() == "held" {
			close(started)
			<-release
		}
		mu.Lock()
		placed = append(placed, u.GetPaperId()+"/"+u.GetSha256()[:1])
		mu.Unlock()
		return u.GetPaperId() + ".pdf", nil
	}, func(id string, err error) { t.Errorf("%s: %v", id, err) })
	shaA, shaB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	p.add(ctx, []*pb.PaperUpdate{{PaperId: "held", Sha256: shaA}, {PaperId: "q", Sha256: shaA}})
	<-started
	p.add(ctx, []*pb.PaperUpdate{{PaperId: "held", Sha256: shaA}, {PaperId: "q", Sha256: shaA}, {PaperId: "q", Sha256: shaB}})
	close(release)
	p.close()
	slices.Sort(placed)
	if want := []string{"held/a", "q/a", "q/b"}; !slices.Equal(placed, want) {
		t.Fatalf("placed %q, want %q", placed, want)
	}
	if len(p.queued) != 0 {
		t.Fatalf("%d papers still marked queued", len(p.queued))
	}
}
