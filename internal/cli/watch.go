package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// batchDone reports whether a batch state is terminal.
func batchDone(s pb.BatchState) bool {
	return s == pb.BatchState_BATCH_STATE_COMPLETED || s == pb.BatchState_BATCH_STATE_CANCELLED
}

// watchBatch follows a batch with WatchBatch until it is COMPLETED or CANCELLED, calling fn
// for every update, and returns the terminal batch. A broken stream (the coordinator
// restarting, or ending a watcher that fell behind) is reopened with backoff; the snapshot that
// starts each stream brings fn up to date.
func watchBatch(ctx context.Context, client pb.CoordinatorServiceClient, batchID string, includePapers bool, fn func(*pb.WatchBatchResponse)) (*pb.Batch, error) {
	backoff := 100 * time.Millisecond
	for {
		err := func() error {
			streamCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			stream, err := client.WatchBatch(streamCtx, &pb.WatchBatchRequest{BatchId: batchID, IncludePapers: includePapers})
			if err != nil {
				return err
			}
			for {
				resp, err := stream.Recv()
				if err != nil {
					return err
				}
				fn(resp)
				backoff = 100 * time.Millisecond
				// The coordinator's last message is the settled batch (after a cancel, the
				// aborted downloads confirmed); earlier CANCELLED messages still count them.
				if b := resp.GetBatch(); batchDone(b.GetState()) && b.GetCounts().GetDownloading() == 0 {
					return errWatchDone{resp.GetBatch()}
				}
			}
		}()
		var done errWatchDone
		if errors.As(err, &done) {
			return done.batch, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.Unknown:
		default:
			if !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("watch batch %s: %w", batchID, err)
			}
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// errWatchDone ends a watch stream with its terminal batch.
type errWatchDone struct{ batch *pb.Batch }

// Error implements error.
func (errWatchDone) Error() string { return "batch finished" }
