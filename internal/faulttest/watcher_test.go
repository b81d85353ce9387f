package faulttest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// batchWatcher follows a batch through WatchBatch, reconnecting across coordinator restarts,
// and records every paper's first terminal state to catch a paper that leaves it.
type batchWatcher struct {
	client  pb.CoordinatorServiceClient
	batchID string

	mu          sync.Mutex
	batch       *pb.Batch
	terminal    map[string]pb.PaperState
	regressions []string
	streams     int
	changed     chan struct{} // closed and replaced at every update
}

func newBatchWatcher(client pb.CoordinatorServiceClient, batchID string) *batchWatcher {
	return &batchWatcher{client: client, batchID: batchID, terminal: map[string]pb.PaperState{}, changed: make(chan struct{})}
}

func isTerminalBatch(s pb.BatchState) bool {
	return s == pb.BatchState_BATCH_STATE_COMPLETED || s == pb.BatchState_BATCH_STATE_CANCELLED
}

func isTerminalPaper(s pb.PaperState) bool {
	return s == pb.PaperState_PAPER_STATE_SUCCEEDED || s == pb.PaperState_PAPER_STATE_FAILED ||
		s == pb.PaperState_PAPER_STATE_CANCELLED
}

// run follows the batch until it is terminal or ctx ends. A broken stream (the coordinator
// was killed) is reopened; the open waits for the coordinator to be back (WaitForReady).
func (w *batchWatcher) run(ctx context.Context) {
	for ctx.Err() == nil {
		w.mu.Lock()
		w.streams++
		w.mu.Unlock()
		if done := w.follow(ctx); done {
			return
		}
		// Waiting on another process (the restarting coordinator): a short, bounded pause
		// between attempts; the open itself blocks until the connection is ready.
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// follow reads one stream; it reports whether the batch is terminal.
func (w *batchWatcher) follow(ctx context.Context) bool {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := w.client.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: w.batchID, IncludePapers: true}, grpc.WaitForReady(true))
	if err != nil {
		return false
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			return false
		}
		if w.update(msg) {
			return true
		}
	}
}

// update records one message; it reports whether the batch is terminal.
func (w *batchWatcher) update(msg *pb.WatchBatchResponse) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if msg.GetBatch() != nil {
		w.batch = proto.Clone(msg.GetBatch()).(*pb.Batch)
	}
	for _, u := range msg.GetPaperUpdates() {
		prev, seen := w.terminal[u.GetPaperId()]
		switch {
		case seen && u.GetState() != prev:
			w.regressions = append(w.regressions, fmt.Sprintf("%s: %v then %v", u.GetPaperId(), prev, u.GetState()))
		case !seen && isTerminalPaper(u.GetState()):
			w.terminal[u.GetPaperId()] = u.GetState()
		}
	}
	close(w.changed)
	w.changed = make(chan struct{})
	return w.batch != nil && isTerminalBatch(w.batch.GetState())
}

// snapshot returns the latest batch (nil before the first message).
func (w *batchWatcher) snapshot() *pb.Batch {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.batch
}

// waitFor blocks until cond holds for the latest batch, or ctx ends.
func (w *batchWatcher) waitFor(ctx context.Context, what string, cond func(*pb.Batch) bool) error {
	for {
		w.mu.Lock()
		ch, b := w.changed, w.batch
		w.mu.Unlock()
		if b != nil && cond(b) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s (last counts %v): %w", what, b.GetCounts(), context.Cause(ctx))
		}
	}
}
