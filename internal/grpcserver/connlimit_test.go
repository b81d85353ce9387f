package grpcserver

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// openConn opens a raw TCP connection and reports whether the server keeps it open: it writes
// the HTTP/2 preface and reads; a refused connection reads EOF (or a reset) at once, an
// accepted one gets the server's SETTINGS frame.
func openConn(t *testing.T, addr string) (net.Conn, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"); err != nil {
		return c, false
	}
	var b [9]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("no answer from the server: %v", err)
		}
		return c, false
	}
	return c, true
}

// TestConnLimitsPerIPAndTotal: connections beyond the per-IP limit are closed at once, and a
// slot comes back when a connection closes.
func TestConnLimitsPerIPAndTotal(t *testing.T) {
	ts := startCoordinator(t, "--max-conns-per-ip", "2", "--rate-limit", "0")
	c1, ok1 := openConn(t, ts.addr)
	_, ok2 := openConn(t, ts.addr)
	_, ok3 := openConn(t, ts.addr)
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("accepted: %v %v %v, want the third refused", ok1, ok2, ok3)
	}
	_ = c1.Close()
	// The slot comes back once the server has seen the close; a call on a new connection
	// then works (the client retries refused connections by itself).
	conn := dial(t, ts.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pb.NewCoordinatorServiceClient(conn).GetBatch(ctx, &pb.GetBatchRequest{BatchId: "b"}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("call after a slot was freed: %v", err)
	}

	total := startCoordinator(t, "--max-conns", "1", "--rate-limit", "0")
	if _, ok := openConn(t, total.addr); !ok {
		t.Fatal("first connection refused")
	}
	if _, ok := openConn(t, total.addr); ok {
		t.Fatal("second connection accepted past --max-conns 1")
	}
}

// TestMaxConnectionIdle: a connection without calls is closed by the server (GOAWAY) after
// --max-connection-idle.
func TestMaxConnectionIdle(t *testing.T) {
	ts := startCoordinator(t, "--max-connection-idle", "200ms", "--rate-limit", "0")
	conn := dial(t, ts.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pb.NewCoordinatorServiceClient(conn).GetBatch(ctx, &pb.GetBatchRequest{BatchId: "b"}); err != nil {
		t.Fatal(err)
	}
	for s := conn.GetState(); s == connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			t.Fatal("the idle connection was not closed within 10s")
		}
	}
}
