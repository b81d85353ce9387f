package main

import (
	"errors"
	"flag"
	"strings"
	"testing"
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
	t.Setenv("PAPERFETCH_PER_HOST_CONCURRENCY", "many")
	if err := run(nil); err == nil || !strings.Contains(err.Error(), "PAPERFETCH_PER_HOST_CONCURRENCY") {
		t.Fatalf("bad environment variable: %v", err)
	}
}
