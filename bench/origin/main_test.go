package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paperfetch/paperfetch/bench/originlib"
)

func TestList(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"--list", "2", "--base", "http://127.0.0.1:8080/", "--size", "100", "--query", "latency=1ms"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	want := "http://127.0.0.1:8080/pdf/0?latency=1ms&size=100\nhttp://127.0.0.1:8080/pdf/1?latency=1ms&size=100\n"
	if out.String() != want {
		t.Errorf("list = %q, want %q", out.String(), want)
	}
	if err := run([]string{"--list", "2", "--base", "ftp://x"}, &out, &out); err == nil {
		t.Error("--base ftp://x accepted")
	}
}

func TestSHA256(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"--sha256", "1", "--size", "65536"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out.String()); got != originlib.SHA256(1, 65536) {
		t.Errorf("--sha256 printed %q", got)
	}
}

func TestServeRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "localhost:0", "10.0.0.1:0"} {
		if err := serve(t.Context(), slog.New(slog.DiscardHandler), http.NotFoundHandler(), addr, ""); err == nil {
			t.Errorf("serve(%q) accepted a non-loopback address", addr)
		}
	}
}

func TestServeWritesAddrAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // serve listens, writes the address, then stops at once.
	file := filepath.Join(t.TempDir(), "addr")
	if err := serve(ctx, slog.New(slog.DiscardHandler), http.NotFoundHandler(), "127.0.0.1:0", file); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil || !strings.HasPrefix(string(b), "127.0.0.1:") {
		t.Errorf("addr file = %q, %v", b, err)
	}
}
