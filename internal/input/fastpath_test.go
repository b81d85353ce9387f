package input

import (
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// FuzzFastPaths: the scan's cheap checks (no ToLower copy in isDOIURL and meantAsDOI, no
// regexp run for what cannot be an arXiv id, no rune decoding for ASCII white space) answer as
// the plain definitions they replaced, on any string: a line is classified as before.
func FuzzFastPaths(f *testing.F) {
	for _, s := range []string{
		"", "https://doi.org/10.1/x", "HTTPS://DX.DOI.ORG/10.1/x", "http://www.doi.org/", "https://doİ.org/10.1/x",
		"https://do\u0130.org/", "doi:10.1/x", "DOI:10.1/x", "do\u0130:10.1/x", "10.1/x", "10.", "http://127.0.0.1:40000/pdf/0?size=20480",
		"2301.00001", "2301.00001v12", "hep-th/9901001", "math.GT/0309136v2", "arXiv:2301.00001", "a b", "a\u00a0b", "a\u0085b",
		"a\x0bb", "\xff\xfe", "0", "attention", "-a_b.c-", "..", strings.Repeat("x", 79) + "é", strings.Repeat("ab", 50) + "-", strings.Repeat("a", 79) + "-b", "\u212a", "https://\u212a.org/", "https://doi.org\xff/",
	} {
		f.Add(s)
	}
	arxivNewRef := regexp.MustCompile(`^[0-9]{4}\.[0-9]{4,5}(v[0-9]+)?$`)
	arxivOldRef := regexp.MustCompile(`^[a-z]+(-[a-z]+)*(\.[A-Z]{2})?/[0-9]{7}(v[0-9]+)?$`)
	isDOIURLRef := func(s string) bool {
		l := strings.ToLower(s)
		for _, p := range []string{"https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "http://dx.doi.org/", "https://www.doi.org/", "http://www.doi.org/"} {
			if strings.HasPrefix(l, p) {
				return true
			}
		}
		return false
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := isDOIURL(s), isDOIURLRef(s); got != want {
			t.Fatalf("isDOIURL(%q) = %v, want %v", s, got, want)
		}
		l := strings.ToLower(s)
		want := strings.HasPrefix(l, "doi:") || isDOIURLRef(l) || strings.HasPrefix(l, "10.") && strings.Contains(l, "/")
		if got := meantAsDOI(s); got != want {
			t.Fatalf("meantAsDOI(%q) = %v, want %v", s, got, want)
		}
		for _, x := range []string{s, "arXiv:" + s} {
			id, ok := ArxivID(x)
			y := strings.TrimSpace(x)
			if len(y) > 6 && strings.EqualFold(y[:6], "arxiv:") {
				y = strings.TrimSpace(y[6:])
			}
			wantOK := arxivNewRef.MatchString(y) || arxivOldRef.MatchString(y)
			if ok != wantOK || ok && id != y {
				t.Fatalf("ArxivID(%q) = %q, %v, want %v", x, id, ok, wantOK)
			}
		}
		if got, want := hasSpace(s), strings.IndexFunc(s, unicode.IsSpace) >= 0; got != want {
			t.Fatalf("hasSpace(%q) = %v, want %v", s, got, want)
		}
		if got, want := sanitizeStem(s), sanitizeStemCopy(s); got != want {
			t.Fatalf("sanitizeStem(%q) = %q, want %q", s, got, want)
		}
	})
}
