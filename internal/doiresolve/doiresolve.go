// Package doiresolve finds the PDF candidates of a DOI: it builds the request of each route
// (the DOI resolver's landing page and CSL JSON, OpenAlex, Unpaywall) and reads the answers.
// It does no I/O of its own: fetchers send the requests through their guarded, polite HTTP
// client, and the `paperfetch resolve` command through its own.
package doiresolve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// Route is one way of finding a DOI's PDF that needs a request.
type Route int

// The routes. Their values are those of the wire enum paperfetch.v1.ResolveRoute.
const (
	LandingPage Route = 1
	CSLLink     Route = 2
	OpenAlex    Route = 3
	Unpaywall   Route = 4
)

// Routes lists every route in the order paperfetch tries them.
var Routes = []Route{OpenAlex, Unpaywall, LandingPage, CSLLink}

// String returns the route's label (as in reports): openalex, unpaywall, landing_page, csl_link.
func (r Route) String() string {
	switch r {
	case OpenAlex:
		return "openalex"
	case Unpaywall:
		return "unpaywall"
	case LandingPage:
		return "landing_page"
	case CSLLink:
		return "csl_link"
	}
	return fmt.Sprintf("Route(%d)", int(r))
}

// MaxBody bounds the part of a response that is read (landing pages are searched in their first
// MaxBody bytes; larger API answers are refused).
const MaxBody = 2 << 20

// MaxCandidates bounds the candidates one answer yields.
const MaxCandidates = 8

// CSLAccept is the Accept header of the CSL JSON content negotiation.
const CSLAccept = "application/vnd.citationstyles.csl+json"

// Accept returns the Accept header a route's request sends.
func (r Route) Accept() string {
	switch r {
	case CSLLink:
		return CSLAccept
	case LandingPage:
		return "text/html,application/xhtml+xml,application/pdf;q=0.9,*/*;q=0.8"
	}
	return "application/json"
}

// Bases are where the routes send their requests (no trailing slash).
type Bases struct {
	DOI, OpenAlex, Unpaywall string
	// Email is the contact address (OpenAlex's mailto=, Unpaywall's email=).
	Email string
}

// URL returns the request URL of a route for a normalised DOI, percent-encoded (see
// validate.EscapeDOI for esc); "" for Unpaywall without an e-mail address (it refuses those).
func (b Bases) URL(r Route, esc string) string {
	switch r {
	case OpenAlex:
		u := strings.TrimRight(b.OpenAlex, "/") + "/works/doi:" + esc
		if b.Email != "" {
			u += "?mailto=" + url.QueryEscape(b.Email)
		}
		return u
	case Unpaywall:
		if b.Email == "" {
			return ""
		}
		return strings.TrimRight(b.Unpaywall, "/") + "/v2/" + esc + "?email=" + url.QueryEscape(b.Email)
	case LandingPage, CSLLink:
		return strings.TrimRight(b.DOI, "/") + "/" + esc
	}
	return ""
}

// Result is what one answer gave.
type Result struct {
	// Candidates are absolute http(s) PDF URLs, best first, at most MaxCandidates.
	Candidates []string
	// Note says what the route found when it found nothing (or how).
	Note string
}

// Parse reads a route's successful answer. final is the URL that answered (after redirects):
// relative links of a landing page resolve against it.
func Parse(r Route, body []byte, final *url.URL, contentType string) Result {
	switch r {
	case LandingPage:
		if bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("%PDF-")) {
			return Result{Candidates: []string{final.String()}, Note: "the DOI leads straight to a PDF"}
		}
		c, refresh := scanPage(body, final)
		if len(c) == 0 && refresh != "" && !samePage(refresh, final) {
			// An interstitial that forwards with a meta refresh: the page it forwards to is
			// the candidate (its download follows the citation_pdf_url found there).
			return Result{Candidates: []string{refresh}, Note: "the landing page forwards to " + refresh}
		}
		if len(c) == 0 {
			return Result{Note: "no citation_pdf_url or PDF link on " + final.String()}
		}
		return Result{Candidates: c}
	case CSLLink:
		return parseJSON(body, contentType, cslLinks, "no link with content-type application/pdf")
	case OpenAlex:
		return parseJSON(body, contentType, openAlexLinks, "no open-access location with a PDF")
	case Unpaywall:
		return parseJSON(body, contentType, unpaywallLinks, "no open-access location with a PDF")
	}
	return Result{Note: "unknown route"}
}

