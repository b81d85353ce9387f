package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/progress"
)

const lsHelp = `
Without BATCH, lists the batches on the coordinator, newest first. With BATCH, lists its papers
in submission order (optionally only those in some states: --state failed,retry_wait), a page
at a time.`

func (a *app) ls(ctx context.Context, args []string) error {
	fs := a.newFlagSet("ls", "[flags] [BATCH]", lsHelp)
	r := addRemoteFlags(fs)
	stateList := fs.String("state", "", "only papers in these `STATES`, comma-separated: queued, retry_wait, downloading, succeeded, failed, cancelled")
	limit := fs.Int("limit", 0, "show at most `N` rows (0: all)")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	rest, err := a.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 1 {
		return usagef("want at most one BATCH id")
	}
	if *limit < 0 {
		return usagef("--limit must not be negative")
	}
	var states []pb.PaperState
	if *stateList != "" {
		if len(rest) == 0 {
			return usagef("--state filters the papers of a BATCH")
		}
		for _, s := range strings.Split(*stateList, ",") {
			st, err := progress.ParseState(s)
			if err != nil {
				return usagef("--state: %v", err)
			}
			states = append(states, st)
		}
	}
	conn, client, err := r.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	if len(rest) == 0 {
		return a.batchTable(ctx, r, client, *limit, *asJSON)
	}
	var tw *tabwriter.Writer
	if !*asJSON {
		tw = tabwriter.NewWriter(a.env.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PAPER\tSTATE\tATTEMPTS\tSIZE\tDETAIL")
	}
	shown := 0
	errStop := errors.New("limit reached")
	err = listPapers(ctx, client, r.timeout, rest[0], states, func(p *pb.Paper) error {
		if *limit > 0 && shown >= *limit {
			return errStop
		}
		shown++
		if *asJSON {
			return printProtoJSON(a.env.Stdout, p)
		}
		detail := ""
		switch p.GetState() {
		case pb.PaperState_PAPER_STATE_SUCCEEDED:
			detail = p.GetFinalUrl()
			if p.GetCached() {
				detail = "cached"
			}
		case pb.PaperState_PAPER_STATE_DOWNLOADING:
			detail = progress.FormatBytes(p.GetBytesDownloaded())
			if p.GetBytesTotal() > 0 {
				detail += " of " + progress.FormatBytes(p.GetBytesTotal())
			}
		default:
			if r := progress.ReasonName(p.GetLastFailureReason()); r != "" {
				detail = r + ": "
			}
			detail += p.GetLastError()
		}
		size := "-"
		if p.GetSize() > 0 {
			size = progress.FormatBytes(p.GetSize())
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", p.GetSpec().GetPaperId(), progress.StateName(p.GetState()), p.GetAttempts(), size, oneLine(detail, 100))
		return nil
	})
	if tw != nil {
		if ferr := tw.Flush(); ferr != nil && err == nil {
			err = ferr
		}
	}
	if err != nil && !errors.Is(err, errStop) {
		return r.rpcError("list papers", err)
	}
	return nil
}

// oneLine flattens and shortens s for a table cell.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		s = string(r[:n-1]) + "…"
	}
	return s
}
