package grpcserver

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// One client exhausting its rate does not starve another, and its rejection says when to
// retry (issue 13, item 5).
func TestRateLimitIsPerClientWithRetryInfo(t *testing.T) {
	dir := t.TempDir()
	ts := startCoordinator(t, "--rate-limit", "0.001", "--rate-burst", "3",
		"--tokens", writeFile(t, dir, "tokens", "greedy\npolite\n"))
	c := pb.NewCoordinatorServiceClient(dial(t, ts.addr))
	greedy, polite := withToken(t.Context(), "greedy"), withToken(t.Context(), "polite")
	for i := range 3 {
		if _, err := c.GetBatch(greedy, &pb.GetBatchRequest{BatchId: "b"}); err != nil {
			t.Fatalf("greedy call %d within the burst: %v", i, err)
		}
	}
	_, err := c.GetBatch(greedy, &pb.GetBatchRequest{BatchId: "b"})
	wantCode(t, "greedy call beyond the burst", err, codes.ResourceExhausted)
	var ri *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		if x, ok := d.(*errdetails.RetryInfo); ok {
			ri = x
		}
	}
	// 0.001 calls per second: the next token is ~1000 s away.
	if ri == nil || ri.GetRetryDelay().AsDuration() < 900*time.Second {
		t.Fatalf("RetryInfo = %v, want a delay of ~1000s", ri)
	}
	// The other client still has its whole burst.
	for i := range 3 {
		if _, err := c.GetBatch(polite, &pb.GetBatchRequest{BatchId: "b"}); err != nil {
			t.Fatalf("polite call %d: %v", i, err)
		}
	}
}

func TestClientLimiterKeysAndBound(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newClientLimiter(1, 1, func() time.Time { return now })
	at := func(addr string) context.Context {
		return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(addr), Port: 5000}})
	}
	if err := l.allow(at("127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	// Another port of the same address is the same client.
	other := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 6000}})
	if err := l.allow(other); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("same address, other port: %v", err)
	}
	if err := l.allow(at("::1")); err != nil {
		t.Fatalf("another address: %v", err)
	}
	// A flood of distinct addresses does not grow the table beyond its bound.
	for i := range maxRateClients + 100 {
		ip := net.IPv4(10, byte(i>>16), byte(i>>8), byte(i))
		_ = l.allow(at(ip.String()))
	}
	if n := len(l.buckets); n > maxRateClients {
		t.Fatalf("%d buckets, bound %d", n, maxRateClients)
	}
	// Once idle buckets refill they make room for new clients.
	now = now.Add(time.Hour)
	if err := l.allow(at("192.0.2.1")); err != nil {
		t.Fatalf("new client after the others idled: %v", err)
	}
	if _, ok := l.buckets["addr:192.0.2.1"]; !ok {
		t.Fatal("new client did not get its own bucket")
	}
}
