package main

import (
	"errors"
	"flag"
	"net/netip"
	"strings"
	"testing"
)

// TestFlags checks that every flag set registers without clashes and that bad values are
// reported before anything is started.
func TestFlags(t *testing.T) {
	if err := run([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if err := run([]string{"--log-level", "loud"}); err == nil || !strings.Contains(err.Error(), "log-level") {
		t.Fatalf("bad log level: %v", err)
	}
	if err := run([]string{"--blob", "gs://nope", "--log-level", "error"}); err == nil {
		t.Fatal("unsupported blob URL accepted")
	}
}

// TestDefaultListenIsLoopback: FetcherService is not open on every interface by default
// (issue 10: it was, making every fetcher a download proxy for anyone reaching it).
func TestDefaultListenIsLoopback(t *testing.T) {
	ap, err := netip.ParseAddrPort(defaultListen)
	if err != nil || !ap.Addr().IsLoopback() {
		t.Fatalf("default --listen %q is not a loopback address (%v)", defaultListen, err)
	}
}
