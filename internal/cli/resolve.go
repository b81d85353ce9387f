package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/paperfetch/paperfetch/embedded"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/doiresolve"
	"github.com/paperfetch/paperfetch/internal/validate"
)

const resolveHelp = `
Prints, for each DOI (10.1234/abc, doi:..., https://doi.org/...), the PDF candidates each route
gives, in the order ` + "`get`" + ` tries them: the arXiv PDF (arXiv DOIs), OpenAlex, Unpaywall (with --email),
the landing page's citation_pdf_url or <link rel="alternate" type="application/pdf">, and the
DOI resolver's CSL JSON links. Nothing is downloaded. The requests go one at a time, at least
--per-host-delay apart on one host, through the same guarded HTTP client as the fetchers.

Exit status: 0 when every DOI has a candidate, 1 when some have none, 2 usage error.`

// resolveRoute is one route's outcome in `resolve --json`.
type resolveRoute struct {
	Route      string   `json:"route"`
	URL        string   `json:"url"`
	Candidates []string `json:"candidates"`
	Note       string   `json:"note,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// resolveOutput is one DOI's outcome in `resolve --json`.
type resolveOutput struct {
	DOI    string         `json:"doi"`
	Routes []resolveRoute `json:"routes"`
}

func (a *app) resolve(ctx context.Context, args []string) error {
	fs := a.newFlagSet("resolve", "[flags] DOI...", resolveHelp)
	rc := embedded.DefaultOptions()
	fs.StringVar(&rc.ArxivBase, "arxiv-base", embedded.DefaultArxivBase, "where arXiv DOIs are fetched from, as `URL`/pdf/ID")
	registerResolveFlags(fs, &rc)
	fs.BoolVar(&rc.AllowPrivateNetworks, "allow-private-networks", false, "allow requests to loopback and private addresses (unsafe; for local mirrors and tests)")
	fs.DurationVar(&rc.Timeout, "timeout", 30*time.Second, "deadline of one request")
	delay := fs.Duration("per-host-delay", time.Second, "minimum time between two requests to one host")
	asJSON := fs.Bool("json", false, "print one JSON object per DOI")
	dois, err := a.parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(dois) == 0 {
		return usagef("give at least one DOI")
	}
	r, err := embedded.NewResolver(rc) // checks the bases and the address too
	if err != nil {
		return usagef("%v", err)
	}
	defer r.Close()
	norm := make([]string, len(dois))
	for i, d := range dois {
		n, err := validate.NormalizeDOI(d)
		if err != nil {
			return usagef("%q: %v", d, err)
		}
		norm[i] = n
	}
	bases := doiresolve.Bases{DOI: rc.DOIBase, OpenAlex: rc.OpenAlexBase, Unpaywall: rc.UnpaywallBase, Email: rc.Email}
	last := map[string]time.Time{}
	wait := func(raw string) error {
		u, err := url.Parse(raw)
		if err != nil {
			return nil
		}
		if t, ok := last[u.Host]; ok {
			if d := time.Until(t.Add(*delay)); d > 0 {
				timer := time.NewTimer(d)
				select {
				case <-ctx.Done():
					timer.Stop()
					return ctx.Err()
				case <-timer.C:
				}
			}
		}
		last[u.Host] = time.Now()
		return nil
	}
	missing := 0
	for _, doi := range norm {
		out := resolveOutput{DOI: doi}
		if id, ok := validate.ArxivDOI(doi); ok {
			u := doiresolve.ArxivPDF(rc.ArxivBase, id)
			out.Routes = append(out.Routes, resolveRoute{Route: "arxiv", URL: u, Candidates: []string{u}})
		}
		for _, route := range doiresolve.Routes {
			u := bases.URL(route, validate.EscapeDOI(doi))
			if u == "" {
				out.Routes = append(out.Routes, resolveRoute{Route: route.String(), Note: "skipped: no --email (Unpaywall requires one)"})
				continue
			}
			if err := wait(u); err != nil {
				return &exitError{code: ExitInterrupted, err: err}
			}
			rr := resolveRoute{Route: route.String(), URL: u}
			res, err := r.Resolve(ctx, pb.ResolveRoute(route), doi, u)
			if err != nil {
				rr.Error = err.Error()
			} else {
				rr.Candidates, rr.Note = res.GetCandidateUrls(), res.GetNote()
			}
			out.Routes = append(out.Routes, rr)
		}
		found := false
		for _, rr := range out.Routes {
			found = found || len(rr.Candidates) > 0
		}
		if !found {
			missing++
		}
		a.printResolved(out, *asJSON)
	}
	if ctx.Err() != nil {
		return &exitError{code: ExitInterrupted, err: ctx.Err()}
	}
	if missing > 0 {
		return &exitError{code: ExitFailed}
	}
	return nil
}

// printResolved prints one DOI's routes: a line per candidate, or the route's note or error.
func (a *app) printResolved(out resolveOutput, asJSON bool) {
	w := a.env.Stdout
	if asJSON {
		_ = json.NewEncoder(w).Encode(out)
		return
	}
	fmt.Fprintln(w, out.DOI)
	for _, rr := range out.Routes {
		switch {
		case len(rr.Candidates) > 0:
			for _, c := range rr.Candidates {
				fmt.Fprintf(w, "  %-13s %s\n", rr.Route, c)
			}
		case rr.Error != "":
			fmt.Fprintf(w, "  %-13s (%s)\n", rr.Route, rr.Error)
		default:
			fmt.Fprintf(w, "  %-13s (%s)\n", rr.Route, strings.TrimSpace(rr.Note))
		}
	}
}
