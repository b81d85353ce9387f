package fetcher

import (
	"context"
	"fmt"
	"net"
	"net/netip"
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
// rebinding) to internal addresses and redirects to them are caught as well.
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
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64"},
	{netip.MustParsePrefix("fc00::/7"), "unique-local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "cloud metadata"},
}

// Prefixes whose addresses embed an IPv4 address.
var (
	nat64Prefix     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFourPrefix = netip.MustParsePrefix("2002::/16")
)

// check returns nil when addr may be contacted.
func (g *guard) check(addr netip.Addr) error {
	if g.allowAll {
		return nil
	}
	for _, p := range g.allow {
		if p.Contains(addr) || p.Contains(addr.Unmap()) {
			return nil
		}
	}
	a := addr.Unmap() // IPv4-mapped IPv6 (::ffff:10.0.0.1) is judged as IPv4
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
		case nat64Prefix.Contains(a):
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
func (g *guard) dialer(d *net.Dialer, lookup func(context.Context, string) ([]netip.Addr, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d.ControlContext = g.control
	if lookup == nil {
		return d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		if _, err := netip.ParseAddr(host); err == nil {
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
