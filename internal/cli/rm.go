package cli

import (
	"context"
	"fmt"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

const rmHelp = `
Deletes finished batches (completed or cancelled) and their papers from the coordinator. Stored
PDFs that no remaining paper uses are removed from the blob store. A running batch is refused:
cancel it first. Files already pulled or downloaded with get are not touched.`

func (a *app) rm(ctx context.Context, args []string) error {
	fs := a.newFlagSet("rm", "[flags] BATCH...", rmHelp)
	r := addRemoteFlags(fs)
	rest, err := a.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usagef("want at least one BATCH id")
	}
	conn, client, err := r.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, id := range rest {
		callCtx, cancel := r.call(ctx)
		resp, err := client.DeleteBatch(callCtx, &pb.DeleteBatchRequest{BatchId: id})
		cancel()
		if err != nil {
			return r.rpcError("rm "+id, err)
		}
		fmt.Fprintf(a.env.Stdout, "deleted batch %s (%d papers)\n", resp.GetBatchId(), resp.GetPapersDeleted())
	}
	return nil
}
