package cli

import (
	"context"
	"fmt"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/progress"
)

const cancelHelp = `
Cancels every paper of the batch that has not finished: queued papers at once, running
downloads are aborted on their fetchers. Cancelling a finished batch changes nothing.`

func (a *app) cancel(ctx context.Context, args []string) error {
	fs := a.newFlagSet("cancel", "[flags] BATCH", cancelHelp)
	r := addRemoteFlags(fs)
	reason := fs.String("reason", "cancelled with paperfetch cancel", "why (`TEXT`), for the logs and the papers' last error")
	rest, err := a.parseFlags(fs, args)
	if err != nil {
		return err
	}
	return r.eachBatch(ctx, "cancel", rest, false, func(ctx context.Context, client pb.CoordinatorServiceClient, id string) error {
		resp, err := client.CancelBatch(ctx, &pb.CancelBatchRequest{BatchId: id, Reason: *reason})
		if err != nil {
			return err
		}
		b := resp.GetBatch()
		c := b.GetCounts()
		fmt.Fprintf(a.env.Stdout, "batch %s: %s (%d succeeded, %d failed, %d cancelled, %d still stopping)\n", b.GetBatchId(),
			progress.BatchStateName(b.GetState()), c.GetSucceeded(), c.GetFailed(), c.GetCancelled(), c.GetDownloading())
		return nil
	})
}
