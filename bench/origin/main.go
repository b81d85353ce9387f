// Command origin serves deterministic PDFs on a loopback address for paperfetch's benchmarks.
//
//	origin --listen 127.0.0.1:0 --addr-file ADDR [fault flags]    serve until SIGINT/SIGTERM
//	origin --list N --base http://127.0.0.1:PORT [--size B] [--query 'k=v&…'] [--out FILE]
//	origin --sha256 N --size B                                   print a paper's checksum
//
// GET /pdf/<n>?size=BYTES serves "%PDF-1.7\n" + pseudo-random bytes seeded by n; query
// parameters (latency, rate, stall, stall_at, fail503, retry_after, fail500, reset, truncate,
// flaky, flaky_max) inject faults per request, the flags set them for every request.
// GET /stats returns the counters as JSON; POST /reset clears them. It only listens on loopback.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/paperfetch/paperfetch/bench/originlib"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "origin:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("origin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to serve on")
	addrFile := fs.String("addr-file", "", "write the address actually listened on to this file")
	size := fs.Int64("size", originlib.DefaultSize, "size of a paper requested without ?size= (and of listed URLs)")
	verbose := fs.Bool("v", false, "log every request")
	var f originlib.Faults
	fs.DurationVar(&f.Latency, "latency", 0, "delay before response headers")
	fs.Int64Var(&f.Rate, "rate", 0, "throttle each body to this many bytes/s (0: off)")
	fs.DurationVar(&f.Stall, "stall", 0, "pause each body once for this long")
	fs.Int64Var(&f.StallAt, "stall-at", 0, "byte offset of the stall (0: half the body)")
	fs.IntVar(&f.Fail503, "fail503", 0, "answer the first K requests of each paper with 503")
	fs.IntVar(&f.RetryAfter, "retry-after", 1, "Retry-After seconds of the 503s (0: plain 503s without Retry-After)")
	fs.IntVar(&f.Fail500, "fail500", 0, "answer the next K requests of each paper with 500")
	fs.IntVar(&f.Reset, "reset", 0, "reset the connection mid-body for the next K requests of each paper")
	fs.IntVar(&f.Truncate, "truncate", 0, "truncate the body for the next K requests of each paper")
	fs.IntVar(&f.Flaky, "flaky", 0, "fail later requests with this probability (percent), deterministically")
	fs.IntVar(&f.FlakyMax, "flaky-max", 2, "at most this many flaky failures per paper")
	list := fs.Int("list", 0, "write N URLs (papers 0..N-1) instead of serving")
	base := fs.String("base", "", "with --list: the origin's base URL, e.g. http://127.0.0.1:8080")
	query := fs.String("query", "", "with --list: extra query parameters for every URL, e.g. 'latency=10ms'")
	out := fs.String("out", "-", "with --list: the file to write (- is stdout)")
	sum := fs.Int64("sha256", -1, "print the SHA-256 of paper N at --size and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case *sum >= 0:
		_, err := fmt.Fprintln(stdout, originlib.SHA256(uint64(*sum), *size))
		return err
	case *list > 0:
		return writeList(stdout, *out, *base, *list, *size, *query)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	o, err := originlib.New(originlib.Config{Faults: f, DefaultSize: *size, Logger: logger})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, logger, o, *listen, *addrFile)
}

// serve listens on a loopback address and serves h until ctx ends.
func serve(ctx context.Context, logger *slog.Logger, h http.Handler, listen, addrFile string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		return fmt.Errorf("--listen %s: only loopback IP addresses are allowed", listen)
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	addr := lis.Addr().String()
	if addrFile != "" {
		tmp := addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(addr+"\n"), 0o644); err != nil {
			return fmt.Errorf("write --addr-file: %w", err)
		}
		if err := os.Rename(tmp, addrFile); err != nil {
			return fmt.Errorf("write --addr-file: %w", err)
		}
	}
	logger.Info("serving", "addr", "http://"+addr)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// writeList writes n URLs of papers 0..n-1 to path (- is w).
func writeList(w io.Writer, path, base string, n int, size int64, query string) (err error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--base must be an http(s) URL, got %q", base)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return fmt.Errorf("--query: %w", err)
	}
	q.Set("size", fmt.Sprint(size))
	enc := q.Encode()
	if path != "-" {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		defer func() {
			if cerr := f.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("--out: %w", cerr)
			}
		}()
		w = f
	}
	bw := bufio.NewWriter(w)
	prefix := strings.TrimRight(base, "/")
	for i := range n {
		fmt.Fprintf(bw, "%s/pdf/%d?%s\n", prefix, i, enc)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write list: %w", err)
	}
	return nil
}