func parseJSON(body []byte, contentType string, links func([]byte) ([]string, error), none string) Result {
	c, err := links(body)
	if err != nil {
		return Result{Note: fmt.Sprintf("unreadable answer (Content-Type %q): %v", contentType, err)}
	}
	c = clean(c, nil)
	if len(c) == 0 {
		return Result{Note: none}
	}
	return Result{Candidates: c}
}

// clean keeps the absolute http(s) URLs (resolving relative ones against base when given),
// without duplicates, at most MaxCandidates.
func clean(in []string, base *url.URL) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil {
			continue
		}
		if base != nil {
			u = base.ResolveReference(u)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			continue
		}
		v := u.String()
		if seen[v] {
			continue
		}
		seen[v] = true
		out = append(out, v)
		if len(out) == MaxCandidates {
			break
		}
	}
	return out
}

// PDFLinks returns a landing page's PDF links: the content of every <meta name="citation_pdf_url">
// (in order), then the href of every <link rel="alternate" type="application/pdf">, resolved
// against the page's <base href> or base. It uses an HTML tokenizer: attribute order and case,
// entities in attribute values and scripts before the head's end are all handled.
func PDFLinks(page []byte, base *url.URL) []string {
	links, _ := scanPage(page, base)
	return links
}

// scanPage returns a page's PDF links (see PDFLinks) and the absolute http(s) URL its first
// <meta http-equiv="refresh" content="N; url=..."> forwards to ("" when none).
func scanPage(page []byte, base *url.URL) ([]string, string) {
	return scanTokens(page, base, true)
}

// scanTokens is scanPage; the content of a <noscript> (raw text to a tokenizer, tags to a
// browser without scripts) is scanned too when nested is true, one level deep.
func scanTokens(page []byte, base *url.URL, nested bool) ([]string, string) {
	z := html.NewTokenizer(bytes.NewReader(page))
	var metas, links []string
	refresh := ""
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
			continue
		}
		name, hasAttr := z.TagName()
		if nested && tt == html.StartTagToken && atom.Lookup(name) == atom.Noscript {
			if z.Next() == html.TextToken {
				inner, r := scanTokens(z.Text(), base, false)
				metas = append(metas, inner...)
				if refresh == "" {
					refresh = r
				}
			}
			continue
		}
		if !hasAttr {
			continue
		}
		a := atom.Lookup(name)
		if a != atom.Meta && a != atom.Link && a != atom.Base {
			continue
		}
		attrs := map[string]string{}
		for {
			k, v, more := z.TagAttr()
			key := strings.ToLower(string(k))
			if _, dup := attrs[key]; !dup {
				attrs[key] = string(v)
			}
			if !more {
				break
			}
		}
		switch a {
		case atom.Base:
			if h := strings.TrimSpace(attrs["href"]); h != "" && base != nil {
				if u, err := base.Parse(h); err == nil {
					base = u
				}
			}
		case atom.Meta:
			n := strings.ToLower(strings.TrimSpace(attrs["name"]))
			if n == "" {
				n = strings.ToLower(strings.TrimSpace(attrs["property"]))
			}
			if n == "citation_pdf_url" {
				metas = append(metas, attrs["content"])
			}
			if refresh == "" && strings.EqualFold(strings.TrimSpace(attrs["http-equiv"]), "refresh") {
				if u := refreshURL(attrs["content"]); u != "" {
					if c := clean([]string{u}, base); len(c) == 1 {
						refresh = c[0]
					}
				}
			}
		case atom.Link:
			rel := strings.Fields(strings.ToLower(attrs["rel"]))
			typ := strings.ToLower(strings.TrimSpace(attrs["type"]))
			if typ == "application/pdf" && contains(rel, "alternate") {
				links = append(links, attrs["href"])
			}
		}
	}
	return clean(append(metas, links...), base), refresh
}

