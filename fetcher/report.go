package fetcher

import (
	"strings"

	"github.com/paperfetch/paperfetch/internal/validate"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Origins choose much of what a terminal event reports (Content-Type, redirect targets,
// error texts). The coordinator closes a stream that sends a field beyond the gateway's
// limits, so these helpers fit what an origin chose to those limits first.

// reportText returns s as valid UTF-8 of at most max bytes.
func reportText(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= max {
		return s
	}
	return validate.Truncate(s, max-len("…"))
}

// reportURL returns u, or "" when it cannot be reported (too long, not valid UTF-8).
func reportURL(u string) string {
	if len(u) > validate.MaxURLBytes || !strings.Contains(u, "://") || strings.ToValidUTF8(u, "") != u {
		return ""
	}
	return u
}

// reportStatus returns an HTTP status the gateway accepts (0 for none).
func reportStatus(s int) int32 {
	if s < 100 || s > 999 {
		return 0
	}
	return int32(s)
}

// fitResolved fits a resolve result's origin-chosen fields to the gateway's limits.
func fitResolved(r *pb.ResolveResult) *pb.ResolveResult {
	var kept []string
	for _, u := range r.GetCandidateUrls() {
		if u = reportURL(u); u != "" && len(kept) < validate.MaxResolveCandidates {
			kept = append(kept, u)
		}
	}
	r.CandidateUrls = kept
	r.Note = reportText(r.GetNote(), validate.MaxResolveNoteBytes)
	r.FinalUrl = reportURL(r.GetFinalUrl())
	r.ForwardUrl = reportURL(r.GetForwardUrl())
	return r
}

// fitCompleted fits a completion's origin-chosen fields to the gateway's limits.
func fitCompleted(c *pb.DownloadCompleted) *pb.DownloadCompleted {
	c.ContentType = reportText(c.GetContentType(), validate.MaxContentTypeBytes)
	c.FinalUrl = reportURL(c.GetFinalUrl())
	return c
}
