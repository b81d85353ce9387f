// Package doitest is a fixture world for DOI resolution, on 127.0.0.1: a DOI resolver
// look-alike (redirects to landing pages, CSL JSON by content negotiation), OpenAlex and
// Unpaywall look-alikes answering with the shapes of their public documentation, a publisher with
// landing pages of every kind (citation_pdf_url absolute and relative, link rel=alternate,
// redirects, an interstitial forwarding with a meta refresh, a paywall whose "PDF" is HTML served as application/pdf), a repository serving
// open copies as application/octet-stream, and an arXiv look-alike. It counts every request,
// checks the contact address on every API call and records the highest concurrency per API.
package doitest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The DOIs of the world and the route that should produce each one's PDF ("" when none can).
const (
	DOIArxiv     = "10.48550/arXiv.2301.00001"                                    // arxiv
	DOIOpenAlex  = "10.1000/OA.1"                                                 // openalex (best_oa_location)
	DOIOldOA     = "10.1000/oa.old"                                               // openalex (older oa_locations)
	DOIUnpaywall = "10.1000/up.1"                                                 // unpaywall (OpenAlex knows it, no PDF)
	DOIMetaAbs   = "10.1000/land.abs"                                             // landing_page (absolute citation_pdf_url with &amp;)
	DOIMetaRel   = "10.1000/land.rel"                                             // landing_page (two redirects, relative meta)
	DOILinkAlt   = "10.1000/land.alt"                                             // landing_page (<link rel=alternate>)
	DOICSL       = "10.1000/csl.1"                                                // csl_link
	DOITrap      = "10.1000/trap"                                                 // none: every route leads to a paywall
	DOIUnknown   = "10.9999/unknown"                                              // none: not registered
	DOISpecial   = "10.1002/(SICI)1097-4571(199806)49:8<693::AID-ASI3>3.0.CO;2-O" // openalex, after a percent-encoded request
	DOISlow      = "10.1000/slow"                                                 // openalex, after a 429 with Retry-After: 1
	DOIFlaky     = "10.1000/flaky"                                                // openalex; its copy answers 503 until ReleaseFlaky
	DOIBoth      = "10.1000/both"                                                 // openalex, for an entry whose URL is a landing page without a PDF
	DOIForward   = "10.1000/land.forward"                                         // landing_page (an interstitial's meta refresh, then citation_pdf_url)
)

// World is the running fixture.
type World struct {
	Resolver, Publisher, OpenAlex, Unpaywall, Repo, Arxiv *httptest.Server
	// Email is the contact address every API call must carry.
	Email string

	mu         sync.Mutex
	hits       map[string]int // "server doi-or-path" -> requests
	hitTimes   map[string][]time.Time
	violations []string
	active     map[string]int
	maxActive  map[string]int
	starts     map[string][]time.Time
	slowOnce   atomic.Bool
	flakyOK    atomic.Bool
	// FlakyHit receives a value each time the flaky copy answers 503.
	FlakyHit chan struct{}
}

// PDF is the body served for a path: a small distinct PDF.
func PDF(path string) []byte {
	return []byte("%PDF-1.5\n% " + path + "\n" + strings.Repeat("0123456789abcdef\n", 64) + "%%EOF\n")
}

// Start starts the world; Close stops it.
func Start(email string) *World {
	w := &World{Email: email, hits: map[string]int{}, hitTimes: map[string][]time.Time{}, active: map[string]int{}, maxActive: map[string]int{},
		starts: map[string][]time.Time{}, FlakyHit: make(chan struct{}, 100)}
	w.Repo = httptest.NewServer(w.track("repo", http.HandlerFunc(w.repo)))
	w.Arxiv = httptest.NewServer(w.track("arxiv", http.HandlerFunc(w.arxiv)))
	w.Publisher = httptest.NewServer(w.track("publisher", http.HandlerFunc(w.publisher)))
	w.Resolver = httptest.NewServer(w.track("resolver", http.HandlerFunc(w.resolver)))
	w.OpenAlex = httptest.NewServer(w.track("openalex", http.HandlerFunc(w.openAlex)))
	w.Unpaywall = httptest.NewServer(w.track("unpaywall", http.HandlerFunc(w.unpaywall)))
	return w
}

