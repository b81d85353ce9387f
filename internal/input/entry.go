package input

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/paperfetch/paperfetch/internal/validate"
)

// Metadata keys the readers fill from bibliographic inputs (BibTeX, RIS, CSL-JSON, CSV exports);
// output name templates use them.
const (
	MetaTitle       = "title"
	MetaYear        = "year"
	MetaFirstAuthor = "first_author"
)

// entry is one input entry in every format's terms, before it becomes a Paper.
type entry struct {
	id, sha, doi, arxiv string
	urls                []string
	md                  map[string]string
	title, year, author string
	// urlLine marks a line holding one URL: an arxiv.org /abs/ or /pdf/ URL is then fetched like
	// its arXiv id (from --arxiv-base, named ID.pdf).
	urlLine bool
}

// finishEntry completes and validates an entry: the DOI is normalised, an arXiv id becomes
// its PDF URL, the id defaults to the arXiv id, the DOI or one derived from the first URL, and
// bibliographic fields go into the metadata.
//
// Each URL kept is parsed once, here: its parse serves the arXiv check of a URL line, the id
// derived from it and the validation (before, three url.Parse calls per URL line).
func finishEntry(opts Options, e entry) (Paper, error) {
	id := strings.TrimSpace(e.id)
	urls := make([]string, 0, len(e.urls)+1)
	// parsed[i] is url.Parse(urls[i]), or nil where it failed (validation reports why).
	var parsedBuf [2]*url.URL
	parsed := parsedBuf[:0]
	for _, u := range e.urls {
		u = normalizeURL(u) // quotes, <...> and the #fragment removed
		switch {
		case u == "":
		case isDOIURL(u):
			if strings.TrimSpace(e.doi) == "" {
				e.doi = u // a doi.org link is the DOI: its routes do better than its landing page
			}
		default:
			urls = append(urls, u)
			pu, err := url.Parse(u)
			if err != nil {
				pu = nil
			}
			parsed = append(parsed, pu)
		}
	}
	if e.urlLine && len(urls) == 1 && parsed[0] != nil {
		if aid, ok := arxivIDFromURL(parsed[0]); ok {
			return Paper{ID: aid, URLs: []string{ArxivURL(opts.ArxivBase, aid)}}, nil
		}
	}
	doi := ""
	if d := strings.TrimSpace(e.doi); d != "" {
		n, err := validate.NormalizeDOI(d)
		if err != nil {
			return Paper{}, fmt.Errorf("bad DOI: %w", err)
		}
		doi = n
	}
	if a := strings.TrimSpace(e.arxiv); a != "" {
		aid, ok := ArxivID(a)
		if !ok {
			return Paper{}, fmt.Errorf("malformed arXiv id %q", short(a))
		}
		if id == "" {
			id = aid
		}
		urls = append(urls, ArxivURL(opts.ArxivBase, aid))
	}
	if aid, ok := ArxivID(id); ok {
		id = aid
		if len(urls) == 0 && doi == "" {
			urls = []string{ArxivURL(opts.ArxivBase, aid)}
		}
	}
	if len(urls) == 0 && doi == "" {
		if id != "" {
			return Paper{}, fmt.Errorf("paper %q has no URL or DOI (and its id is not an arXiv id)", short(id))
		}
		return Paper{}, errors.New("no id, URL or DOI")
	}
	if id == "" {
		if doi != "" {
			id = doi
		} else if len(parsed) > 0 && parsed[0] != nil {
			id = urlID(parsed[0])
		} else {
			id = URLID(urls[0])
		}
	}
	md := e.md
	for _, kv := range [...][2]string{{MetaTitle, e.title}, {MetaYear, e.year}, {MetaFirstAuthor, e.author}} {
		k, v := kv[0], kv[1]
		if v = strings.TrimSpace(v); v != "" {
			if md == nil {
				md = map[string]string{}
			}
			if _, set := md[k]; !set {
				md[k] = validate.Truncate(v, validate.MaxMetadataValueBytes/2)
			}
		}
	}
	if len(md) == 0 {
		md = nil
	}
	if len(urls) == 0 {
		urls = nil
	}
	p := Paper{ID: id, URLs: urls, DOI: doi, SHA256: strings.ToLower(strings.TrimSpace(e.sha)), Metadata: md}
	// The rules of the contract live in one place, internal/validate (which the coordinator
	// applies too); a violation here becomes a *LineError with the entry's line number.
	if err := validate.PaperSpecParsed("", p.Spec(), parsed); err != nil {
		return Paper{}, err
	}
	return p, nil
}

