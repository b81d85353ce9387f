package grpcserver

import (
	"context"
	"net"
	"net/netip"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// ForwardedClientKey is the metadata key with which an in-process client that acts for a remote
// one (the coordinator's HTTP face, calling through Local) names that client's address, as
// "IP:port" or "IP". The server honours it only on the connections of Local, which nothing
// outside the process can open: there the call's peer becomes that address, so the per-client
// limits (the rate limit, WatchBatch's watchers per client address) and the call logs see each
// HTTP client as itself rather than every HTTP client as one in-process peer. On any other
// connection the key is ignored. A value that is not one address leaves the peer as it is.
const ForwardedClientKey = "paperfetch-forwarded-client"

// inProcessAddr is the remote address of the connections of Local.
type inProcessAddr struct{}

func (inProcessAddr) Network() string { return "in-process" }
func (inProcessAddr) String() string  { return "in-process" }

// inProcessListener marks the connections it accepts as in-process (inProcessAddr).
type inProcessListener struct{ net.Listener }

func (l inProcessListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return inProcessConn{c}, nil
}

type inProcessConn struct{ net.Conn }

func (inProcessConn) RemoteAddr() net.Addr { return inProcessAddr{} }

// forwardedPeer returns ctx with the forwarded client as its peer when the call came over an
// in-process connection and names exactly one valid address.
func forwardedPeer(ctx context.Context) context.Context {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ctx
	}
	if _, local := p.Addr.(inProcessAddr); !local {
		return ctx
	}
	vals := metadata.ValueFromIncomingContext(ctx, ForwardedClientKey)
	if len(vals) != 1 {
		return ctx
	}
	ap, err := netip.ParseAddrPort(vals[0])
	if err != nil {
		ip, err := netip.ParseAddr(vals[0])
		if err != nil {
			return ctx
		}
		ap = netip.AddrPortFrom(ip, 0)
	}
	fwd := *p
	fwd.Addr = net.TCPAddrFromAddrPort(ap)
	return peer.NewContext(ctx, &fwd)
}

func forwardedUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(forwardedPeer(ctx), req)
}

func forwardedStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := forwardedPeer(ss.Context())
	if ctx == ss.Context() {
		return handler(srv, ss)
	}
	w := middleware.WrapServerStream(ss)
	w.WrappedContext = ctx
	return handler(srv, w)
}
