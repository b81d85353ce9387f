package cli

import (
	"flag"

	"github.com/paperfetch/paperfetch/embedded"
)

// registerResolveFlags registers the DOI routes' flags of `get` and `resolve` on the options:
// --doi-base, --openalex-base, --unpaywall-base and --email (--arxiv-base is each command's
// own: get shares it with arXiv ids).
func registerResolveFlags(fs *flag.FlagSet, o *embedded.Options) {
	fs.StringVar(&o.DOIBase, "doi-base", embedded.DefaultDOIBase, "DOI resolver `URL` (landing pages, CSL JSON)")
	fs.StringVar(&o.OpenAlexBase, "openalex-base", embedded.DefaultOpenAlexBase, "OpenAlex API `URL`")
	fs.StringVar(&o.UnpaywallBase, "unpaywall-base", embedded.DefaultUnpaywallBase, "Unpaywall API `URL`")
	fs.StringVar(&o.Email, "email", "", "contact `ADDRESS` for the DOI APIs (OpenAlex mailto=, Unpaywall email=, User-Agent); Unpaywall is skipped without one")
}
