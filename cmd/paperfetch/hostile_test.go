package main_test

import (
	"path/filepath"
	"strings"
	"testing"
)

// Hostile --proxy and --header values are refused as usage errors (exit 2) before anything
// starts: control characters (a header or request-line injection; a NUL cannot be in an argument), credentials in the proxy
// URL, another scheme, no host, one header too many. Every address is 127.0.0.1, so nothing
// leaves the machine even if a value were accepted.
func TestHostileProxyAndHeader(t *testing.T) {
	out := t.TempDir()
	base := []string{"get", "--out", filepath.Join(out, "o"), "--arxiv-base", "http://127.0.0.1:1", "--retries", "1"}
	many := []string{}
	for range 33 {
		many = append(many, "--header", "X-Same: v")
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"proxy CRLF", []string{"--proxy", "http://127.0.0.1:1/\r\nX-Evil: 1"}, "proxy"},
		{"proxy credentials", []string{"--proxy", "http://u:secret@127.0.0.1:1"}, "credentials"},
		{"proxy scheme", []string{"--proxy", "file:///etc/passwd"}, "http"},
		{"proxy no host", []string{"--proxy", "http:///x"}, "host"},
		{"header CRLF", []string{"--header", "X-A: v\r\nHost: evil"}, "control character"},
		{"header LF in name", []string{"--header", "X\nY: v"}, "token"},
		{"header forbidden", []string{"--header", "Host: 127.0.0.1"}, "set by paperfetch"},
		{"header too long", []string{"--header", "X-A: " + strings.Repeat("v", 9000)}, "longer than"},
		{"headers too many", many, "at most 32"},
	} {
		res := run(t, "", append(append(base, c.args...), "2301.00001")...)
		if res.code != 2 || !strings.Contains(res.stderr, c.want) {
			t.Errorf("%s: exit %d, stderr %q (want 2 and %q)", c.name, res.code, res.stderr, c.want)
		}
		if strings.Contains(res.stderr, "secret") {
			t.Errorf("%s: the proxy password is echoed: %q", c.name, res.stderr)
		}
	}
}
