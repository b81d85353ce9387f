package roguetest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/paperfetch/paperfetch/coordinator"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Attack 7: eight streams flood stale events as fast as they can while a client calls
// GetBatch. The flooders are throttled (their own rate and inbox share, on the fake clock that
// never refills their budget) and have an inbox of their own: every client call succeeds.
func TestFloodingStreamsDoNotStarveClients(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *coordinator.Config) { c.InboxSize = 32 }})
	e.submit("b", 1, "h.example")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		r := openStream(t, e.gw, hello(fmt.Sprintf("flood-%d", i), 1))
		ev := &pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: &pb.DownloadEvent{LeaseId: "no-such-lease", Attempt: 1, Sequence: 1,
			Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 1}}}}}
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if r.stream.Send(ev) != nil {
					return
				}
			}
		})
	}
	defer func() {
		close(stop)
		e.c.CloseStreams() // unblocks senders held by flow control
		wg.Wait()
	}()
	waitFor(t, "the flood", func() bool { return e.counter(foreign, "cause", "foreign") > 500 })
	failed := 0
	for range 300 {
		ctx, cancel := context.WithTimeout(ctxT(t), 5e9)
		if _, err := e.api.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "b"}); err != nil {
			failed++
		}
		cancel()
	}
	if failed > 0 {
		t.Fatalf("%d of 300 GetBatch calls failed during the flood", failed)
	}
	if e.counter("paperfetch_coordinator_fetcher_throttled_total", "", "") == 0 {
		t.Fatal("the flood was not throttled")
	}
}
