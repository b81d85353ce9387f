package main

import (
	"errors"
	"flag"
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
