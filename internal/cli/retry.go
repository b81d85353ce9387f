package cli

import (
	"context"
	"fmt"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/progress"
)

const retryHelp = `
Queues the failed papers of the batch again, each with a fresh attempt budget and all its
candidate URLs; a completed batch runs again until they finish. Follow it with
"paperfetch watch BATCH". A batch without failed papers is left as it is; a cancelled batch
cannot be retried.`

func (a *app) retry(ctx context.Context, args []string) error {
	fs := a.newFlagSet("retry", "[flags] BATCH", retryHelp)
	r := addRemoteFlags(fs)
	rest, err := a.parseFlags(fs, args)
	if err != nil {
		return err
	}
	return r.eachBatch(ctx, "retry", rest, false, func(ctx context.Context, client pb.CoordinatorServiceClient, id string) error {
		resp, err := client.RetryFailed(ctx, &pb.RetryFailedRequest{BatchId: id})
		if err != nil {
			return err
		}
		b := resp.GetBatch()
		fmt.Fprintf(a.env.Stdout, "batch %s: %s, %d failed %s queued again\n", b.GetBatchId(),
			progress.BatchStateName(b.GetState()), resp.GetRetried(), plural(int(resp.GetRetried()), "paper", "papers"))
		return nil
	})
}
