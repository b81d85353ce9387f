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
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/flagenv"
	"github.com/paperfetch/paperfetch/internal/grpcserver"
	"github.com/paperfetch/paperfetch/internal/lifecycle"
	"github.com/paperfetch/paperfetch/internal/logging"
	"github.com/paperfetch/paperfetch/internal/validate"
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
	serverFlags := grpcserver.RegisterFlags(fs, grpcserver.Role{
		Clients: "CoordinatorService", Gateway: pb.FetcherGatewayService_ServiceDesc.ServiceName, Validate: validate.Request,
		Polls: coordinator.PollMethods(),
	})
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
	cfg.DataDir, cfg.Bucket, cfg.BucketURL, cfg.Logger, cfg.Registerer = *dataDir, bucket, *blobURL, logger, reg
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
		// Long-lived event streams hold connections: the HTTP port has the gRPC port's limits.
		httpLis = srv.LimitConns(httpLis)
	}

	// The loop first, the servers that feed it after: on SIGTERM readiness turns NOT_SERVING,
	// then the HTTP server stops, the gRPC server drains (its streams ended) and the loop stops.
	parts := []lifecycle.Part{{Name: "coordinator loop", Run: c.Run}, srv.Part(lis, c.CloseStreams)}
	httpAddr := ""
	if httpLis != nil {
		httpAddr = httpLis.Addr().String()
		parts = append(parts, lifecycle.Part{Name: "HTTP server", Run: func(ctx context.Context) error {
			return dashboard.Serve(ctx, httpLis, httpHandler, srv.HTTPTLSConfig(), logger.With("component", "http"))
		}})
	}
	logger.Info("coordinator started", "listen", lis.Addr().String(), "http", httpAddr, "data", *dataDir, "blob", *blobURL)
	err = lifecycle.Run(sigCtx, logger, parts...)
	logger.Info("coordinator stopped")
	return err
}
