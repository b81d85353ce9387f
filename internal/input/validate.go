package input

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of the contract (paperfetch.v1.PaperSpec); entries beyond them are rejected here, with
// a line number, rather than by the coordinator for a whole chunk.
const (
	// MaxIDBytes is the longest paper id.
	MaxIDBytes = 512
	// MaxURLs is the largest number of candidate URLs of a paper.
	MaxURLs = 16
	// MaxURLBytes is the longest URL.
	MaxURLBytes = 4096
	// MaxMetadata is the largest number of metadata entries.
	MaxMetadata = 32
	// MaxMetadataKeyBytes is the longest metadata key.
	MaxMetadataKeyBytes = 128
	// MaxMetadataValueBytes is the longest metadata value.
	MaxMetadataValueBytes = 2048
)

// CheckURL checks that s is an absolute http(s) URL without credentials, within the size limit,
// and returns it parsed.
func CheckURL(s string) (*url.URL, error) {
	if len(s) > MaxURLBytes {
		return nil, fmt.Errorf("URL longer than %d bytes", MaxURLBytes)
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("bad URL %q: %w", short(s), err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return nil, fmt.Errorf("URL %q: scheme must be http or https", short(s))
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("URL %q has no host", short(s))
	}
	if u.User != nil {
		return nil, fmt.Errorf("URL %q embeds credentials, which are not allowed", short(u.Redacted()))
	}
	return u, nil
}

// CheckID checks a paper id: 1 to MaxIDBytes bytes of UTF-8 without control characters.
func CheckID(id string) error {
	switch {
	case id == "":
		return errors.New("empty paper id")
	case len(id) > MaxIDBytes:
		return fmt.Errorf("paper id longer than %d bytes", MaxIDBytes)
	case !utf8.ValidString(id):
		return errors.New("paper id is not valid UTF-8")
	case strings.ContainsFunc(id, unicode.IsControl):
		return fmt.Errorf("paper id %q contains control characters", short(id))
	}
	return nil
}

// CheckSHA256 validates an expected digest and returns it in lowercase ("" stays "").
func CheckSHA256(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if len(s) != 64 {
		return "", fmt.Errorf("sha256 %q: want 64 hexadecimal digits", short(s))
	}
	if _, err := hex.DecodeString(s); err != nil {
		return "", fmt.Errorf("sha256 %q: not hexadecimal", short(s))
	}
	return strings.ToLower(s), nil
}

// checkMetadata enforces the metadata limits.
func checkMetadata(md map[string]string) error {
	if len(md) > MaxMetadata {
		return fmt.Errorf("%d metadata fields, at most %d allowed", len(md), MaxMetadata)
	}
	for k, v := range md {
		if k == "" || len(k) > MaxMetadataKeyBytes {
			return fmt.Errorf("metadata key %q: 1 to %d bytes", short(k), MaxMetadataKeyBytes)
		}
		if len(v) > MaxMetadataValueBytes {
			return fmt.Errorf("metadata %q: value longer than %d bytes", short(k), MaxMetadataValueBytes)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("metadata %q: not valid UTF-8", short(k))
		}
	}
	return nil
}

// URLID derives a stable paper id from a URL: the arXiv id for arxiv.org URLs, otherwise the
// last path segment without ".pdf" (reduced to letters, digits, '.', '_' and '-') followed by
// '-' and 8 hex digits of the URL's SHA-256, so that two URLs ending in the same name (".../pdf",
// ".../download") get different ids. "https://example.org/a/attention.pdf" gives
// "attention-" plus the hash.
func URLID(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		if id, ok := arxivIDFromURL(u); ok {
			return id
		}
		raw = u.String()
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
		return name + "-" + shortHash(raw)
	}
	return "url-" + shortHash(raw)
}

// sanitizeStem keeps ASCII letters, digits, '.', '_' and '-' (others become '_'), trims the
// separators at both ends and caps the length at 80 bytes.
func sanitizeStem(s string) string {
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

// shortHash is 8 hex digits of the SHA-256 of s.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:4])
}

// short abbreviates s for error messages.
func short(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
