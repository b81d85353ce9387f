package main

import (
	"errors"
	"flag"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/paperfetch/paperfetch/internal/flagenv"
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
	// Invalid values are usage errors (exit status 2) naming the field and its flag, found
	// before anything is started (a negative heartbeat interval used to panic in Run).
	dir := t.TempDir()
	blob := "file://" + dir + "/blobs"
	for _, tc := range []struct{ arg, want string }{
		{"--heartbeat-interval=-1s", "Config.HeartbeatInterval (--heartbeat-interval) must be positive"},
		{"--slots=0", "Config.Slots (--slots)"},
		{"--max-fetch-calls=-1", "Config.MaxFetchCalls (--max-fetch-calls)"},
		{"--reconnect-max=1ms", "Config.ReconnectMax (--reconnect-max)"},
		{"--timeout=0s", "Config.Timeout (--timeout)"},
		{"--stall-timeout=-5s", "Config.StallTimeout (--stall-timeout)"},
		{"--max-size=-1", "Config.MaxSize (--max-size)"},
		{"--spool-max-age=0s", "Config.SpoolMaxAge (--spool-max-age)"},
		{"--resume-min-bytes=-1", "Config.ResumeMinBytes (--resume-min-bytes)"},
		{"--drain-grace=-1s", "Config.DrainGrace (--drain-grace)"},
		{"--id=two words", "Config.ID (--id)"},
		{"--slots=many", "invalid value"},
		{"--blob-sync=fsync", "want per-file or group"},
	} {
		err := run([]string{"--blob", blob, "--log-level", "error", "--listen", "127.0.0.1:0", tc.arg})
		if err == nil || !strings.Contains(err.Error(), tc.want) || flagenv.ExitCode(err) != flagenv.ExitUsage {
			t.Errorf("%s: %v (exit %d)", tc.arg, err, flagenv.ExitCode(err))
		}
	}
	// The environment sets it too (PAPERFETCH_BLOB_SYNC), checked as strictly.
	t.Setenv("PAPERFETCH_BLOB_SYNC", "fsync")
	err := run([]string{"--blob", blob, "--log-level", "error", "--listen", "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "PAPERFETCH_BLOB_SYNC") || flagenv.ExitCode(err) != flagenv.ExitUsage {
		t.Errorf("PAPERFETCH_BLOB_SYNC=fsync: %v (exit %d)", err, flagenv.ExitCode(err))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a bad flag created %v", entries)
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
