package grpcclient

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"
)

// localhostLookupTimeout bounds the resolution of a *.localhost name by IsLoopback.
const localhostLookupTimeout = 2 * time.Second

// IsLoopback reports whether a gRPC target names this machine: "localhost", a loopback IP
// address, a unix socket, or a name under .localhost that resolves only to loopback
// addresses (Go's resolver asks DNS for such names, which may answer anything). Schemes such
// as "dns:///" and "passthrough:///" are understood.
func IsLoopback(target string) bool {
	return isLoopback(target, func(host string) ([]netip.Addr, error) {
		ctx, cancel := context.WithTimeout(context.Background(), localhostLookupTimeout)
		defer cancel()
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	})
}

// isLoopback is IsLoopback with the resolver of *.localhost names injected.
func isLoopback(target string, lookup func(host string) ([]netip.Addr, error)) bool {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return true
	}
	if i := strings.Index(target, ":///"); i >= 0 {
		target = target[i+len(":///"):]
	} else if strings.HasPrefix(target, "dns://") {
		// dns://authority/host:port
		rest := strings.TrimPrefix(target, "dns://")
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			target = rest[j+1:]
		}
	}
	host := target
	if h, _, err := net.SplitHostPort(target); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	if strings.HasSuffix(strings.ToLower(strings.TrimSuffix(host, ".")), ".localhost") {
		addrs, err := lookup(host)
		if err != nil || len(addrs) == 0 {
			return false
		}
		for _, a := range addrs {
			if !a.Unmap().IsLoopback() {
				return false
			}
		}
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Unmap().IsLoopback()
}
