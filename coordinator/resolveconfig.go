package coordinator

import (
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"
)

// Default bases of the DOI routes.
const (
	DefaultArxivBase     = "https://arxiv.org"
	DefaultDOIBase       = "https://doi.org"
	DefaultOpenAlexBase  = "https://api.openalex.org"
	DefaultUnpaywallBase = "https://api.unpaywall.org"
)

// ResolveConfig says where a paper's DOI is resolved. Every request to these hosts is a lease
// like a download, under the host's politeness limits.
type ResolveConfig struct {
	// ArxivBase is where arXiv DOIs (10.48550/arXiv.<id>) are fetched, as ArxivBase/pdf/<id>.
	ArxivBase string
	// DOIBase is the DOI resolver (landing-page redirects and CSL JSON content negotiation).
	DOIBase string
	// OpenAlexBase is OpenAlex's API (OpenAlexBase/works/doi:<doi>?mailto=<Email>).
	OpenAlexBase string
	// UnpaywallBase is Unpaywall's API (UnpaywallBase/v2/<doi>?email=<Email>).
	UnpaywallBase string
	// Email is the contact address sent to the APIs (OpenAlex's mailto=, Unpaywall's email=).
	// Unpaywall refuses requests without one: with Email empty, its route is skipped.
	Email string
}

// DefaultResolveConfig returns the default bases of the DOI routes, without a contact address.
func DefaultResolveConfig() ResolveConfig {
	return ResolveConfig{ArxivBase: DefaultArxivBase, DOIBase: DefaultDOIBase, OpenAlexBase: DefaultOpenAlexBase, UnpaywallBase: DefaultUnpaywallBase}
}

// RegisterFlags registers --arxiv-base, --doi-base, --openalex-base, --unpaywall-base and
// --email on fs, bound to r, with the defaults as flag defaults.
func (r *ResolveConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&r.ArxivBase, "arxiv-base", DefaultArxivBase, "where arXiv DOIs are fetched from, as `URL`/pdf/ID")
	fs.StringVar(&r.DOIBase, "doi-base", DefaultDOIBase, "DOI resolver `URL` (landing pages, CSL JSON)")
	fs.StringVar(&r.OpenAlexBase, "openalex-base", DefaultOpenAlexBase, "OpenAlex API `URL`")
	fs.StringVar(&r.UnpaywallBase, "unpaywall-base", DefaultUnpaywallBase, "Unpaywall API `URL`")
	fs.StringVar(&r.Email, "email", "", "contact `ADDRESS` sent to OpenAlex (mailto=) and Unpaywall (email=; its route is skipped without one) and in resolve requests' User-Agent; at most 254 bytes, no white space or control characters")
}

// withDefaults fills the empty bases and trims their trailing slashes.
func (r ResolveConfig) withDefaults() ResolveConfig {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
		*s = strings.TrimRight(*s, "/")
	}
	def(&r.ArxivBase, DefaultArxivBase)
	def(&r.DOIBase, DefaultDOIBase)
	def(&r.OpenAlexBase, DefaultOpenAlexBase)
	def(&r.UnpaywallBase, DefaultUnpaywallBase)
	r.Email = strings.TrimSpace(r.Email)
	return r
}

// Validate checks that every base is an http(s) URL and the address is plausible.
func (r ResolveConfig) Validate() error {
	r = r.withDefaults()
	for name, v := range map[string]string{"arxiv-base": r.ArxivBase, "doi-base": r.DOIBase, "openalex-base": r.OpenAlexBase, "unpaywall-base": r.UnpaywallBase} {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return fmt.Errorf("--%s must be an http(s) URL without credentials, got %q", name, v)
		}
	}
	// The address goes into query strings and User-Agent headers (ResolveStep.contact).
	bad := func(c rune) bool { return unicode.IsSpace(c) || !unicode.IsPrint(c) || strings.ContainsRune("&?#/", c) }
	if r.Email != "" && (!strings.Contains(r.Email, "@") || strings.ContainsFunc(r.Email, bad) || len(r.Email) > 254) {
		return fmt.Errorf("--email must be an e-mail address, got %q", r.Email)
	}
	return nil
}

// apiHostLimits are the politeness defaults of the DOI routes' hosts, applied unless
// --host-limit names the host (see docs/operations.md):
//   - the DOI resolver: one request per second, two at a time (what Zotero does per domain);
//   - OpenAlex: 10 requests per second at most in its polite pool: 150ms apart, four at a time;
//   - Unpaywall: 100,000 requests a day: 500ms apart, two at a time.
func (r ResolveConfig) apiHostLimits() map[string]HostLimits {
	r = r.withDefaults()
	out := map[string]HostLimits{}
	for base, lim := range map[string]HostLimits{
		r.DOIBase:       {Delay: new(time.Second), Concurrency: new(2)},
		r.OpenAlexBase:  {Delay: new(150 * time.Millisecond), Concurrency: new(4)},
		r.UnpaywallBase: {Delay: new(500 * time.Millisecond), Concurrency: new(2)},
	} {
		if k := hostKey(base); k != "invalid" {
			out[k] = lim
		}
	}
	return out
}
