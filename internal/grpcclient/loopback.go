package grpcclient

import (
	"net"
	"net/netip"
	"strings"
)

// IsLoopback reports whether a gRPC target names this machine: localhost, a loopback IP
// address, or a unix socket. Schemes such as "dns:///" and "passthrough:///" are understood.
func IsLoopback(target string) bool {
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
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Unmap().IsLoopback()
}
