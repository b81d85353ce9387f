package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// submitLarge creates batch id of n papers whose URLs all point at the origin's /limited/
// (429, Retry-After one hour): the first attempt pauses the host and the rest wait queued.
func (s *stack) submitLarge(t *testing.T, o *origin, id string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testToken)
	c := pb.NewCoordinatorServiceClient(s.sys.Conn())
	if _, err := c.CreateBatch(ctx, &pb.CreateBatchRequest{BatchId: id}); err != nil {
		t.Fatal(err)
	}
	const chunk = 5000
	var chunks int64
	for first := 0; first < n; first += chunk {
		var papers []*pb.PaperSpec
		for i := first; i < min(n, first+chunk); i++ {
			papers = append(papers, &pb.PaperSpec{PaperId: fmt.Sprintf("p%06d", i), Urls: []string{fmt.Sprintf("%s/limited/%d.pdf", o.URL, i)}})
		}
		if _, err := c.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: id, ChunkIndex: chunks, Papers: papers}); err != nil {
			t.Fatal(err)
		}
		chunks++
	}
	if _, err := c.SealBatch(ctx, &pb.SealBatchRequest{BatchId: id, ChunkCount: chunks}); err != nil {
		t.Fatal(err)
	}
}

// TestLargeBatch checks that the dashboard stays light with a 100,000-paper batch: the page,
// a page of papers (filtered or not), the overview and the batch's event streams are small and
// quick; in a browser (subtest "browser", skipped without Chromium) the pages an operator opens
// are quick; and cancelling the batch (100,000 paper changes at once, which the coordinator
// splits into many WatchBatch messages) reaches a batch page as a few bounded events, each with
// the batch.
func TestLargeBatch(t *testing.T) {
	const papers = 100_000
	o := newOrigin(t)
	s := startStack(t)
	start := time.Now()
	s.submitLarge(t, o, "big", papers)
	t.Logf("submitted %d papers in %v", papers, time.Since(start).Round(time.Millisecond))

	for _, c := range []struct {
		path     string
		maxBytes int
	}{
		{"/", 4 << 10},
		{"/app.js", 64 << 10},
		{"/app.css", 16 << 10},
		{"/vendor/uPlot.iife.min.js", 64 << 10},
		{"/v1/batches/big", 4 << 10},
		{"/v1/batches?pageSize=50", 64 << 10},
		{"/v1/batches/big/papers?pageSize=100", 64 << 10},
		{"/v1/batches/big/papers?pageSize=100&states=PAPER_STATE_QUEUED", 64 << 10},
		{"/v1/batches/big/papers?pageSize=100&states=PAPER_STATE_SUCCEEDED", 1 << 10},
		{"/v1/batches/big/papers?pageSize=100&states=PAPER_STATE_FAILED&reasons=FAILURE_REASON_NOT_FOUND", 1 << 10},
		{"/v1/hosts", 16 << 10},
	} {
		st := time.Now()
		r := s.do(t, "GET", c.path, testToken, "")
		d := time.Since(st)
		if r.status != http.StatusOK || len(r.body) > c.maxBytes {
			t.Errorf("GET %s: %d, %d bytes (at most %d)", c.path, r.status, len(r.body), c.maxBytes)
		}
		t.Logf("GET %s: %d bytes in %v", c.path, len(r.body), d.Round(time.Microsecond))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := time.Now()
	events := s.follow(t, ctx, "/ui/events?batch=big")
	first := <-events
	if first.name != "batch" || len(first.data) > 16<<10 {
		t.Fatalf("first batch event: %s, %d bytes", first.name, len(first.data))
	}
	t.Logf("batch page's first event: %d bytes in %v", len(first.data), time.Since(st).Round(time.Microsecond))
	st = time.Now()
	overview := s.follow(t, ctx, "/ui/events")
	if ov := <-overview; ov.name != "overview" || len(ov.data) > 16<<10 {
		t.Fatalf("first overview event: %s, %d bytes", ov.name, len(ov.data))
	} else {
		t.Logf("overview's first event: %d bytes in %v", len(ov.data), time.Since(st).Round(time.Microsecond))
	}

	// The operator's view in a browser, which ends by cancelling the batch with its button;
	// without a browser, the cancellation is a POST.
	st = time.Now()
	if !t.Run("browser", func(t *testing.T) { browseLargeBatch(t, s, papers) }) {
		t.FailNow()
	}
	if got := s.getBatch(t, "big").GetState(); got != pb.BatchState_BATCH_STATE_CANCELLED {
		s.call(t, "POST", "/v1/batches/big:cancel", "{}", nil)
		t.Logf("cancelled %d papers in %v", papers, time.Since(st).Round(time.Millisecond))
	}
	n, total, last := 0, 0, &pb.WatchBatchResponse{}
	for e := range events {
		if e.name == "end" {
			break
		}
		n++
		total += len(e.data)
		var ev struct {
			Update    json.RawMessage `json:"update"`
			Truncated bool            `json:"truncated"`
		}
		if err := json.Unmarshal(e.data, &ev); err != nil || e.name != "batch" {
			t.Fatalf("event %s %.200s: %v", e.name, e.data, err)
		}
		if err := protojson.Unmarshal(ev.Update, last); err != nil {
			t.Fatal(err)
		}
		if last.GetBatch() == nil || len(last.GetPaperUpdates()) > 500 || (len(last.GetPaperUpdates()) == 500) != ev.Truncated {
			t.Fatalf("event %d: batch %v, %d paper updates, truncated %v", n, last.GetBatch(), len(last.GetPaperUpdates()), ev.Truncated)
		}
	}
	if last.GetBatch().GetState() != pb.BatchState_BATCH_STATE_CANCELLED || last.GetBatch().GetCounts().GetCancelled() < papers-100 {
		t.Fatalf("last event: %v", last.GetBatch())
	}
	if total > 1<<20 {
		t.Errorf("the cancellation reached the page as %d events of %d bytes, want at most 1 MiB", n, total)
	}
	t.Logf("the cancellation reached the page as %d events, %d bytes", n, total)
}

type sseEvent struct {
	name string
	data []byte
}

// follow opens an SSE stream and sends its events on the returned channel until it ends.
func (s *stack) follow(t *testing.T, ctx context.Context, path string) <-chan sseEvent {
	t.Helper()
	return s.followWith(t, ctx, path, testToken)
}

// followWith is follow with another token.
func (s *stack) followWith(t *testing.T, ctx context.Context, path, token string) <-chan sseEvent {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	ch := make(chan sseEvent, 1000)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		var ev sseEvent
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.HasPrefix(l, "event: "):
				ev.name = l[7:]
			case strings.HasPrefix(l, "data: "):
				ev.data = []byte(l[6:])
			case l == "" && ev.name != "":
				ch <- ev
				ev = sseEvent{}
			}
		}
	}()
	return ch
}

// getBatch reads a batch over /v1/.
func (s *stack) getBatch(t *testing.T, id string) *pb.Batch {
	t.Helper()
	var r pb.GetBatchResponse
	s.call(t, "GET", "/v1/batches/"+id, "", &r)
	return r.GetBatch()
}
