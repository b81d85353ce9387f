package grpcserver

import (
	"net"
	"net/netip"
	"sync"
)

// Connection limits of a server (Config.MaxConns, MaxConnsPerIP, MaxConnectionIdle).
const (
	// DefaultMaxConns bounds the open connections of one server.
	DefaultMaxConns = 10000
	// DefaultMaxConnsPerIP bounds the open connections from one peer IP address.
	DefaultMaxConnsPerIP = 256
)

// connLimitListener enforces connection limits at Accept: a connection beyond maxTotal open
// connections, or beyond maxPerIP open connections from its peer's IP address, is closed as
// soon as it is accepted (before any TLS or HTTP/2 work), and the listener keeps accepting.
type connLimitListener struct {
	net.Listener
	maxTotal, maxPerIP int
	refused            func(ip netip.Addr, limit string)

	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int // entries are removed at zero: at most maxTotal of them
}

// limitConns wraps lis; a limit <= 0 is no limit. refused, when set, is told of every refusal.
func limitConns(lis net.Listener, maxTotal, maxPerIP int, refused func(ip netip.Addr, limit string)) net.Listener {
	if maxTotal <= 0 && maxPerIP <= 0 {
		return lis
	}
	return &connLimitListener{Listener: lis, maxTotal: maxTotal, maxPerIP: maxPerIP, refused: refused, perIP: map[netip.Addr]int{}}
}

// peerIP is the IP address of a TCP peer, the zero Addr for anything else.
func peerIP(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(t.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// Accept returns the next connection within the limits.
func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := peerIP(c.RemoteAddr())
		l.mu.Lock()
		limit := ""
		switch {
		case l.maxTotal > 0 && l.total >= l.maxTotal:
			limit = "total"
		case l.maxPerIP > 0 && l.perIP[ip] >= l.maxPerIP:
			limit = "per_ip"
		default:
			l.total++
			l.perIP[ip]++
		}
		l.mu.Unlock()
		if limit != "" {
			_ = c.Close()
			if l.refused != nil {
				l.refused(ip, limit)
			}
			continue
		}
		return &limitedConn{Conn: c, l: l, ip: ip}, nil
	}
}

func (l *connLimitListener) release(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
}

// limitedConn gives its slot back when closed (once).
type limitedConn struct {
	net.Conn
	l    *connLimitListener
	ip   netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}
