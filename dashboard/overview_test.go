package dashboard_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/paperfetch/paperfetch/dashboard"
	"github.com/paperfetch/paperfetch/embedded"
	"github.com/paperfetch/paperfetch/internal/auth"
	"github.com/paperfetch/paperfetch/internal/clock"
)

const otherToken = "another-token"

// countingConn counts the unary calls made through it, per method.
type countingConn struct {
	grpc.ClientConnInterface
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	c.mu.Lock()
	c.calls[method]++
	c.mu.Unlock()
	return c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
}

func (c *countingConn) count(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[method]
}

// TestOverviewShared checks that the overview pages open at once share one reader of the
// coordinator: with 20 pages open, each overview interval costs one ListBatches (not one per
// page), and every page still gets every change. A page with another token has its own reader;
// a page with a wrong token is refused before it joins. When the coordinator goes away, every
// page gets an "error" event.
func TestOverviewShared(t *testing.T) {
	const pages, rounds = 20, 4
	o := newOrigin(t)
	s := startStack(t, func(o *embedded.Options) { o.ClientTokens = auth.NewTokenSet(testToken, otherToken) })
	conn := &countingConn{ClientConnInterface: s.sys.Conn(), calls: map[string]int{}}
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := dashboard.New(ctx, dashboard.Config{Conn: conn, Clock: fake, OverviewInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	view := &stack{url: srv.URL, sys: s.sys}

	streamCtx, stopStreams := context.WithCancel(ctx)
	var streams []<-chan sseEvent
	for range pages {
		ev := view.follow(t, streamCtx, "/ui/events")
		if first := <-ev; first.name != "overview" {
			t.Fatalf("first event: %s %s", first.name, first.data)
		}
		streams = append(streams, ev)
	}
	other := &stack{url: srv.URL, sys: s.sys}
	otherEvents := other.followWith(t, streamCtx, "/ui/events", otherToken)
	<-otherEvents
	streams = append(streams, otherEvents)
	if r := view.do(t, "GET", "/ui/events", "wrong", ""); r.status != 401 {
		t.Fatalf("a page with a wrong token: %d %s", r.status, r.body)
	}
	before := conn.count("/paperfetch.v1.CoordinatorService/ListBatches")
	for i := range rounds {
		id := fmt.Sprintf("round-%d", i)
		view.call(t, "POST", "/v1/batches", `{"batchId":"`+id+`","papers":[{"paperId":"p","urls":["`+o.URL+`/ok/`+id+`.pdf"]}]}`, nil)
		if err := fake.WaitForWaiters(ctx, 1); err != nil {
			t.Fatal(err)
		}
		fake.Advance(time.Second)
		for n, ev := range streams {
			for e := range ev {
				if e.name == "overview" && strings.Contains(string(e.data), `"batchId":"`+id+`"`) {
					break
				}
				if e.name != "overview" {
					t.Fatalf("page %d: %s %s", n, e.name, e.data)
				}
			}
		}
	}
	reads := conn.count("/paperfetch.v1.CoordinatorService/ListBatches") - before
	t.Logf("%d pages, %d overview intervals: %d ListBatches calls", pages, rounds, reads)
	if reads != 2*rounds {
		t.Errorf("%d pages with two tokens cost %d ListBatches calls in %d intervals, want two per interval", pages+1, reads, rounds)
	}
	defer stopStreams()
	if err := s.sys.Close(); err != nil {
		t.Fatal(err)
	}
	fake.Advance(time.Second)
	for n, ev := range streams {
		e := <-ev
		if e.name != "error" {
			t.Fatalf("page %d after the coordinator stopped: %s %s", n, e.name, e.data)
		}
		for range ev { // the stream ends after the error
		}
	}
}