// Close stops every server.
func (w *World) Close() {
	for _, s := range []*httptest.Server{w.Resolver, w.Publisher, w.OpenAlex, w.Unpaywall, w.Repo, w.Arxiv} {
		s.Close()
	}
}

// ReleaseFlaky makes the flaky copy answer with its PDF.
func (w *World) ReleaseFlaky() { w.flakyOK.Store(true) }

// Hits returns how many requests a server got for a DOI (lower case) or a path.
func (w *World) Hits(server, key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hits[server+" "+strings.ToLower(key)]
}

// HitTimes returns when each request a server got for a DOI (lower case) or a path arrived.
func (w *World) HitTimes(server, key string) []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.hitTimes[server+" "+strings.ToLower(key)]...)
}

// Violations lists the API calls that missed the contact address.
func (w *World) Violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.violations...)
}

// MaxActive is the highest number of concurrent requests a server saw.
func (w *World) MaxActive(server string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.maxActive[server]
}

// Starts returns when each request to a server arrived.
func (w *World) Starts(server string) []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.starts[server]...)
}

func (w *World) track(name string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.mu.Lock()
		w.active[name]++
		w.maxActive[name] = max(w.maxActive[name], w.active[name])
		w.starts[name] = append(w.starts[name], time.Now())
		if name == "openalex" || name == "unpaywall" || name == "resolver" {
			if w.Email != "" && !strings.Contains(r.UserAgent(), w.Email) {
				w.violations = append(w.violations, fmt.Sprintf("%s %s: User-Agent %q lacks %s", name, r.URL, r.UserAgent(), w.Email))
			}
		}
		w.mu.Unlock()
		defer func() {
			w.mu.Lock()
			w.active[name]--
			w.mu.Unlock()
		}()
		h.ServeHTTP(rw, r)
	})
}

func (w *World) hit(server, key string) {
	w.mu.Lock()
	k := server + " " + strings.ToLower(key)
	w.hits[k]++
	w.hitTimes[k] = append(w.hitTimes[k], time.Now())
	w.mu.Unlock()
}

