package validate

import (
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxDOIBytes is the longest DOI accepted, in bytes (after normalisation).
const MaxDOIBytes = 512

// MaxURLsWithDOI is the most candidate URLs a paper with a DOI may have: the DOI's routes and
// the candidates they find share the paper's 16 steps.
const MaxURLsWithDOI = 4

// doiPrefixes are the forms a DOI is written in, lower case; the URL forms are percent-decoded.
var doiPrefixes = []struct {
	prefix string
	isURL  bool
}{
	{"https://doi.org/", true},
	{"http://doi.org/", true},
	{"https://dx.doi.org/", true},
	{"http://dx.doi.org/", true},
	{"https://www.doi.org/", true},
	{"http://www.doi.org/", true},
	{"doi.org/", true},
	{"dx.doi.org/", true},
	{"doi:", false},
	{"info:doi/", false},
}

// NormalizeDOI returns the canonical form of a DOI written in any usual form ("10.1234/abc",
// "doi:10.1234/abc", "https://doi.org/10.1234/abc", "http://dx.doi.org/10.1234%2Fabc"...):
// without prefix, percent-decoded when it came as a URL, trimmed and in lower case (DOIs are
// case-insensitive). It returns an error saying what is wrong when s is not a DOI.
func NormalizeDOI(s string) (string, error) {
	s = strings.TrimSpace(s)
	lower := strings.ToLower(s)
	for _, p := range doiPrefixes {
		if strings.HasPrefix(lower, p.prefix) {
			s = s[len(p.prefix):]
			if p.isURL {
				if i := strings.IndexAny(s, "?#"); i >= 0 {
					s = s[:i]
				}
				dec, err := url.PathUnescape(s)
				if err != nil {
					return "", fmt.Errorf("bad percent-encoding in DOI URL: %w", err)
				}
				s = dec
			}
			s = strings.TrimSpace(s)
			break
		}
	}
	if s == "" {
		return "", fmt.Errorf("empty DOI")
	}
	if len(s) > MaxDOIBytes {
		return "", fmt.Errorf("DOI of %d bytes exceeds the limit of %d", len(s), MaxDOIBytes)
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("DOI is not valid UTF-8")
	}
	prefix, suffix, ok := strings.Cut(s, "/")
	if !ok || !strings.HasPrefix(prefix, "10.") || len(prefix) < 4 {
		return "", fmt.Errorf("%q is not a DOI (want 10.<registrant>/<suffix>)", Truncate(s, 64))
	}
	for _, c := range prefix[3:] {
		if (c < '0' || c > '9') && c != '.' {
			return "", fmt.Errorf("%q is not a DOI: its registrant code %q must be digits and dots", Truncate(s, 64), Truncate(prefix, 32))
		}
	}
	if suffix == "" {
		return "", fmt.Errorf("%q is not a DOI: empty suffix", Truncate(s, 64))
	}
	for i, r := range suffix {
		if unicode.IsSpace(r) || unicode.IsControl(r) || !unicode.IsPrint(r) {
			return "", fmt.Errorf("DOI %q contains %U at byte %d of its suffix", Truncate(s, 64), r, i)
		}
	}
	return strings.ToLower(s), nil
}

// LooksLikeDOI reports whether s is a DOI in one of the forms NormalizeDOI accepts (for
// classifying command-line arguments and input lines).
func LooksLikeDOI(s string) bool {
	_, err := NormalizeDOI(s)
	return err == nil
}

// EscapeDOI percent-encodes a DOI for use as URL path segments (RFC 3986 pchar): "/" separates
// segments and is kept, as are letters, digits and "-._~!$&'()*+,;=:@"; every other byte ("#",
// "?", "%", "<", ">", spaces, non-ASCII) is escaped, so no DOI can change the URL's meaning.
func EscapeDOI(doi string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(doi) + 8)
	for i := 0; i < len(doi); i++ {
		c := doi[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// ArxivDOI returns the arXiv id of an arXiv DOI ("10.48550/arxiv.2301.00001" gives
// "2301.00001"), and false for other DOIs. doi must be normalised.
func ArxivDOI(doi string) (string, bool) {
	id, ok := strings.CutPrefix(doi, "10.48550/arxiv.")
	return id, ok && id != ""
}

// doi checks an optional DOI field.
func (v *violations) doi(path, s string) {
	if s == "" {
		return
	}
	if _, err := NormalizeDOI(s); err != nil {
		v.add(path, err.Error())
	}
}
