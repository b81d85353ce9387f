package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/syncbuf"
)

// finalClient records the states asked for by each ListPapers call of a `get` run, and drops
// from its watch stream the paper updates drop selects (nil: none).
type finalClient struct {
	pb.CoordinatorServiceClient
	drop func(*pb.PaperUpdate) bool

	mu    sync.Mutex
	lists [][]pb.PaperState
}

// ListPapers records the call's states.
func (c *finalClient) ListPapers(ctx context.Context, in *pb.ListPapersRequest, opts ...grpc.CallOption) (*pb.ListPapersResponse, error) {
	c.mu.Lock()
	c.lists = append(c.lists, slices.Clone(in.GetStates()))
	c.mu.Unlock()
	return c.CoordinatorServiceClient.ListPapers(ctx, in, opts...)
}

// WatchBatch returns the stream without the dropped updates.
func (c *finalClient) WatchBatch(ctx context.Context, in *pb.WatchBatchRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[pb.WatchBatchResponse], error) {
	s, err := c.CoordinatorServiceClient.WatchBatch(ctx, in, opts...)
	if err != nil || c.drop == nil {
		return s, err
	}
	return &droppingStream{ServerStreamingClient: s, drop: c.drop}, nil
}

// listedSucceeded reports whether a ListPapers call of the run could return succeeded papers.
func (c *finalClient) listedSucceeded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, states := range c.lists {
		if len(states) == 0 || slices.Contains(states, pb.PaperState_PAPER_STATE_SUCCEEDED) {
			return true
		}
	}
	return false
}

// droppingStream is a watch stream without the updates drop selects.
type droppingStream struct {
	grpc.ServerStreamingClient[pb.WatchBatchResponse]
	drop func(*pb.PaperUpdate) bool
}

// Recv returns the next message without the dropped updates.
func (s *droppingStream) Recv() (*pb.WatchBatchResponse, error) {
	m, err := s.ServerStreamingClient.Recv()
	if m != nil {
		m.PaperUpdates = slices.DeleteFunc(m.PaperUpdates, s.drop)
	}
	return m, err
}

// finalRun is one `get --json` run of the test list with a finalClient.
type finalRun struct {
	client *finalClient
	sum    summary
	err    error
	stderr string
}

// runFinal runs `get --json` of list into out (with extra flags), its watch stream without the
// updates drop selects.
func runFinal(t *testing.T, out, list string, drop func(*pb.PaperUpdate) bool, extra ...string) finalRun {
	t.Helper()
	var stdout, stderr syncbuf.Buffer
	fc := &finalClient{drop: drop}
	a := &app{env: Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, LookupEnv: func(string) (string, bool) { return "", false }},
		wrapClient: func(c pb.CoordinatorServiceClient) pb.CoordinatorServiceClient {
			fc.CoordinatorServiceClient = c
			return fc
		}}
	r := finalRun{client: fc}
	r.err = a.get(context.Background(), append(getArgs(out, append([]string{"--json"}, extra...)...), list))
	r.stderr = stderr.String()
	sc := bufio.NewScanner(strings.NewReader(stdout.String()))
	sc.Buffer(nil, 1<<20)
	found := false
	for sc.Scan() {
		var line struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Type == "summary" {
			if err := json.Unmarshal(sc.Bytes(), &r.sum); err != nil {
				t.Fatal(err)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("no summary line (get: %v)\n%s\n%s", r.err, stdout.String(), r.stderr)
	}
	return r
}

// exitCode is the exit code of get's error.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	}
	return -1
}

// checkFiles checks that out holds exactly the PDFs of papers nums (paper "N-…" is
// testPDF(N)), and the state folder (and failed.txt when failed).
func checkFiles(t *testing.T, out string, nums []string, failed bool) {
	t.Helper()
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		switch name := e.Name(); {
		case name == ".paperfetch" || failed && name == failedListName:
		case strings.HasSuffix(name, ".pdf"):
			num, _, _ := strings.Cut(name, "-")
			data, err := os.ReadFile(filepath.Join(out, name))
			if err != nil || !bytes.Equal(data, testPDF(num)) {
				t.Errorf("%s: content differs (%v)", name, err)
			}
			got = append(got, num)
		default:
			t.Errorf("unexpected entry %s in the output folder", name)
		}
	}
	slices.Sort(got)
	want := slices.Clone(nums)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("output folder holds the PDFs of papers %q, want %q", got, want)
	}
}

