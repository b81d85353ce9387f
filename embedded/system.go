// Package embedded runs a whole paperfetch deployment inside one process: a coordinator and N
// fetchers talking over real gRPC (an in-memory bufconn listener, so nothing is exposed on the
// network), exactly the code path of the separate services, started and stopped in their order
// (package internal/lifecycle). It is the in-process twin of the two binaries and the library
// behind `paperfetch get`: Options are get's flags (same names, same meanings, zero included),
// and the package gives the CLI what it needs of the coordinator and the fetcher (flag parsers,
// the DOI resolver), so that internal/cli depends on it, the generated code and leaf helpers
// only.
//
// The coordinator's store and the blob store live in one folder (by default OUT/.paperfetch),
// so running the same command again resumes where the previous run stopped.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"gocloud.dev/blob"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/paperfetch/paperfetch/coordinator"
	"github.com/paperfetch/paperfetch/dashboard"
	"github.com/paperfetch/paperfetch/fetcher"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/auth"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/grpcclient"
	"github.com/paperfetch/paperfetch/internal/grpcserver"
	"github.com/paperfetch/paperfetch/internal/lifecycle"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// System is a running embedded coordinator with its fetchers. Close stops it.
type System struct {
	opts      Options
	logger    *slog.Logger
	bucketURL string
	bucket    *blob.Bucket
	coord     *coordinator.Coordinator
	server    *grpcserver.Server
	lis       net.Listener
	dial      func(context.Context) (net.Conn, error)
	conn      *grpc.ClientConn
	httpConn  *grpc.ClientConn // the dashboard's in-process connection, nil without HTTPListener
	group     *lifecycle.Group // the running parts; nil until Start has made them all
	closeOnce sync.Once
	closeErr  error
}

// Start opens the store and the blob store under opts.Dir and starts the coordinator, its gRPC
// server and the fetchers. ctx bounds only the start-up; Close stops the system.
func Start(ctx context.Context, opts Options) (_ *System, err error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	fetchers := min(opts.Fetchers, opts.Concurrency)
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cc := opts.coordinatorConfig()
	fcfg, err := opts.fetcherConfig()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("embedded: state folder: %w", err)
	}
	cc.DataDir = dir
	cc.Logger = logger.With("component", "coordinator")
	// The derived configurations are checked before anything is created.
	if err := cc.Validate(); err != nil {
		return nil, fmt.Errorf("embedded: coordinator: %w", err)
	}
	if err := fcfg.Validate(); err != nil {
		return nil, fmt.Errorf("embedded: fetcher: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs"), 0o755); err != nil {
		return nil, fmt.Errorf("embedded: create state folder: %w", err)
	}
	s := &System{opts: opts, logger: logger, bucketURL: "file://" + filepath.ToSlash(filepath.Join(dir, "blobs"))}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()

	s.bucket, err = blobstore.Open(ctx, s.bucketURL)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}

	cc.Bucket, cc.BucketURL = s.bucket, s.bucketURL
	s.coord, err = coordinator.Open(cc)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	scfg := grpcserver.Config{Logger: logger.With("component", "grpc"), HardStopTimeout: 2 * time.Second, Validate: validate.Request, Polls: coordinator.PollMethods()}
	if opts.ClientTokens != nil {
		scfg.Auth = &auth.Guard{
			Default: auth.Requirement{Tokens: opts.ClientTokens},
			Services: map[string]auth.Requirement{
				pb.CoordinatorService_ServiceDesc.ServiceName:    {Tokens: opts.ClientTokens},
				pb.FetcherGatewayService_ServiceDesc.ServiceName: {},
			},
		}
	}
	s.server = grpcserver.New(scfg)
	s.coord.Register(s.server.GRPC)
	if opts.Listener != nil {
		s.lis = opts.Listener
		addr := opts.Listener.Addr()
		s.dial = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, addr.Network(), addr.String())
		}
	} else {
		bl := bufconn.Listen(1 << 20)
		s.lis, s.dial = bl, bl.DialContext
	}
	s.conn, err = grpc.NewClient("passthrough:///paperfetch-embedded",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return s.dial(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(grpcclient.MaxMessageSize), grpc.MaxCallSendMsgSize(grpcclient.MaxMessageSize)),
	)
	if err != nil {
		return nil, fmt.Errorf("embedded: connect: %w", err)
	}

	// The parts, in the order of the coordinator binary (its loop, then the servers that feed
	// it), then the fetchers, clients of the server: Close drains and stops them in reverse.
	parts := []lifecycle.Part{{Name: "coordinator loop", Run: s.coord.Run}, s.server.Part(s.lis, s.coord.CloseStreams)}
	if opts.HTTPListener != nil {
		// The server's own in-process connection, on which the dashboard names each HTTP
		// client it calls for (grpcserver.ForwardedClientKey), as the coordinator binary does.
		if s.httpConn, err = s.server.Local(); err != nil {
			return nil, fmt.Errorf("embedded: %w", err)
		}
		h, err := dashboard.New(ctx, dashboard.Config{Conn: s.httpConn, Logger: logger.With("component", "http")})
		if err != nil {
			return nil, fmt.Errorf("embedded: %w", err)
		}
		// Long-lived event streams hold connections: the HTTP port has the gRPC port's limits,
		// as in the coordinator binary.
		httpLis := s.server.LimitConns(opts.HTTPListener)
		parts = append(parts, lifecycle.Part{Name: "HTTP server", Run: func(ctx context.Context) error {
			return dashboard.Serve(ctx, httpLis, h, nil, logger.With("component", "http"))
		}})
	}
	// The fetchers share one committer of the blob folder, so that their commits share groups.
	var committer *blobstore.Committer
	if dir, ok := blobstore.LocalDir(s.bucketURL); ok {
		committer = blobstore.NewCommitterWith(dir, fcfg.BlobSync, fcfg.CommitterOptions())
	}
	var fparts []lifecycle.Part
	for i := range fetchers {
		fc := fcfg
		fc.Committer = committer
		fc.ID = fmt.Sprintf("embedded-%d", i+1)
		fc.Slots = opts.Concurrency / fetchers
		if i < opts.Concurrency%fetchers {
			fc.Slots++
		}
		fc.Bucket = s.bucket
		fc.BlobURL = s.bucketURL
		fc.Logger = logger.With("component", "fetcher", "fetcher", fc.ID)
		f, err := fetcher.New(fc)
		if err != nil {
			return nil, fmt.Errorf("embedded: fetcher %d: %w", i+1, err)
		}
		fparts = append(fparts, f.Part(s.conn))
	}
	s.group = lifecycle.Start(logger, append(parts, lifecycle.Parallel("fetchers", fparts...))...)
	return s, nil
}

