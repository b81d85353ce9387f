package fetcher

import (
	"errors"
	"fmt"
	"net/netip"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/paperfetch/paperfetch/internal/redact"
)

// Going through a proxy (Config.Proxy).
//
// Two kinds of proxy give institutional access to papers:
//
//   - an HTTP(S) forward proxy ("http://proxy.example.edu:3128"): every request is sent to it
//     (CONNECT for https targets), and it connects to the origin;
//   - a rewriting proxy such as EZproxy ("https://ezproxy.example.edu/login?url="): the target URL
//     is appended to the prefix, and the proxy fetches it (usually with a session cookie given
//     with Config.Headers).
//
// What the SSRF guard can check through a proxy: the proxy's own address (it is dialled like any
// origin, so a proxy on a loopback or private address must be allowed explicitly with
// AllowCIDRs or AllowPrivateNetworks), and every target or redirect URL whose host is an address
// literal or "localhost" (refused when forbidden, as without a proxy). What it cannot check: the
// addresses that the proxy resolves target names to; keeping the proxy from reaching internal
// services is the proxy's job.

// ProxyMode tells how a proxy URL is used.
type ProxyMode int

const (
	// ProxyNone: direct connections.
	ProxyNone ProxyMode = iota
	// ProxyForward: an HTTP(S) forward proxy.
	ProxyForward
	// ProxyPrefix: a rewriting proxy; the target URL is appended to the proxy URL.
	ProxyPrefix
)

// ParseProxy parses a --proxy value: "http(s)://host[:port]" (nothing after the host) is a
// forward proxy; a URL with a path or a query ("https://ezproxy.example.edu/login?url=") is a
// rewriting prefix. Credentials in the URL are refused (give them with a header).
func ParseProxy(raw string) (*url.URL, ProxyMode, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		// url.Error quotes the whole value, password included: name only what is wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, ProxyNone, fmt.Errorf("proxy: not a valid URL: %w", err)
	}
	// Shown without its credentials nor the values of token-like query parameters (a rewriting
	// prefix may carry a key).
	switch shown := redact.URL(u.String()); {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, ProxyNone, fmt.Errorf("proxy %q: want an http:// or https:// URL", shown)
	case u.Host == "":
		return nil, ProxyNone, fmt.Errorf("proxy %q has no host", shown)
	case u.User != nil:
		return nil, ProxyNone, fmt.Errorf("proxy %q: credentials in the URL are not accepted; use a Proxy-Authorization or Cookie header", shown)
	}
	if (u.Path == "" || u.Path == "/") && u.RawQuery == "" && u.Fragment == "" {
		return u, ProxyForward, nil
	}
	return u, ProxyPrefix, nil
}

// forbiddenHeaders are the request headers a user may not set: the transport or the download
// owns them.
var forbiddenHeaders = map[string]bool{
	"Host": true, "Range": true, "If-Range": true, "Content-Length": true, "Transfer-Encoding": true,
	"Connection": true, "Upgrade": true, "Te": true, "Trailer": true, "Accept-Encoding": true, "Keep-Alive": true,
}

// MaxHeaders bounds the extra request headers, and MaxHeaderBytes each one.
const (
	MaxHeaders     = 32
	MaxHeaderBytes = 8 << 10
)

// ParseHeader parses a --header value "Name: value" (the name an HTTP token, the value without
// control characters).
func ParseHeader(raw string) (string, string, error) {
	if len(raw) > MaxHeaderBytes {
		return "", "", fmt.Errorf("header is longer than %d bytes", MaxHeaderBytes)
	}
	name, value, ok := strings.Cut(raw, ":")
	name, value = strings.TrimSpace(name), strings.TrimSpace(value)
	if !ok || name == "" {
		return "", "", fmt.Errorf("header %q: want \"Name: value\"", raw)
	}
	for _, c := range name {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", c) {
			return "", "", fmt.Errorf("header name %q is not a valid HTTP token", name)
		}
	}
	for _, c := range value {
		if c < ' ' && c != '\t' || c == 0x7f {
			return "", "", fmt.Errorf("header %s: the value has a control character", name)
		}
	}
	name = textproto.CanonicalMIMEHeaderKey(name)
	if forbiddenHeaders[name] {
		return "", "", fmt.Errorf("header %s is set by paperfetch itself", name)
	}
	return name, value, nil
}

// proxied rewrites a target URL for a rewriting proxy (ProxyPrefix), else returns it as is.
func (c *Config) proxied(target *url.URL) (*url.URL, error) {
	if c.ProxyMode != ProxyPrefix || c.Proxy == nil {
		return target, nil
	}
	u, err := url.Parse(c.Proxy.String() + target.String())
	if err != nil {
		return nil, &badURLError{msg: fmt.Sprintf("proxy prefix: %v", err)}
	}
	return u, nil
}

// checkProxiedTarget applies what the guard can check of a URL fetched through a proxy: an
// address literal or "localhost" as its host.
func (g *guard) checkProxiedTarget(u *url.URL) error {
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		if g.allowAll {
			return nil
		}
		return &forbiddenAddrError{addr: netip.AddrFrom4([4]byte{127, 0, 0, 1}), why: "localhost"}
	}
	addr, isAddr, err := literalAddr(host)
	if err != nil {
		return err
	}
	if isAddr {
		return g.check(addr)
	}
	return nil
}

// proxyConfig returns cfg when downloads go through a proxy, else nil.
func proxyConfig(cfg *Config) *Config {
	if cfg.Proxy == nil || cfg.ProxyMode == ProxyNone {
		return nil
	}
	return cfg
}
