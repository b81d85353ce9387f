// Command coordinator is the paperfetch coordinator: it owns batches of papers and their state
// in a local store, serves CoordinatorService to clients and FetcherGatewayService to fetchers,
// plus health and reflection. Every flag can also be set as PAPERFETCH_<FLAG>.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/paperfetch/paperfetch/coordinator"
	"github.com/paperfetch/paperfetch/dashboard"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/flagenv"
	"github.com/paperfetch/paperfetch/internal/grpcserver"
	"github.com/paperfetch/paperfetch/internal/logging"
)

func main() {
	err := run(os.Args[1:])
	if err != nil && !errors.Is(err, flag.ErrHelp) { // -h: the usage has been printed
		fmt.Fprintln(os.Stderr, "coordinator:", err)
	}
	os.Exit(flagenv.ExitCode(err)) // 2 for a bad flag or configuration

}

func run(args []string) error {
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	flagenv.SetUsage(fs, `The paperfetch coordinator: owns batches of papers and their state in a local store, serves
CoordinatorService to clients and FetcherGatewayService to fetchers, plus health and
reflection.`)
	listen := fs.String("listen", ":7400", "gRPC `address` of CoordinatorService, FetcherGatewayService, health and reflection")
	dataDir := fs.String("data", "./data", "`directory` of the coordinator's store")
	blobURL := fs.String("blob", "", "blob store `URL` ReadPaper reads from (default file://<data>/blobs)")
	httpListen := fs.String("http-listen", "", "HTTP `address` of the web dashboard (/) and the JSON API (/v1/), guarded by the same --tokens and served over TLS with --tls-cert (empty: off)")
	logFlags := logging.RegisterFlags(fs)
	cfg := coordinator.DefaultConfig()
	cfg.RegisterFlags(fs)
	serverFlags := grpcserver.RegisterFlags(fs, grpcserver.RoleCoordinator)
	if err := flagenv.Parse(fs, args, os.LookupEnv); err != nil {
		return err
	}
	cfg.DataDir = *dataDir
	if err := cfg.Validate(); err != nil {
		return flagenv.Usage(err)
	}
	logger, err := logFlags.NewJSONLogger(os.Stderr)
	if err != nil {
		return flagenv.Usage(err)
	}

	if *blobURL == "" {
		abs, err := filepath.Abs(filepath.Join(*dataDir, "blobs"))
		if err != nil {
			return fmt.Errorf("--data: %w", err)
		}
		*blobURL = "file://" + filepath.ToSlash(abs)
	}

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()

	bucket, err := blobstore.Open(sigCtx, *blobURL)
	if err != nil {
		return err
	}
	defer func() { _ = bucket.Close() }()

	reg := prometheus.NewRegistry()
	cfg.DataDir, cfg.Bucket, cfg.Logger, cfg.Registerer = *dataDir, bucket, logger, reg
	c, err := coordinator.Open(cfg)
	if err != nil {
		return err
	}
	defer func() {
		if err := c.Close(); err != nil {
			logger.Error("close store", "err", err)
		}
	}()
	srv, err := serverFlags.NewServer(logger, reg)
	if err != nil {
		return err
	}
	c.Register(srv.GRPC)
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var httpLis net.Listener
	var httpHandler http.Handler
	if *httpListen != "" {
		// The dashboard and /v1/ call the gRPC server in-process: same auth, validation, limits.
		local, err := srv.Local()
		if err != nil {
			_ = lis.Close()
			return fmt.Errorf("--http-listen: %w", err)
		}
		defer func() { _ = local.Close() }()
		if httpHandler, err = dashboard.New(sigCtx, dashboard.Config{Conn: local, Logger: logger.With("component", "http")}); err != nil {
			_ = lis.Close()
			return err
		}
		if httpLis, err = net.Listen("tcp", *httpListen); err != nil {
			_ = lis.Close()
			return fmt.Errorf("--http-listen: %w", err)
		}
	}

	loopCtx, stopLoop := context.WithCancel(context.Background())
	defer stopLoop()
	loopDone := make(chan error, 1)
	go func() { loopDone <- c.Run(loopCtx) }()

	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(serveCtx, lis) }()
	var httpErr chan error // nil without --http-listen: never ready
	if httpLis != nil {
		httpErr = make(chan error, 1)
		go func() {
			httpErr <- dashboard.Serve(serveCtx, httpLis, httpHandler, srv.HTTPTLSConfig(), logger.With("component", "http"))
		}()
	}

	httpAddr := ""
	if httpLis != nil {
		httpAddr = httpLis.Addr().String()
	}
	logger.Info("coordinator started", "listen", lis.Addr().String(), "http", httpAddr, "data", *dataDir, "blob", *blobURL)
	var exitErr error
	select {
	case <-sigCtx.Done():
		logger.Info("shutting down")
	case err := <-serveErr:
		exitErr = err
		serveErr <- nil
		logger.Error("gRPC server stopped", "err", err)
	case err := <-loopDone:
		exitErr = err
		loopDone <- nil
		logger.Error("coordinator loop stopped", "err", err)
	case err := <-httpErr:
		exitErr = err
		httpErr <- nil
		logger.Error("HTTP server stopped", "err", err)
	}
	// Health NOT_SERVING and a graceful drain of the calls in flight, then stop the loop.
	stopServing()
	c.CloseStreams()
	if httpErr != nil {
		if err := <-httpErr; err != nil && exitErr == nil {
			exitErr = err
		}
	}
	if err := <-serveErr; err != nil && exitErr == nil {
		exitErr = err
	}
	stopLoop()
	if err := <-loopDone; err != nil && exitErr == nil {
		exitErr = err
	}
	logger.Info("coordinator stopped")
	return exitErr
}
