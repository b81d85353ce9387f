package cli

import (
	"flag"

	"github.com/paperfetch/paperfetch/coordinator"
)

// registerResolveFlags registers the DOI routes' flags of `get`: --doi-base, --openalex-base,
// --unpaywall-base and --email (--arxiv-base is get's own, shared with arXiv ids).
func registerResolveFlags(fs *flag.FlagSet, r *coordinator.ResolveConfig) {
	fs.StringVar(&r.DOIBase, "doi-base", coordinator.DefaultDOIBase, "DOI resolver `URL` (landing pages, CSL JSON)")
	fs.StringVar(&r.OpenAlexBase, "openalex-base", coordinator.DefaultOpenAlexBase, "OpenAlex API `URL`")
	fs.StringVar(&r.UnpaywallBase, "unpaywall-base", coordinator.DefaultUnpaywallBase, "Unpaywall API `URL`")
	fs.StringVar(&r.Email, "email", "", "contact `ADDRESS` for the DOI APIs (OpenAlex mailto=, Unpaywall email=, User-Agent); Unpaywall is skipped without one")
}