func (w *World) violate(format string, args ...any) {
	w.mu.Lock()
	w.violations = append(w.violations, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

func servePDF(rw http.ResponseWriter, r *http.Request, ctype string) {
	rw.Header().Set("Content-Type", ctype)
	_, _ = rw.Write(PDF(r.URL.Path))
}

func writeJSON(rw http.ResponseWriter, v any) {
	rw.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(rw).Encode(v)
}

func (w *World) repo(rw http.ResponseWriter, r *http.Request) {
	w.hit("repo", r.URL.Path)
	switch {
	case strings.HasPrefix(r.URL.Path, "/flaky/") && !w.flakyOK.Load():
		select {
		case w.FlakyHit <- struct{}{}:
		default:
		}
		http.Error(rw, "try later", http.StatusServiceUnavailable)
	case strings.HasPrefix(r.URL.Path, "/oa/"), strings.HasPrefix(r.URL.Path, "/flaky/"):
		servePDF(rw, r, "application/octet-stream") // repositories often do this
	default:
		http.NotFound(rw, r)
	}
}

func (w *World) arxiv(rw http.ResponseWriter, r *http.Request) {
	w.hit("arxiv", r.URL.Path)
	if !strings.HasPrefix(r.URL.Path, "/pdf/") {
		http.NotFound(rw, r)
		return
	}
	servePDF(rw, r, "application/pdf")
}

// landing pages of the publisher, by path.
func (w *World) publisher(rw http.ResponseWriter, r *http.Request) {
	w.hit("publisher", r.URL.Path)
	script := "<script>var config = {" + strings.Repeat(`"k": "<meta name='x'>", `, 2000) + "};</script>"
	page := func(head string) {
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(rw, "<!DOCTYPE html>\n<html><head><title>Article</title>%s%s</head><body><p>Abstract</p></body></html>", script, head)
	}
	switch p := r.URL.Path; {
	case p == "/article/abs":
		page(`<META CONTENT="` + w.Publisher.URL + `/pdf/abs.pdf?download=1&amp;type=main" NAME="citation_pdf_url">`)
	case p == "/hop/rel":
		http.Redirect(rw, r, "/journal/rel/landing", http.StatusMovedPermanently)
	case p == "/journal/rel/landing":
		page(`<meta name="citation_title" content="Rel"><meta name=citation_pdf_url content="../../pdf/rel.pdf">`)
	case p == "/article/alt":
		page(`<link href="/files/alt%20paper.pdf" type="application/pdf" REL="alternate">`)
	case p == "/article/forward": // an interstitial, as Elsevier's linkinghub answers
		rw.Header().Set("Content-Type", "text/html")
		fmt.Fprint(rw, `<html><head><META HTTP-EQUIV="Refresh" CONTENT="2; URL='/article/real?from=doi&amp;x=1'"></head><body>Redirecting</body></html>`)
	case p == "/article/real":
		page(`<meta name="citation_pdf_url" content="/pdf/forwarded.pdf">`)
	case p == "/article/nolink", p == "/article/landing":
		page(`<meta name="citation_title" content="No PDF here">`)
	case p == "/article/trap":
		page(`<meta name="citation_pdf_url" content="/paywall/trap.pdf">`)
	case strings.HasPrefix(p, "/paywall/"):
		rw.Header().Set("Content-Type", "application/pdf") // a lie: the body is a login page
		fmt.Fprint(rw, "<!DOCTYPE html><html><head><title>Sign in</title></head><body>Buy this article</body></html>")
	case strings.HasPrefix(p, "/pdf/"), strings.HasPrefix(p, "/files/"), strings.HasPrefix(p, "/csl/"):
		servePDF(rw, r, "application/pdf")
	default:
		http.NotFound(rw, r)
	}
}

// landing is where the resolver sends each DOI (lower case).
func (w *World) landing(doi string) string {
	switch doi {
	case strings.ToLower(DOIMetaAbs):
		return "/article/abs"
	case strings.ToLower(DOIMetaRel):
		return "/hop/rel"
	case strings.ToLower(DOILinkAlt):
		return "/article/alt"
	case strings.ToLower(DOITrap):
		return "/article/trap"
	case strings.ToLower(DOIUnknown):
		return ""
	case strings.ToLower(DOIForward):
		return "/article/forward"
	}
	return "/article/nolink"
}

// resolver is the doi.org look-alike: 404 for unknown DOIs, CSL JSON on content negotiation,
// else a 302 to the landing page.
func (w *World) resolver(rw http.ResponseWriter, r *http.Request) {
	doi := strings.ToLower(strings.TrimPrefix(r.URL.Path, "/"))
	csl := strings.Contains(r.Header.Get("Accept"), "application/vnd.citationstyles.csl+json")
	if csl {
		w.hit("resolver-csl", doi)
	} else {
		w.hit("resolver", doi)
	}
	target := w.landing(doi)
	if target == "" {
		http.Error(rw, "DOI Not Found", http.StatusNotFound)
		return
	}
	if csl {
		item := map[string]any{"DOI": doi, "type": "article-journal", "title": "T"}
		switch doi {
		case strings.ToLower(DOICSL):
			item["link"] = []map[string]string{
				{"URL": w.Publisher.URL + "/csl/fulltext.xml", "content-type": "application/xml", "intended-application": "text-mining"},
				{"URL": w.Publisher.URL + "/csl/fulltext.pdf", "content-type": "application/pdf", "intended-application": "text-mining"},
			}
		case strings.ToLower(DOITrap):
			item["link"] = []map[string]string{{"URL": w.Publisher.URL + "/paywall/csl.pdf", "content-type": "application/pdf"}}
		}
		rw.Header().Set("Content-Type", "application/vnd.citationstyles.csl+json")
		_ = json.NewEncoder(rw).Encode(item)
		return
	}
	http.Redirect(rw, r, w.Publisher.URL+target, http.StatusFound)
}

// openAlex is the OpenAlex look-alike: GET /works/doi:<doi>?mailto=...
func (w *World) openAlex(rw http.ResponseWriter, r *http.Request) {
	doi, ok := strings.CutPrefix(r.URL.Path, "/works/doi:")
	doi = strings.ToLower(doi)
	w.hit("openalex", doi)
	if r.URL.Query().Get("mailto") != w.Email {
		w.violate("openalex %s: mailto=%q", r.URL, r.URL.Query().Get("mailto"))
	}
	if doi == strings.ToLower(DOISpecial) && !strings.Contains(strings.ToLower(r.URL.EscapedPath()), "%3c693::aid-asi3%3e3.0.co;2-o") {
		w.violate("openalex: special DOI not percent-encoded: %s", r.URL.EscapedPath())
	}
	if !ok {
		http.NotFound(rw, r)
		return
	}
	loc := func(pdf string) map[string]any {
		return map[string]any{"is_oa": true, "landing_page_url": "https://example.invalid/landing", "pdf_url": pdf, "license": "cc-by", "version": "publishedVersion"}
	}
	work := func(best map[string]any, locs ...map[string]any) map[string]any {
		m := map[string]any{"id": "https://openalex.org/W1", "doi": "https://doi.org/" + doi, "best_oa_location": best, "locations": locs}
		if best == nil {
			m["best_oa_location"] = nil
		}
		return m
	}
	switch doi {
	case strings.ToLower(DOIOpenAlex):
		writeJSON(rw, work(loc(w.Repo.URL+"/oa/oa1.pdf"), map[string]any{"is_oa": false, "pdf_url": nil}, loc(w.Repo.URL+"/oa/oa1.pdf")))
	case strings.ToLower(DOIOldOA):
		writeJSON(rw, map[string]any{"id": "https://openalex.org/W2", "oa_locations": []map[string]any{loc(w.Repo.URL + "/oa/old.pdf")}})
	case strings.ToLower(DOIUnpaywall), strings.ToLower(DOICSL), strings.ToLower(DOIMetaAbs):
		writeJSON(rw, work(nil, map[string]any{"is_oa": false, "pdf_url": nil, "landing_page_url": "https://example.invalid/x"}))
	case strings.ToLower(DOITrap):
		writeJSON(rw, work(loc(w.Publisher.URL+"/paywall/oa.pdf")))
	case strings.ToLower(DOISpecial):
		writeJSON(rw, work(loc(w.Repo.URL+"/oa/special.pdf")))
	case strings.ToLower(DOISlow):
		if w.slowOnce.CompareAndSwap(false, true) {
			rw.Header().Set("Retry-After", "1")
			http.Error(rw, "slow down", http.StatusTooManyRequests)
			return
		}
		writeJSON(rw, work(loc(w.Repo.URL+"/oa/slow.pdf")))
	case strings.ToLower(DOIFlaky):
		writeJSON(rw, work(loc(w.Repo.URL+"/flaky/copy.pdf")))
	case strings.ToLower(DOIBoth):
		writeJSON(rw, work(loc(w.Repo.URL+"/oa/both.pdf")))
	default:
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusNotFound)
		fmt.Fprint(rw, `{"error": "404 Not Found", "message": "The requested URL was not found on the server."}`)
	}
}

// unpaywall is the Unpaywall look-alike: GET /v2/<doi>?email=... (422 without an address).
func (w *World) unpaywall(rw http.ResponseWriter, r *http.Request) {
	doi := strings.ToLower(strings.TrimPrefix(r.URL.Path, "/v2/"))
	w.hit("unpaywall", doi)
	email := r.URL.Query().Get("email")
	if email != w.Email {
		w.violate("unpaywall %s: email=%q", r.URL, email)
	}
	if email == "" {
		rw.WriteHeader(http.StatusUnprocessableEntity)
		writeJSON(rw, map[string]any{"HTTP_status_code": 422, "error": true, "message": "Please use ?email=..."})
		return
	}
	switch doi {
	case strings.ToLower(DOIUnpaywall):
		best := map[string]any{"url_for_pdf": w.Repo.URL + "/oa/up1.pdf", "url": w.Repo.URL + "/oa/up1", "host_type": "repository"}
		writeJSON(rw, map[string]any{"doi": doi, "is_oa": true, "best_oa_location": best, "oa_locations": []any{best}})
	case strings.ToLower(DOITrap), strings.ToLower(DOICSL), strings.ToLower(DOIMetaAbs):
		writeJSON(rw, map[string]any{"doi": doi, "is_oa": false, "best_oa_location": nil, "oa_locations": []any{}})
	default:
		rw.WriteHeader(http.StatusNotFound)
		writeJSON(rw, map[string]any{"HTTP_status_code": 404, "error": true, "message": "'" + doi + "' is an invalid doi."})
	}
}

// WriteInputs writes into dir one input of every bibliographic format whose entries point
// into the world (refs.bib, zotero.csv, dois.txt, export.ris, lib.json) and returns their paths.
func (w *World) WriteInputs(dir string) ([]string, error) {
	files := map[string]string{
		"refs.bib": `% exported by a reference manager
@string{pre = "10.1000"}
@Article{abs2020,
  AUTHOR = {M{\"u}ller, Hans and Doe, J.},
  TITLE = {Absolute {Meta} Tags},
  YEAR = 2020, month = jan,
  DOI = pre # "/land.abs"}
@article{unpaywalled, title = "Open {Copy}", year = {2019}, doi = {10.1000/up.1}, url = {` + w.Publisher.URL + `/article/landing}}
@misc{arxivpaper, author = {Lee, A.}, eprint = {2301.00002}, archivePrefix = {arXiv}, year = 2023}
@comment{ @article{ignored, doi = {10.1/none}} }
`,
		"zotero.csv": "\"Key\",\"Item Type\",\"Publication Year\",\"Author\",\"Title\",\"DOI\",\"Url\"\n" +
			"\"CSL1\",\"journalArticle\",\"2018\",\"Curie, Marie\",\"Linked in CSL\",\"10.1000/csl.1\",\"\"\n" +
			"\"TRAP1\",\"journalArticle\",\"2017\",\"Roe, R.\",\"Behind a paywall\",\"" + DOITrap + "\",\"\"\n",
		"dois.txt":   DOISpecial + "\nhttps://doi.org/" + strings.ToUpper(DOIOpenAlex) + "\ndoi:" + DOIUnknown + "\n",
		"export.ris": "TY  - JOUR\r\nID  - rel-ris\r\nAU  - Rel, Ada\r\nPY  - 2016\r\nTI  - Relative\r\nDO  - " + DOIMetaRel + "\r\nER  - \r\n",
		"lib.json":   `[{"id": "alt-csl", "type": "article-journal", "DOI": "` + DOILinkAlt + `", "title": "Alternate", "author": [{"family": "Alt"}], "issued": {"date-parts": [[2015]]}}]`,
	}
	var names []string
	for _, name := range []string{"refs.bib", "zotero.csv", "dois.txt", "export.ris", "lib.json"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(files[name]), 0o644); err != nil {
			return nil, fmt.Errorf("write input: %w", err)
		}
		names = append(names, p)
	}
	return names, nil
}