// WaitBatch watches batch id until it is COMPLETED or CANCELLED and returns it as last seen;
// it ends early with ctx's error or the watch's.
func (s *System) WaitBatch(ctx context.Context, id string) (*pb.Batch, error) {
	stream, err := pb.NewCoordinatorServiceClient(s.conn).WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: id})
	if err != nil {
		return nil, fmt.Errorf("watch batch %s: %w", id, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("watch batch %s: %w", id, err)
		}
		if st := resp.GetBatch().GetState(); st == pb.BatchState_BATCH_STATE_COMPLETED || st == pb.BatchState_BATCH_STATE_CANCELLED {
			return resp.GetBatch(), nil
		}
	}
}

// Exited is closed when a part of the system stopped by itself rather than by Close: the
// coordinator's loop failed (its store could not commit, e.g. on a full disk), or a server or
// the fetchers ended. The system does not recover from it: Close it, and Close returns why.
func (s *System) Exited() <-chan struct{} { return s.group.Exited() }

// Conn is the client connection to the embedded coordinator (CoordinatorService).
func (s *System) Conn() grpc.ClientConnInterface { return s.conn }

// Addr is the address the coordinator is served on ("bufconn" for the in-memory listener).
func (s *System) Addr() string { return s.lis.Addr().String() }

// BucketURL is the URL of the blob store (file://DIR/blobs); blobstore.LocalPath maps keys to
// files in it.
func (s *System) BucketURL() string { return s.bucketURL }

// Close stops everything, in the order of the binaries (package lifecycle): readiness
// NOT_SERVING, the fetchers drain (running downloads get DrainGrace to finish, the rest are
// aborted and stay queued for the next run), then stop; the HTTP server stops; the gRPC server
// ends the coordinator's streams (WatchBatch and Work: UNAVAILABLE) and stops gracefully; the
// coordinator's loop stops; then the client connection, the store and the blob store are
// closed. It is safe to call more than once.
func (s *System) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *System) close() error {
	var errs []error
	if s.group != nil {
		errs = append(errs, s.group.Stop())
	} else { // Start failed before serving: the listeners it was given are still open
		if s.opts.Listener != nil {
			_ = s.opts.Listener.Close()
		}
		if s.opts.HTTPListener != nil {
			_ = s.opts.HTTPListener.Close()
		}
	}
	for _, c := range []*grpc.ClientConn{s.httpConn, s.conn} {
		if c != nil {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close connection: %w", err))
			}
		}
	}
	if s.coord != nil {
		if err := s.coord.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close coordinator: %w", err))
		}
	}
	if s.bucket != nil {
		if err := s.bucket.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close blob store: %w", err))
		}
	}
	return errors.Join(errs...)
}