// samePage reports whether the absolute URL u names the page final (a meta refresh to itself,
// which would only fetch the same page again): same scheme, host (in any case), path and query.
func samePage(u string, final *url.URL) bool {
	p, err := url.Parse(u)
	return err == nil && strings.EqualFold(p.Scheme, final.Scheme) && strings.EqualFold(p.Host, final.Host) &&
		p.EscapedPath() == final.EscapedPath() && p.RawQuery == final.RawQuery
}

// refreshURL returns the URL of a meta refresh's content ("5; url='/next'" gives "/next"); ""
// when it only reloads the page.
func refreshURL(content string) string {
	i := strings.IndexAny(content, ";,")
	if i < 0 {
		return ""
	}
	rest := strings.TrimSpace(content[i+1:])
	if len(rest) >= 4 && strings.EqualFold(rest[:4], "url=") {
		rest = strings.TrimSpace(rest[4:])
	}
	return strings.TrimSpace(strings.Trim(rest, `'"`))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// cslLinks reads the "link" entries of a CSL JSON item whose content-type is application/pdf
// (Crossref's shape: {"URL": ..., "content-type": ..., "intended-application": ...}).
func cslLinks(body []byte) ([]string, error) {
	var item struct {
		Link []struct {
			URL         string `json:"URL"`
			ContentType string `json:"content-type"`
		} `json:"link"`
	}
	if err := json.Unmarshal(body, &item); err != nil {
		return nil, err
	}
	var out []string
	for _, l := range item.Link {
		if strings.EqualFold(strings.TrimSpace(l.ContentType), "application/pdf") {
			out = append(out, l.URL)
		}
	}
	return out, nil
}

// openAlexLinks reads an OpenAlex work: best_oa_location.pdf_url, then every location's
// pdf_url (open-access locations first), and the older oa_locations.
func openAlexLinks(body []byte) ([]string, error) {
	type loc struct {
		PDFURL string `json:"pdf_url"`
		IsOA   bool   `json:"is_oa"`
	}
	var w struct {
		Best        *loc  `json:"best_oa_location"`
		Primary     *loc  `json:"primary_location"`
		Locations   []loc `json:"locations"`
		OALocations []loc `json:"oa_locations"`
	}
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, err
	}
	var out []string
	if w.Best != nil {
		out = append(out, w.Best.PDFURL)
	}
	for _, oa := range []bool{true, false} {
		for _, l := range w.Locations {
			if l.IsOA == oa {
				out = append(out, l.PDFURL)
			}
		}
	}
	for _, l := range w.OALocations {
		out = append(out, l.PDFURL)
	}
	if w.Primary != nil && w.Primary.IsOA {
		out = append(out, w.Primary.PDFURL)
	}
	return out, nil
}

// unpaywallLinks reads an Unpaywall record: best_oa_location.url_for_pdf, then every
// oa_locations entry's.
func unpaywallLinks(body []byte) ([]string, error) {
	type loc struct {
		URLForPDF string `json:"url_for_pdf"`
	}
	var r struct {
		Best        *loc  `json:"best_oa_location"`
		OALocations []loc `json:"oa_locations"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	var out []string
	if r.Best != nil {
		out = append(out, r.Best.URLForPDF)
	}
	for _, l := range r.OALocations {
		out = append(out, l.URLForPDF)
	}
	return out, nil
}

// ArxivPDF returns the PDF URL of an arXiv id under arxivBase (ARXIV_BASE/pdf/ID, the id's
// characters percent-encoded where a path needs it).
func ArxivPDF(arxivBase, id string) string {
	return strings.TrimRight(arxivBase, "/") + "/pdf/" + (&url.URL{Path: id}).EscapedPath()
}
