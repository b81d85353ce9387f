// Package redact removes secrets from URLs before they are logged or shown to other clients:
// credentials, fragments and the values of query parameters that carry signatures, tokens
// or keys (pre-signed S3/GCS URLs, API keys).
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// Placeholder replaces a redacted value.
const Placeholder = "REDACTED"

// sensitiveExact are parameter names (lower case) whose values are always redacted.
var sensitiveExact = map[string]bool{
	"sig": true, "signature": true, "key": true, "code": true, "auth": true, "sid": true,
	"session": true, "pass": true, "pwd": true, "jwt": true, "hmac": true, "hash": true,
	"policy": true, "credential": true, "credentials": true,
}

// sensitiveParts: a parameter whose lower-case name contains one of these is redacted
// (X-Amz-Signature, X-Amz-Credential, X-Goog-Signature, access_token, api_key, client_secret…).
var sensitiveParts = []string{"token", "secret", "signature", "password", "passwd", "apikey", "api_key", "api-key", "x-amz-", "x-goog-", "credential", "session"}

// Sensitive reports whether the values of query parameter name are redacted.
func Sensitive(name string) bool {
	n := strings.ToLower(name)
	if sensitiveExact[n] {
		return true
	}
	for _, p := range sensitiveParts {
		if strings.Contains(n, p) {
			return true
		}
	}
	return false
}

// URL returns raw without user credentials and fragment, and with the value of every
// sensitive query parameter (see Sensitive) replaced by Placeholder; other parameters and
// their order are kept. A string that does not parse as a URL is returned with everything
// after its first '?' or '#' redacted.
func URL(raw string) string {
	if plain(raw) {
		return raw // nothing to redact, and parsing and printing it gives it back unchanged
	}
	return parsed(raw)
}

// parsed is URL for every string, through url.Parse.
func parsed(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			return raw[:i] + "?" + Placeholder
		}
		return raw
	}
	u.User = nil
	u.Fragment, u.RawFragment = "", ""
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		for i, p := range parts {
			k, _, hasValue := strings.Cut(p, "=")
			name, err := url.QueryUnescape(k)
			if err != nil {
				name = k
			}
			if hasValue && Sensitive(name) {
				parts[i] = k + "=" + Placeholder
			}
		}
		u.RawQuery = strings.Join(parts, "&")
	}
	return u.String()
}

// plain reports whether raw is an http(s) URL of a host of letters, digits, "." and "-" (and
// a port of digits), a path of letters, digits and "-._~/:", and an optional query of those, "=" and "&" whose parameters are
// not sensitive: no user info, fragment or query value to redact, and nothing url.Parse
// would change when printed again (no escapes, no characters it would escape). URL returns
// such a URL without parsing it (the coordinator redacts the final URL of every download).
func plain(raw string) bool {
	rest, ok := strings.CutPrefix(raw, "https://")
	if !ok {
		rest, ok = strings.CutPrefix(raw, "http://")
	}
	if !ok {
		return false
	}
	// A host that url.Parse accepts (it fails on a bad port, and a failed parse redacts the
	// whole query): letters, digits, "." and "-", then an optional port of digits.
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	host, port, hasPort := strings.Cut(rest[:end], ":")
	if host == "" || (hasPort && port == "") {
		return false
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	for i := 0; i < len(port); i++ {
		if c := port[i]; c < '0' || c > '9' {
			return false
		}
	}
	for i := end; i < len(rest); i++ {
		switch c := rest[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '/', c == ':':
		case c == '?':
			return plainQuery(rest[i+1:])
		default:
			return false
		}
	}
	return true
}

// plainQuery reports whether q is a query of letters, digits and "-._~=&" without a sensitive
// parameter.
func plainQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		switch c := q[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '=', c == '&':
		default:
			return false
		}
	}
	for p := range strings.SplitSeq(q, "&") {
		if name, _, hasValue := strings.Cut(p, "="); hasValue && Sensitive(name) {
			return false
		}
	}
	return true
}

// urlRE finds http(s) URLs inside free text (error messages quote them).
var urlRE = regexp.MustCompile(`(?i)https?://[^\s"'<>` + "`" + `]+`)

// Text redacts every http(s) URL in s (see URL).
func Text(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlRE.ReplaceAllStringFunc(s, URL)
}
