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
	if len(rest) != 1 {
		return usagef("want exactly one BATCH id")
	}
	conn, client, err := r.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	callCtx, cancel := r.call(ctx)
	defer cancel()
	resp, err := client.RetryFailed(callCtx, &pb.RetryFailedRequest{BatchId: rest[0]})
	if err != nil {
		return r.rpcError("retry", err)
	}
	b := resp.GetBatch()
	fmt.Fprintf(a.env.Stdout, "batch %s: %s, %d failed %s queued again\n", b.GetBatchId(),
		progress.BatchStateName(b.GetState()), resp.GetRetried(), plural(int(resp.GetRetried()), "paper", "papers"))
	return nil
}
