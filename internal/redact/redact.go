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

// urlRE finds http(s) URLs inside free text (error messages quote them).
var urlRE = regexp.MustCompile(`(?i)https?://[^\s"'<>` + "`" + `]+`)

// Text redacts every http(s) URL in s (see URL).
func Text(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return urlRE.ReplaceAllStringFunc(s, URL)
}
