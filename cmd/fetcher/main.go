// Command fetcher is a paperfetch fetcher: it pulls download leases from the coordinator over
// the Work stream, downloads the PDFs into the blob store, and serves FetcherService (plus
// health and reflection) for operators. Every flag can also be set as PAPERFETCH_<FLAG>.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/paperfetch/paperfetch/fetcher"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/flagenv"
	"github.com/paperfetch/paperfetch/internal/grpcclient"
	"github.com/paperfetch/paperfetch/internal/grpcserver"
	"github.com/paperfetch/paperfetch/internal/lifecycle"
	"github.com/paperfetch/paperfetch/internal/logging"
	"github.com/paperfetch/paperfetch/internal/validate"
)

func main() {
	err := run(os.Args[1:])
	if err != nil && !errors.Is(err, flag.ErrHelp) { // -h: the usage has been printed
		fmt.Fprintln(os.Stderr, "fetcher:", err)
	}
	os.Exit(flagenv.ExitCode(err)) // 2 for a bad flag or configuration

}

// defaultListen is the default --listen: loopback only. FetcherService downloads what its
// caller asks for, so it is not reachable from other machines unless the operator says so.
const defaultListen = "127.0.0.1:7401"

func run(args []string) error {
	fs := flag.NewFlagSet("fetcher", flag.ContinueOnError)
	flagenv.SetUsage(fs, `A paperfetch fetcher: pulls download leases from the coordinator over the Work stream,
downloads the PDFs into the blob store, and serves FetcherService, health and reflection.`)
	coordinator := fs.String("coordinator", "localhost:7400", "gRPC `address` of the coordinator")
	listen := fs.String("listen", defaultListen, "gRPC `address` of this fetcher's FetcherService, health and reflection (loopback by default: it is a debugging service; expose it with e.g. :7401 only with --tokens or mTLS)")
	blobURL := fs.String("blob", "file://./blobs", "blob store `URL` (file:///dir or s3://bucket?endpoint=...&region=...&use_path_style=true)")
	logFlags := logging.RegisterFlags(fs)
	var s3 blobstore.S3Options
	s3.RegisterFlags(fs)
	cfg := fetcher.DefaultConfig()
	cfg.RegisterFlags(fs)
	serverFlags := grpcserver.RegisterFlags(fs, grpcserver.Role{Clients: "FetcherService", Validate: validate.Request})
	clientFlags := grpcclient.RegisterFlags(fs)
	if err := flagenv.Parse(fs, args, os.LookupEnv); err != nil {
		return err
	}
	logger, err := logFlags.NewJSONLogger(os.Stderr)
	if err != nil {
		return flagenv.Usage(err)
	}
	if err := cfg.Validate(); err != nil { // before anything is opened
		return flagenv.Usage(err)
	}

	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()

	bucketURL, err := s3.Apply(*blobURL)
	if err != nil {
		return err
	}
	bucket, err := blobstore.Open(sigCtx, bucketURL)
	if err != nil {
		return err
	}
	defer func() { _ = bucket.Close() }()

	reg := prometheus.NewRegistry()
	cfg.Bucket, cfg.BlobURL, cfg.Logger, cfg.Registerer = bucket, bucketURL, logger, reg
	f, err := fetcher.New(cfg)
	if err != nil {
		return err
	}
	srv, err := serverFlags.NewServer(logger, reg)
	if err != nil {
		return err
	}
	f.Register(srv.GRPC)
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	conn, err := clientFlags.Dial(*coordinator, cfg.DialOptions()...)
	if err != nil {
		_ = lis.Close()
		return err
	}
	defer func() { _ = conn.Close() }()

	logger.Info("fetcher started", "id", f.ID(), "listen", lis.Addr().String(), "coordinator", *coordinator, "slots", cfg.Slots)
	// On SIGTERM: readiness NOT_SERVING, the work loop drains (--drain-grace), stops, then
	// the server stops gracefully.
	err = lifecycle.Run(sigCtx, logger, srv.Part(lis, nil), f.Part(conn))
	logger.Info("fetcher stopped")
	return err
}