// failedLines returns the entries (not the comments) of OUT/failed.txt.
func failedLines(t *testing.T, out string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, failedListName))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines
}

// A run without --report whose placers placed every succeeded paper does not list them again
// at the end: its final pass lists only the papers that did not succeed, and its summary and
// failed.txt are those of a run whose final pass lists every paper (with --report), cache hits
// of a rerun included.
func TestGetFinalPassCountsPlacedPapers(t *testing.T) {
	const n = 8
	srv := pdfOrigin(t, func(id string, _ *http.Request) bool { return id != "2" && id != "5" })
	list := writeList(t, srv, n)
	dir := t.TempDir()
	shrunk := runFinal(t, filepath.Join(dir, "a"), list, nil)
	full := runFinal(t, filepath.Join(dir, "b"), list, nil, "--report", filepath.Join(dir, "report.json"))
	for _, r := range []finalRun{shrunk, full} {
		if exitCode(r.err) != ExitFailed {
			t.Fatalf("get: %v, want exit %d (2 papers failed)\n%s", r.err, ExitFailed, r.stderr)
		}
	}
	if shrunk.client.listedSucceeded() {
		t.Errorf("the final pass without --report listed the succeeded papers again: %v", shrunk.client.lists)
	}
	if !full.client.listedSucceeded() {
		t.Errorf("the final pass with --report did not list every paper: %v", full.client.lists)
	}
	var bytesStored int64
	for _, num := range []string{"0", "1", "3", "4", "6", "7"} {
		bytesStored += int64(len(testPDF(num)))
	}
	want := summary{BatchID: full.sum.BatchID, State: "completed", Total: n, Succeeded: 6, Failed: 2,
		FailedByReason: full.sum.FailedByReason, BySource: map[string]int64{"url": 6}, BytesStored: bytesStored}
	comparable := func(s summary) summary {
		s.ElapsedSeconds, s.BytesPerSecond, s.PapersPerSecond, s.BytesDownloaded = 0, 0, 0, 0
		s.Out, s.Report, s.FailedList = "", "", ""
		return s
	}
	if got := comparable(full.sum); len(got.FailedByReason) == 0 || !jsonEqual(got, want) {
		t.Errorf("summary with --report %+v, want %+v", got, want)
	}
	if got := comparable(shrunk.sum); !jsonEqual(got, want) {
		t.Errorf("summary without --report %+v, want %+v (as with --report)", got, want)
	}
	if a, b := failedLines(t, filepath.Join(dir, "a")), failedLines(t, filepath.Join(dir, "b")); len(a) != 2 || !slices.Equal(a, b) {
		t.Errorf("failed.txt without --report %q, with %q", a, b)
	}
	checkFiles(t, filepath.Join(dir, "a"), []string{"0", "1", "3", "4", "6", "7"}, true)

	// The rerun: the succeeded papers are cache hits, the failed ones fail again.
	again := runFinal(t, filepath.Join(dir, "a"), list, nil)
	if exitCode(again.err) != ExitFailed || again.client.listedSucceeded() {
		t.Fatalf("rerun: %v, listings %v\n%s", again.err, again.client.lists, again.stderr)
	}
	want.BatchID, want.Cached = again.sum.BatchID, 6
	if got := comparable(again.sum); !jsonEqual(got, want) {
		t.Errorf("rerun summary %+v, want %+v", got, want)
	}
	checkFiles(t, filepath.Join(dir, "a"), []string{"0", "1", "3", "4", "6", "7"}, true)
}

// A paper whose SUCCEEDED update the watch missed (here dropped from the stream) is not among
// the placed ones: the final pass lists every paper and places it.
func TestGetFinalPassPlacesWhatTheWatchMissed(t *testing.T) {
	const n = 6
	srv := pdfOrigin(t, nil)
	out := filepath.Join(t.TempDir(), "out")
	r := runFinal(t, out, writeList(t, srv, n), func(u *pb.PaperUpdate) bool {
		return strings.HasPrefix(u.GetPaperId(), "3-") && u.GetState() == pb.PaperState_PAPER_STATE_SUCCEEDED
	})
	if r.err != nil {
		t.Fatalf("get: %v\n%s", r.err, r.stderr)
	}
	if !r.client.listedSucceeded() {
		t.Errorf("the final pass did not list the succeeded papers: %v", r.client.lists)
	}
	if r.sum.Succeeded != n || r.sum.Total != n || r.sum.PlaceErrors != 0 {
		t.Errorf("summary %+v", r.sum)
	}
	checkFiles(t, out, []string{"0", "1", "2", "3", "4", "5"}, false)
}

