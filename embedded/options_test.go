package embedded_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paperfetch/paperfetch/embedded"
	"github.com/paperfetch/paperfetch/fetcher"
	"github.com/paperfetch/paperfetch/internal/grpcserver"
)

// --header: a value with CR, LF or NUL (a header injection) is refused, and the bound is on the
// values, so one name repeated cannot grow the headers without end.
func TestHeaderFlag(t *testing.T) {
	var h http.Header
	set := embedded.HeaderFlag(&h)
	for _, bad := range []string{"X-A: v\r\nHost: evil", "X-A: v\nX-B: w", "X-A: v\x00", "X\r\nY: v", "Host: x", "no colon", strings.Repeat("X", fetcher.MaxHeaderBytes+1) + ": v"} {
		if err := set(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if len(h) != 0 {
		t.Fatalf("refused values were kept: %v", h)
	}
	for i := range fetcher.MaxHeaders {
		if err := set("X-Same: v" + strings.Repeat("x", i)); err != nil {
			t.Fatalf("header %d: %v", i, err)
		}
	}
	if err := set("X-Same: one too many"); err == nil {
		t.Fatalf("header %d accepted: %d values", fetcher.MaxHeaders+1, len(h["X-Same"]))
	}
}

// The dashboard's port has the gRPC port's connection limits, as in the coordinator binary:
// its event streams hold connections, and `get --dashboard 0.0.0.0:PORT` may be reachable
// from other machines. The connection past grpcserver.DefaultMaxConnsPerIP from one address
// is closed at once.
func TestDashboardConnsLimited(t *testing.T) {
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := testOptions(t.TempDir(), nil)
	o.HTTPListener = hl
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sys, err := embedded.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range grpcserver.DefaultMaxConnsPerIP + 1 {
		c, err := net.Dial("tcp", hl.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	last := conns[len(conns)-1]
	_ = last.SetReadDeadline(time.Now().Add(10 * time.Second)) // a failure bound
	if _, err := last.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connection %d from one address: %v, want it closed", len(conns), err)
	}
}
