package grpcserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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

// roles are both servers: the coordinator (client API and gateway) and a fetcher
// (FetcherService); the connection limits apply to each.
var roles = []struct {
	name string
	role Role
}{{"coordinator", roleCoordinator}, {"fetcher", roleFetcher}}

// call makes one cheap call on conn: a health check (served on both roles, counted as a call
// by the idle timer).
func call(ctx context.Context, conn *grpc.ClientConn) error {
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	return err
}

// TestConnLimitsPerIPAndTotal: on both servers, connections beyond the per-IP limit are closed
// at once, a slot comes back when a connection closes, and --max-conns bounds the total.
func TestConnLimitsPerIPAndTotal(t *testing.T) {
	for _, r := range roles {
		t.Run(r.name, func(t *testing.T) {
			ts := startServer(t, r.role, "--max-conns-per-ip", "2", "--rate-limit", "0")
			c1, ok1 := openConn(t, ts.addr)
			_, ok2 := openConn(t, ts.addr)
			_, ok3 := openConn(t, ts.addr)
			if !ok1 || !ok2 || ok3 {
				t.Fatalf("accepted: %v %v %v, want the third refused", ok1, ok2, ok3)
			}
			_ = c1.Close()
			// The slot comes back once the server has seen the close; a call on a new
			// connection then works (the client retries refused connections by itself).
			conn := dial(t, ts.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := call(ctx, conn); err != nil {
				t.Fatalf("call after a slot was freed: %v", err)
			}

			total := startServer(t, r.role, "--max-conns", "1", "--rate-limit", "0")
			if _, ok := openConn(t, total.addr); !ok {
				t.Fatal("first connection refused")
			}
			if _, ok := openConn(t, total.addr); ok {
				t.Fatal("second connection accepted past --max-conns 1")
			}
		})
	}
}

// TestDefaultConnLimits: with default flags both servers refuse a peer's connection beyond
// DefaultMaxConnsPerIP (issue 10: 20,000 idle HTTP/2 connections were kept).
func TestDefaultConnLimits(t *testing.T) {
	if DefaultMaxConnsPerIP <= 0 || DefaultMaxConns <= 0 || DefaultMaxConnectionIdle <= 0 {
		t.Fatalf("defaults: %d conns, %d per IP, idle %v; want every limit on", DefaultMaxConns, DefaultMaxConnsPerIP, DefaultMaxConnectionIdle)
	}
	for _, r := range roles {
		t.Run(r.name, func(t *testing.T) {
			ts := startServer(t, r.role)
			for i := range DefaultMaxConnsPerIP {
				if _, ok := openConn(t, ts.addr); !ok {
					t.Fatalf("connection %d refused, want %d accepted", i+1, DefaultMaxConnsPerIP)
				}
			}
			if _, ok := openConn(t, ts.addr); ok {
				t.Fatalf("connection %d accepted past the default per-IP limit", DefaultMaxConnsPerIP+1)
			}
		})
	}
}

// TestMaxConnectionIdle: on both servers, a connection without calls is closed by the server
// (GOAWAY) after --max-connection-idle.
func TestMaxConnectionIdle(t *testing.T) {
	for _, r := range roles {
		t.Run(r.name, func(t *testing.T) {
			ts := startServer(t, r.role, "--max-connection-idle", "200ms", "--rate-limit", "0")
			conn := dial(t, ts.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := call(ctx, conn); err != nil {
				t.Fatal(err)
			}
			for s := conn.GetState(); s == connectivity.Ready; s = conn.GetState() {
				if !conn.WaitForStateChange(ctx, s) {
					t.Fatal("the idle connection was not closed within 10s")
				}
			}
		})
	}
}

// TestLimitConnsOfAnotherListener: Server.LimitConns bounds another listener of the process
// (the coordinator's HTTP port) with the server's limits, counted apart from the gRPC port's.
func TestLimitConnsOfAnotherListener(t *testing.T) {
	ts := startServer(t, roleCoordinator, "--max-conns-per-ip", "2", "--rate-limit", "0")
	lis := ts.srv.LimitConns(listen(t))
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(lis) }()
	t.Cleanup(func() { _ = hs.Close() })
	// The gRPC port's connections do not count against the HTTP port's.
	_, _ = openConn(t, ts.addr)
	_, _ = openConn(t, ts.addr)
	get := func() (net.Conn, bool) {
		t.Helper()
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return c, false
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		return c, err == nil && strings.HasPrefix(line, "HTTP/1.1 200")
	}
	_, ok1 := get()
	_, ok2 := get()
	_, ok3 := get()
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("HTTP connections accepted: %v %v %v, want the third refused", ok1, ok2, ok3)
	}
}
