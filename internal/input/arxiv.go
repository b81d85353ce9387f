package input

import (
	"net/url"
	"regexp"
	"strings"
)

// DefaultArxivBase is where arXiv ids resolve unless told otherwise.
const DefaultArxivBase = "https://arxiv.org"

var (
	// New-style ids (since 2007): YYMM.NNNN or YYMM.NNNNN, optional version.
	arxivNew = regexp.MustCompile(`^[0-9]{4}\.[0-9]{4,5}(v[0-9]+)?$`)
	// Old-style ids: archive(.SUBJ)/YYMMNNN, optional version, e.g. hep-th/9901001, math.GT/0309136.
	arxivOld = regexp.MustCompile(`^[a-z]+(-[a-z]+)*(\.[A-Z]{2})?/[0-9]{7}(v[0-9]+)?$`)
)

// ArxivID returns the canonical form of an arXiv identifier (without the "arXiv:" prefix, which
// is accepted in any case) and whether s is one. "arXiv:2301.00001v2" gives "2301.00001v2".
func ArxivID(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) > 6 && strings.EqualFold(s[:6], "arxiv:") {
		s = strings.TrimSpace(s[6:])
	}
	if mayBeArxivID(s) && (arxivNew.MatchString(s) || arxivOld.MatchString(s)) {
		return s, true
	}
	return "", false
}

// mayBeArxivID reports whether s has the length and the characters of an arXiv id, so that the
// patterns run only for those: both match at least 9 bytes (YYMM.NNNN, a/YYMMNNN), all of
// them letters, digits, '.', '-' or '/' (a URL's ':' or an empty id costs no regexp run).
func mayBeArxivID(s string) bool {
	if len(s) < 9 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '.' || c == '-' || c == '/') {
			return false
		}
	}
	return true
}

// IsOldStyleArxivID reports whether id is exactly an old-style arXiv id (archive/YYMMNNN, as in
// hep-th/9901001), the only kind with a slash.
func IsOldStyleArxivID(id string) bool {
	return arxivOld.MatchString(id)
}

// ArxivURL returns the PDF URL of a canonical arXiv id under base, as BASE/pdf/ID.
func ArxivURL(base, id string) string {
	return strings.TrimRight(base, "/") + "/pdf/" + id
}

// arxivIDFromURL recognises https://arxiv.org/pdf/ID(.pdf) and /abs/ID URLs, so that a paper
// given by its arXiv URL gets the same id (and the same file name) as one given by its id.
func arxivIDFromURL(u *url.URL) (string, bool) {
	host := strings.ToLower(u.Hostname())
	if host != "arxiv.org" && host != "www.arxiv.org" && host != "export.arxiv.org" {
		return "", false
	}
	for _, prefix := range []string{"/pdf/", "/abs/"} {
		if rest, ok := strings.CutPrefix(u.Path, prefix); ok {
			return ArxivID(strings.TrimSuffix(rest, ".pdf"))
		}
	}
	return "", false
}
