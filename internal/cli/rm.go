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
	return r.eachBatch(ctx, "rm", rest, true, func(ctx context.Context, client pb.CoordinatorServiceClient, id string) error {
		resp, err := client.DeleteBatch(ctx, &pb.DeleteBatchRequest{BatchId: id})
		if err != nil {
			return err
		}
		fmt.Fprintf(a.env.Stdout, "deleted batch %s (%d papers)\n", resp.GetBatchId(), resp.GetPapersDeleted())
		return nil
	})
}
