package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/progress"
)

const pullHelp = `
Downloads the stored PDFs of a batch's succeeded papers from the coordinator (ReadPaper) into
--out, named like 'paperfetch get' names them. Files already present with the right SHA-256 are
skipped; an interrupted pull resumes each file from its ".part" file. Every file is verified.`

func (a *app) pull(ctx context.Context, args []string) error {
	fs := a.newFlagSet("pull", "[flags] BATCH", pullHelp)
	r := addRemoteFlags(fs)
	out := fs.String("out", "papers", "output folder `DIR`")
	parallel := fs.Int("parallel", 4, "`N` files downloaded at once")
	quiet := fs.Bool("quiet", false, "print only errors and the summary")
	nameTemplate := fs.String("name-template", "", "name the PDFs `TEMPLATE`.pdf from {id}, {doi}, {year}, {first_author}, {title} (at most 1024 bytes; default: the paper id)")
	wait := fs.Bool("wait", false, "wait for a running batch to finish before pulling (without it, a running batch is pulled as far as it got)")
	rest, err := a.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("want exactly one BATCH id")
	}
	if *parallel < 1 || *parallel > 64 {
		return usagef("--parallel must be between 1 and 64")
	}
	if err := checkNameTemplate(*nameTemplate); err != nil {
		return usagef("%v", err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return &exitError{code: ExitUsage, err: fmt.Errorf("create output folder: %w", err)}
	}
	conn, client, err := r.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	callCtx, cancel := r.call(ctx)
	got, err := client.GetBatch(callCtx, &pb.GetBatchRequest{BatchId: rest[0]})
	cancel()
	if err != nil {
		return r.rpcError("pull", err)
	}
	b := got.GetBatch()
	if !batchDone(b.GetState()) && *wait {
		fmt.Fprintf(a.env.Stderr, "waiting for batch %s to finish...\n", rest[0])
		if b, err = watchBatch(ctx, client, rest[0], false, func(*pb.WatchBatchResponse) {}); err != nil {
			if ctx.Err() != nil {
				return &exitError{code: ExitInterrupted, err: errors.New("interrupted")}
			}
			return r.rpcError("watch", err)
		}
	}
	incomplete := !batchDone(b.GetState())

	mat := &materializer{out: *out, client: client, template: *nameTemplate}
	var pulled, present, failed, bytes atomic.Int64
	var mu sync.Mutex // serialises messages
	papers := make(chan *pb.Paper)
	var wg sync.WaitGroup
	for range *parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range papers {
				path, already, err := mat.Place(ctx, p)
				mu.Lock()
				switch {
				case err != nil:
					if ctx.Err() == nil {
						failed.Add(1)
						fmt.Fprintf(a.env.Stderr, "paperfetch: %v\n", err)
					}
				case already:
					present.Add(1)
				default:
					pulled.Add(1)
					bytes.Add(p.GetSize())
					if !*quiet {
						fmt.Fprintf(a.env.Stderr, "%s  %s\n", path, progress.FormatBytes(p.GetSize()))
					}
				}
				mu.Unlock()
			}
		}()
	}
	listErr := listPapers(ctx, client, r.timeout, rest[0], []pb.PaperState{pb.PaperState_PAPER_STATE_SUCCEEDED}, func(p *pb.Paper) error {
		select {
		case papers <- p:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(papers)
	wg.Wait()
	fmt.Fprintf(a.env.Stderr, "pulled %d paper%s (%s) into %s, %d already there, %d failed\n",
		pulled.Load(), plural(int(pulled.Load()), "", "s"), progress.FormatBytes(bytes.Load()), *out, present.Load(), failed.Load())
	if incomplete && ctx.Err() == nil && listErr == nil {
		c := b.GetCounts()
		fmt.Fprintf(a.env.Stderr, "batch %s is still %s (%d of %d papers done): this pull is incomplete; run it again later, or with --wait\n",
			rest[0], progress.BatchStateName(b.GetState()), c.GetSucceeded()+c.GetFailed()+c.GetCancelled(), b.GetTotalPapers())
		return &exitError{code: ExitFailed}
	}
	if ctx.Err() != nil {
		return &exitError{code: ExitInterrupted, err: errors.New("interrupted; run the same command again to resume")}
	}
	if listErr != nil {
		return r.rpcError("list papers", listErr)
	}
	if failed.Load() > 0 {
		return &exitError{code: ExitFailed}
	}
	return nil
}