// IsDOI reports whether s is a DOI in any usual form ("10.1234/abc", "doi:10.1234/abc",
// "https://doi.org/10.1234/abc", "http://dx.doi.org/10.1234/abc"), for classifying arguments.
func IsDOI(s string) bool {
	return validate.LooksLikeDOI(s) && !strings.Contains(strings.TrimSpace(s), " ")
}

// isDOIURL reports whether a URL is a DOI resolver's (doi.org, dx.doi.org).
func isDOIURL(s string) bool {
	if !asciiHead(s) {
		return isDOIURLFolded(strings.ToLower(s))
	}
	return isDOIURLFolded(s)
}

// doiURLPrefixes are the DOI resolvers' URL prefixes, in lower case; the longest is
// maxDOIURLPrefix bytes.
var doiURLPrefixes = [...]string{"https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "http://dx.doi.org/", "https://www.doi.org/", "http://www.doi.org/"}

const maxDOIURLPrefix = len("https://www.doi.org/")

// asciiHead reports whether the first maxDOIURLPrefix bytes of s (all of s if shorter) are
// ASCII: there, comparing bytes in lower case is comparing strings.ToLower(s), which is what the
// callers mean (beyond ASCII, ToLower maps U+0130 'İ' to 'i': those strings take ToLower).
func asciiHead(s string) bool {
	for i := 0; i < len(s) && i < maxDOIURLPrefix; i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// hasPrefixLower reports whether s, its ASCII letters in lower case, begins with the lower-case
// ASCII prefix p, without copying s.
func hasPrefixLower(s, p string) bool {
	if len(s) < len(p) {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != p[i] {
			return false
		}
	}
	return true
}

// isDOIURLFolded is isDOIURL of s whose head is ASCII or already in lower case.
func isDOIURLFolded(s string) bool {
	if !hasPrefixLower(s, "http") { // the common prefix of doiURLPrefixes
		return false
	}
	for _, p := range doiURLPrefixes {
		if hasPrefixLower(s[4:], p[4:]) {
			return true
		}
	}
	return false
}

// bibFromMetadata fills an entry's title, year and first author from the metadata columns of
// a reference manager's CSV export (Zotero: "Title", "Publication Year", "Author" as
// "Family, Given; ..."; Mendeley: "Title", "Year", "Authors").
func bibFromMetadata(e *entry) {
	for k, v := range e.md {
		switch strings.ToLower(k) {
		case "title":
			e.title = v
		case "year", "publication year", "publication_year", "date", "issued":
			if y := yearOf(v); y != "" {
				e.year = y
			}
		case "author", "authors", "first_author", "creators":
			e.author = firstAuthor(v)
		}
	}
}

// yearOf returns the first four-digit run of s (a year in "2021-03-04", "March 2021"...).
func yearOf(s string) string {
	run := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			run++
			if run == 4 && (i+1 == len(s) || s[i+1] < '0' || s[i+1] > '9') {
				return s[i-3 : i+1]
			}
			continue
		}
		run = 0
	}
	return ""
}

// firstAuthor returns the family name of the first author of a list written "Family, Given;
// Family2, Given2", "Family, Given and Family2, Given2" (BibTeX) or "Given Family, ...".
func firstAuthor(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, " and "); i >= 0 {
		s = s[:i]
	}
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	if fam, _, ok := strings.Cut(s, ","); ok {
		return strings.TrimSpace(fam)
	}
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

// meantAsDOI reports whether an input line is meant as a DOI (possibly a malformed one): it has
// a DOI prefix ("doi:", a doi.org URL) or starts with "10." and has a "/".
func meantAsDOI(s string) bool {
	if !asciiHead(s) {
		l := strings.ToLower(s)
		return strings.HasPrefix(l, "doi:") || isDOIURL(l) || strings.HasPrefix(l, "10.") && strings.Contains(l, "/")
	}
	// ASCII head: the prefixes compare as in lower case, and ToLower never makes nor
	// removes a '/'.
	return hasPrefixLower(s, "doi:") || isDOIURLFolded(s) || strings.HasPrefix(s, "10.") && strings.Contains(s, "/")
}