// jsonEqual compares two summaries as their JSON.
func jsonEqual(a, b summary) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// placedEverything gives the placers' tally only when it accounts for every succeeded paper,
// each in a file of its own still in OUT: a file removed during the run, two papers placed
// into one file name, a paper placed twice, a count or byte total that differs from the
// batch's, an unfinished batch or an update without a route each send the final pass through
// every paper.
func TestPlacedEverythingGuards(t *testing.T) {
	ctx := context.Background()
	sha := func(c string) string { return strings.Repeat(c, 64) }
	// run places updates us (paper id, file name, SHA-256 letter) into a fresh OUT and returns
	// the run and its OUT.
	type upd struct{ id, name, sha, src string }
	run := func(us []upd) (*getRun, string) {
		out := t.TempDir()
		p := newPlacer(ctx, 1, 16, func(_ context.Context, u *pb.PaperUpdate) (string, error) {
			name := ""
			for _, x := range us {
				if x.id == u.GetPaperId() {
					name = x.name
				}
			}
			path := filepath.Join(out, name)
			return path, os.WriteFile(path, []byte("%PDF"), 0o644)
		}, func(id string, err error) { t.Errorf("%s: %v", id, err) })
		var batch []*pb.PaperUpdate
		for _, x := range us {
			batch = append(batch, &pb.PaperUpdate{PaperId: x.id, Sha256: sha(x.sha), Size: 4, Source: x.src, State: pb.PaperState_PAPER_STATE_SUCCEEDED})
		}
		for _, u := range batch { // one update each, so that a paper reported again is queued again
			p.add(ctx, []*pb.PaperUpdate{u})
		}
		p.close()
		return &getRun{o: getOptions{out: out}, placer: p}, out
	}
	done := func(succeeded int64) *pb.Batch {
		return &pb.Batch{State: pb.BatchState_BATCH_STATE_COMPLETED, TotalPapers: succeeded + 1,
			Counts: &pb.PaperCounts{Succeeded: succeeded, Failed: 1}, BytesStored: 4 * succeeded}
	}
	three := []upd{{"a", "a.pdf", "a", "url"}, {"b", "b.pdf", "b", "url"}, {"c", "c.pdf", "c", "arxiv"}}

	r, _ := run(three)
	tally := r.placedEverything(done(3))
	if tally == nil || tally.papers != 3 || tally.bytes != 12 || tally.bySource["url"] != 2 || tally.bySource["arxiv"] != 1 {
		t.Fatalf("every paper placed: tally %+v", tally)
	}
	if b := done(3); r.placedEverything(&pb.Batch{State: pb.BatchState_BATCH_STATE_RUNNING, Counts: b.Counts, BytesStored: b.BytesStored}) != nil {
		t.Error("a batch still running: tally used")
	}
	if r.placedEverything(done(4)) != nil {
		t.Error("a succeeded paper not placed: tally used")
	}
	if b := done(3); r.placedEverything(&pb.Batch{State: b.State, Counts: b.Counts, BytesStored: 13}) != nil {
		t.Error("bytes differ from the batch's: tally used")
	}

	r, out := run(three)
	if err := os.Remove(filepath.Join(out, "b.pdf")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "unrelated.pdf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r.placedEverything(done(3)) != nil {
		t.Error("a placed file removed during the run: tally used")
	}

	r, _ = run([]upd{{"a", "a.pdf", "a", "url"}, {"b", "a.pdf", "b", "url"}, {"c", "c.pdf", "c", "url"}})
	if r.placedEverything(done(3)) != nil {
		t.Error("two papers placed into one file name: tally used")
	}

	// Paper a reported with two contents is placed (and counted) twice; b's update is lost.
	r, _ = run([]upd{{"a", "a.pdf", "a", "url"}, {"a", "a.pdf", "z", "url"}, {"c", "c.pdf", "c", "url"}})
	if r.placedEverything(done(3)) != nil {
		t.Error("a paper placed twice counted as two: tally used")
	}

	r, _ = run([]upd{{"a", "a.pdf", "a", "url"}, {"b", "b.pdf", "b", ""}, {"c", "c.pdf", "c", "url"}})
	if r.placedEverything(done(3)) != nil {
		t.Error("an update without a route: tally used")
	}
}
