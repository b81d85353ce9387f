package input

import (
	"encoding/hex"
	"net/url"
	"path"
	"strings"
	"unicode"

	"github.com/paperfetch/paperfetch/internal/strsum"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// URLID derives a stable paper id from a URL: the arXiv id for arxiv.org URLs, otherwise the
// last path segment without ".pdf" (reduced to letters, digits, '.', '_' and '-') followed by
// '-' and 8 hex digits of the URL's SHA-256, so that two URLs ending in the same name (".../pdf",
// ".../download") get different ids. "https://example.org/a/attention.pdf" gives
// "attention-" plus the hash.
func URLID(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return urlID(u)
	}
	return withHash("url", raw)
}

// urlID is URLID of a URL parsed without error.
func urlID(u *url.URL) string {
	if id, ok := arxivIDFromURL(u); ok {
		return id
	}
	raw := u.String()
	name := path.Base(u.Path)
	if unescaped, err := url.PathUnescape(name); err == nil {
		name = unescaped
	}
	name = strings.TrimSuffix(strings.TrimSuffix(name, ".pdf"), ".PDF")
	if name == "/" || name == "." {
		name = ""
	}
	name = sanitizeStem(name)
	if name == "" {
		name = sanitizeStem(u.Hostname())
	}
	return withHash(name, raw)
}

// sanitizeStem keeps ASCII letters, digits, '.', '_' and '-' (others become '_'), trims the
// separators at both ends and caps the length at 80 bytes.
func sanitizeStem(s string) string {
	if stemClean(s) { // nothing to replace: no copy
		return strings.Trim(s[:min(len(s), 80)], "._-")
	}
	return sanitizeStemCopy(s)
}

// sanitizeStemCopy is sanitizeStem building a new string, rune by rune: its definition (the
// fast path of sanitizeStem is fuzzed against it).
func sanitizeStemCopy(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '_' || r == '-'):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 80 {
			break
		}
	}
	return strings.Trim(b.String(), "._-")
}

// stemClean reports whether every byte of s is an ASCII letter or digit, '.', '_' or '-': the
// characters sanitizeStem keeps.
func stemClean(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// shortHash is 8 hex digits of the SHA-256 of s.
func shortHash(s string) string {
	id := withHash("", s)
	return id[1:]
}

// withHash returns name, '-' and shortHash(s), in one allocation (the result; strsum hashes s
// without one).
func withHash(name, s string) string {
	sum := strsum.SHA256(s)
	var hx [8]byte
	hex.Encode(hx[:], sum[:4])
	var b strings.Builder
	b.Grow(len(name) + 1 + len(hx))
	b.WriteString(name)
	b.WriteByte('-')
	b.Write(hx[:])
	return b.String()
}

// short abbreviates s for error messages.
func short(s string) string { return validate.Truncate(s, 80) }
