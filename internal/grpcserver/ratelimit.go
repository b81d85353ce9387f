package grpcserver

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/paperfetch/paperfetch/internal/auth"
)

// maxRateClients bounds the clients whose token buckets are remembered. Beyond it, buckets
// that are full again (their clients idle) are forgotten; when none is, new clients share one
// overflow bucket, so a flood of distinct addresses cannot grow memory.
const maxRateClients = 10_000

// clientLimiter is a token bucket per client: the authenticated identity (token digest or
// certificate name) when there is one, else the peer's IP address. One client exhausting its
// bucket does not slow the others down. A rejection is RESOURCE_EXHAUSTED with a
// google.rpc.RetryInfo saying when the next call would be accepted.
type clientLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu       sync.Mutex
	buckets  map[string]*rate.Limiter
	overflow *rate.Limiter
}

func newClientLimiter(perSecond float64, burst int, now func() time.Time) *clientLimiter {
	return &clientLimiter{
		limit: rate.Limit(perSecond), burst: burst, now: now,
		buckets:  make(map[string]*rate.Limiter),
		overflow: rate.NewLimiter(rate.Limit(perSecond), burst),
	}
}

// clientKey names the caller of ctx for rate limiting.
func clientKey(ctx context.Context) string {
	if id, ok := auth.IdentityFrom(ctx); ok && id.Subject != "" {
		return id.Method + ":" + id.Subject
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr := p.Addr.String()
		if host, _, err := net.SplitHostPort(addr); err == nil {
			return "addr:" + host
		}
		return "addr:" + addr
	}
	return "unknown"
}

// bucket returns the client's bucket, creating it (within maxRateClients).
func (l *clientLimiter) bucket(key string, now time.Time) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.buckets[key]; ok {
		return b
	}
	if len(l.buckets) >= maxRateClients {
		for k, b := range l.buckets {
			if b.TokensAt(now) >= float64(l.burst) {
				delete(l.buckets, k)
			}
		}
		if len(l.buckets) >= maxRateClients {
			return l.overflow
		}
	}
	b := rate.NewLimiter(l.limit, l.burst)
	l.buckets[key] = b
	return b
}

// allow takes a token from the caller's bucket, or returns the RESOURCE_EXHAUSTED status
// to answer with.
func (l *clientLimiter) allow(ctx context.Context) error {
	now := l.now()
	key := clientKey(ctx)
	r := l.bucket(key, now).ReserveN(now, 1)
	delay := time.Duration(0)
	if !r.OK() {
		delay = time.Second
	} else if delay = r.DelayFrom(now); delay == 0 {
		return nil
	}
	r.CancelAt(now)
	delay = max(delay, time.Millisecond)
	st := status.New(codes.ResourceExhausted, fmt.Sprintf("rate limit of %g calls per second (burst %d) exceeded for this client; retry in %s", float64(l.limit), l.burst, delay.Round(time.Millisecond)))
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)}); err == nil {
		st = d
	}
	return st.Err()
}

// unary is the unary interceptor.
func (l *clientLimiter) unary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := l.allow(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// stream is the stream interceptor (one token per stream).
func (l *clientLimiter) stream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := l.allow(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}
