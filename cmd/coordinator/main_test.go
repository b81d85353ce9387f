package main

import (
	"errors"
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/paperfetch/paperfetch/internal/flagenv"
)

// TestFlags checks that every flag set registers without clashes and that bad values are
// reported before anything is opened.
func TestFlags(t *testing.T) {
	if err := run([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if err := run([]string{"--log-level", "loud"}); err == nil || !strings.Contains(err.Error(), "log-level") {
		t.Fatalf("bad log level: %v", err)
	}
	// Invalid values are usage errors (exit status 2) naming the field and its flag, found
	// before anything is opened.
	dir := t.TempDir()
	for _, tc := range []struct{ arg, want string }{
		{"--per-host-delay=-1s", "Config.PerHostDelay (--per-host-delay) must not be negative"},
		{"--max-attempts=0", "Config.MaxAttempts (--max-attempts)"},
		{"--max-attempts=5000", "Config.MaxAttempts (--max-attempts)"},
		{"--lease-ttl=0s", "Config.LeaseTTL (--lease-ttl)"},
		{"--reconnect-grace=-1s", "Config.ReconnectGrace (--reconnect-grace)"},
		{"--breaker-max-cooldown=1s", "Config.BreakerMaxCooldown (--breaker-max-cooldown)"},
		{"--download-timeout=-1m", "Config.Limits.Timeout (--download-timeout)"},
		{"--host-limit=a.example=/0", "host limit"},
		{"--doi-base=ftp://x", "--doi-base must be an http(s) URL"},
		{"--bogus", "flag provided but not defined"},
	} {
		err := run([]string{"--data", dir, "--log-level", "error", tc.arg})
		if err == nil || !strings.Contains(err.Error(), tc.want) || flagenv.ExitCode(err) != flagenv.ExitUsage {
			t.Errorf("%s: %v (exit %d)", tc.arg, err, flagenv.ExitCode(err))
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a bad flag created %v", entries)
	}
	t.Setenv("PAPERFETCH_PER_HOST_CONCURRENCY", "many")
	if err := run(nil); err == nil || !strings.Contains(err.Error(), "PAPERFETCH_PER_HOST_CONCURRENCY") || flagenv.ExitCode(err) != flagenv.ExitUsage {
		t.Fatalf("bad environment variable: %v", err)
	}
}
