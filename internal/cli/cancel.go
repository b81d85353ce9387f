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
	resp, err := client.CancelBatch(callCtx, &pb.CancelBatchRequest{BatchId: rest[0], Reason: *reason})
	if err != nil {
		return r.rpcError("cancel", err)
	}
	b := resp.GetBatch()
	c := b.GetCounts()
	fmt.Fprintf(a.env.Stdout, "batch %s: %s (%d succeeded, %d failed, %d cancelled, %d still stopping)\n", b.GetBatchId(),
		progress.BatchStateName(b.GetState()), c.GetSucceeded(), c.GetFailed(), c.GetCancelled(), c.GetDownloading())
	return nil
}
