package fetcher

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// forbiddenAddrError is a connection refused by the SSRF guard.
type forbiddenAddrError struct {
	addr netip.Addr
	why  string
}

func (e *forbiddenAddrError) Error() string {
	return fmt.Sprintf("refusing to connect to %s (%s address); see --allow-private-networks / --allow-cidr", e.addr, e.why)
}

// guard is the SSRF guard: it decides which resolved addresses the fetcher may connect to.
// It runs in the dialer's Control hook, after DNS resolution, so names resolving (or
// rebinding) to internal addresses and redirects to them are caught as well. Before that,
// the dialer reads the host of every connection (first URL, redirect, citation_pdf_url)
// the way browsers and C resolvers do, so numeric spellings of an address (2130706433,
// 0177.0.0.1, 0x7f.1, 127.1, a trailing dot) are judged as that address, never sent to DNS.
//
// Addresses with an IPv6 zone ([fe80::1%eth0], [::1%lo]) are refused unless
// --allow-private-networks is set or an --allow-cidr range contains the address; every
// other judgement is made on the address without its zone (netip.Prefix.Contains is false
// for any zoned address, which is how a zone used to slip past the blocked ranges).
type guard struct {
	allowAll bool
	allow    []netip.Prefix
}

// blockedRanges are the ranges refused by default, with a name for error messages.
var blockedRanges = []struct {
	p   netip.Prefix
	why string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified/this-network"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local/metadata"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible (deprecated)"},
	{netip.MustParsePrefix("100::/64"), "discard-only"},
	{netip.MustParsePrefix("2001::/32"), "Teredo"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64"},
	{netip.MustParsePrefix("fc00::/7"), "unique-local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "cloud metadata"},
}

// Prefixes whose addresses embed an IPv4 address in their last 32 bits (6to4 is separate).
var (
	nat64Prefix     = netip.MustParsePrefix("64:ff9b::/96")
	siitPrefix      = netip.MustParsePrefix("::ffff:0:0:0/96")
	sixToFourPrefix = netip.MustParsePrefix("2002::/16")
)

// check returns nil when addr may be contacted.
func (g *guard) check(addr netip.Addr) error {
	if g.allowAll {
		return nil
	}
	bare := addr.WithZone("") // Prefix.Contains is false for every zoned address
	for _, p := range g.allow {
		if p.Contains(bare) || p.Contains(bare.Unmap()) {
			return nil
		}
	}
	if addr.Zone() != "" {
		return &forbiddenAddrError{addr: addr, why: "zoned"}
	}
	a := bare.Unmap() // IPv4-mapped IPv6 (::ffff:10.0.0.1) is judged as IPv4
	if !a.IsValid() {
		return &forbiddenAddrError{addr: addr, why: "invalid"}
	}
	for _, b := range blockedRanges {
		if b.p.Contains(a) {
			return &forbiddenAddrError{addr: addr, why: b.why}
		}
	}
	// IPv4 embedded in NAT64 (64:ff9b::/96) or 6to4 (2002::/16) forms is judged as IPv4.
	if a.Is6() {
		b := a.As16()
		var v4 netip.Addr
		switch {
		case nat64Prefix.Contains(a), siitPrefix.Contains(a):
			v4 = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		case sixToFourPrefix.Contains(a):
			v4 = netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
		}
		if v4.IsValid() {
			if err := g.check(v4); err != nil {
				return &forbiddenAddrError{addr: addr, why: "embedded " + err.(*forbiddenAddrError).why}
			}
		}
	}
	return nil
}

// control is a net.Dialer ControlContext hook: it sees the resolved address being dialled.
func (g *guard) control(_ context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("guard: unexpected address %q on %s: %w", address, network, err)
	}
	return g.check(ap.Addr())
}

// dialer returns the DialContext function of the HTTP transport. lookup, when set, resolves
// host names instead of the system resolver; every address is checked again in control.
// A host that is an address in any spelling (see literalAddr) is judged and dialled as that
// address, without a lookup.
func (g *guard) dialer(d *net.Dialer, lookup func(context.Context, string) ([]netip.Addr, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d.ControlContext = g.control
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		ip, isIP, err := literalAddr(host)
		if err != nil {
			return nil, err
		}
		if isIP {
			if err := g.check(ip); err != nil {
				return nil, err
			}
			return d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		}
		if lookup == nil {
			return d.DialContext(ctx, network, addr)
		}
		ips, err := lookup(ctx, host)
		if err != nil {
			return nil, &net.DNSError{Err: err.Error(), Name: host, IsNotFound: true}
		}
		var firstErr error
		for _, ip := range ips {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			if firstErr == nil {
				firstErr = err
			}
		}
		if firstErr == nil {
			firstErr = &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
		return nil, firstErr
	}
}

// literalAddr reports whether host (as the HTTP transport dials it: IDNA-mapped, brackets
// removed) denotes an address rather than a name, and which. It accepts what C resolvers
// and browsers accept (the WHATWG URL host rules): an IP literal, with a zone for IPv6; and
// a host whose last label is a number is IPv4 in inet_aton form (1 to 4 parts, each
// decimal, octal with a leading 0, or hexadecimal with 0x), with one trailing dot allowed.
// Such a host that is not a valid address, and a zone on anything but an IPv6 literal, is
// a badURLError: no resolver gets to interpret it.
func literalAddr(host string) (netip.Addr, bool, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, true, nil
	}
	if strings.Contains(host, "%") {
		return netip.Addr{}, false, &badURLError{msg: fmt.Sprintf("host %q has a zone but is not an IPv6 address", host)}
	}
	parts := strings.Split(host, ".")
	if len(parts) > 1 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1] // one trailing dot
	}
	if _, ok := ipv4Number(parts[len(parts)-1]); !ok && !allDigits(parts[len(parts)-1]) {
		return netip.Addr{}, false, nil // a name
	}
	a, ok := inetAton(parts)
	if !ok {
		return netip.Addr{}, false, &badURLError{msg: fmt.Sprintf("host %q ends in a number but is not an IPv4 address", host)}
	}
	return a, true, nil
}

// inetAton parses the dot-separated parts of a numeric IPv4 host (the last part fills the
// remaining bytes: "127.1" is 127.0.0.1, "2130706433" is 127.0.0.1).
func inetAton(parts []string) (netip.Addr, bool) {
	if len(parts) == 0 || len(parts) > 4 {
		return netip.Addr{}, false
	}
	var v uint64
	for i, p := range parts {
		n, ok := ipv4Number(p)
		if !ok {
			return netip.Addr{}, false
		}
		if i < len(parts)-1 {
			if n > 255 {
				return netip.Addr{}, false
			}
			v |= n << (8 * (3 - i))
			continue
		}
		if n >= 1<<(8*(4-i)) {
			return netip.Addr{}, false
		}
		v |= n
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// ipv4Number parses one part of a numeric IPv4 host: 0x/0X hexadecimal (possibly empty),
// leading-zero octal, or decimal.
func ipv4Number(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := 10
	switch {
	case len(s) >= 2 && (s[:2] == "0x" || s[:2] == "0X"):
		s, base = s[2:], 16
		if s == "" {
			return 0, true
		}
	case len(s) >= 2 && s[0] == '0':
		s, base = s[1:], 8
	}
	n, err := strconv.ParseUint(s, base, 64)
	if err != nil || strings.ContainsAny(s, "+-_") {
		return 0, false
	}
	return n, true
}

func allDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
