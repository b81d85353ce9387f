package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/progress"
)

const statusHelp = `
Without BATCH, shows a table of the most recent batches on the coordinator. With BATCH, shows
that batch in detail: papers per state, bytes, speed and timings.`

func (a *app) status(ctx context.Context, args []string) error {
	fs := a.newFlagSet("status", "[flags] [BATCH]", statusHelp)
	r := addRemoteFlags(fs)
	asJSON := fs.Bool("json", false, "print the batch (or batches) as JSON")
	limit := fs.Int("limit", 20, "without BATCH: show the `N` most recent batches")
	rest, err := a.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 1 {
		return usagef("want at most one BATCH id")
	}
	if *limit < 1 || *limit > 1000 {
		return usagef("--limit must be between 1 and 1000")
	}
	conn, client, err := r.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	if len(rest) == 0 {
		return a.batchTable(ctx, r, client, *limit, *asJSON)
	}
	callCtx, cancel := r.call(ctx)
	defer cancel()
	resp, err := client.GetBatch(callCtx, &pb.GetBatchRequest{BatchId: rest[0]})
	if err != nil {
		return r.rpcError("status", err)
	}
	b := resp.GetBatch()
	if *asJSON {
		return printProtoJSON(a.env.Stdout, b)
	}
	printBatch(a.env.Stdout, b, time.Now())
	return nil
}

// printBatch prints one batch in detail.
func printBatch(w io.Writer, b *pb.Batch, now time.Time) {
	c := b.GetCounts()
	row := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %-10s %s\n", label, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(w, "Batch %s: %s\n", b.GetBatchId(), progress.BatchStateName(b.GetState()))
	done := c.GetSucceeded() + c.GetFailed() + c.GetCancelled()
	row("papers", "%d/%d done: %d succeeded (%d cached), %d failed, %d cancelled", done, b.GetTotalPapers(), c.GetSucceeded(), c.GetCached(), c.GetFailed(), c.GetCancelled())
	if live := c.GetDownloading() + c.GetQueued() + c.GetRetryWait(); live > 0 {
		row("live", "%d downloading, %d queued, %d waiting to retry", c.GetDownloading(), c.GetQueued(), c.GetRetryWait())
	}
	row("bytes", "%s downloaded, %s stored", progress.FormatBytes(b.GetBytesDownloaded()), progress.FormatBytes(b.GetBytesStored()))
	if !batchDone(b.GetState()) {
		row("speed", "%s", progress.FormatRate(b.GetBytesPerSecond()))
	}
	row("created", "%s", when(b.GetCreatedAt(), now))
	if b.GetSealedAt() != nil {
		row("sealed", "%s", when(b.GetSealedAt(), now))
	}
	if b.GetFinishedAt() != nil {
		row("finished", "%s (took %s)", when(b.GetFinishedAt(), now), progress.FormatDuration(b.GetFinishedAt().AsTime().Sub(b.GetCreatedAt().AsTime())))
	}
	if len(b.GetLabels()) > 0 {
		keys := make([]string, 0, len(b.GetLabels()))
		for k := range b.GetLabels() {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + b.GetLabels()[k]
		}
		row("labels", "%s", strings.Join(parts, ", "))
	}
}

// when formats a timestamp with its age.
func when(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil {
		return "-"
	}
	t := ts.AsTime()
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format("2006-01-02 15:04:05 UTC"), progress.FormatDuration(now.Sub(t).Round(time.Second)))
}

// batchTable prints the most recent batches (limit; 0 means all, paging through them).
func (a *app) batchTable(ctx context.Context, r *remote, client pb.CoordinatorServiceClient, limit int, asJSON bool) error {
	var tw *tabwriter.Writer
	if !asJSON {
		tw = tabwriter.NewWriter(a.env.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "BATCH\tSTATE\tPAPERS\tSUCCEEDED\tFAILED\tCACHED\tBYTES\tCREATED")
	}
	token, shown := "", 0
	now := time.Now()
	for {
		size := 1000
		if limit > 0 {
			size = min(1000, limit-shown)
		}
		callCtx, cancel := r.call(ctx)
		resp, err := client.ListBatches(callCtx, &pb.ListBatchesRequest{PageSize: int32(size), PageToken: token})
		cancel()
		if err != nil {
			return r.rpcError("list batches", err)
		}
		for _, b := range resp.GetBatches() {
			if asJSON {
				if err := printProtoJSON(a.env.Stdout, b); err != nil {
					return err
				}
				continue
			}
			c := b.GetCounts()
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", b.GetBatchId(), progress.BatchStateName(b.GetState()), b.GetTotalPapers(),
				c.GetSucceeded(), c.GetFailed(), c.GetCached(), progress.FormatBytes(b.GetBytesStored()),
				progress.FormatDuration(now.Sub(b.GetCreatedAt().AsTime()).Round(time.Second))+" ago")
		}
		shown += len(resp.GetBatches())
		token = resp.GetNextPageToken()
		if token == "" || (limit > 0 && shown >= limit) {
			break
		}
	}
	if tw != nil {
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if shown == 0 {
			fmt.Fprintln(a.env.Stderr, "no batches")
		}
	}
	return nil
}

// printProtoJSON prints a message as one JSON line.
func printProtoJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// removeFile removes a file, ignoring errors (temporary files).
func removeFile(path string) error { return os.Remove(path) }
