// Package grpcserver builds the gRPC servers of both services the same way: one interceptor
// chain, the health service, server reflection, and a graceful shutdown (health NOT_SERVING,
// drain, GracefulStop, then a hard Stop when the drain takes too long).
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Config configures a Server.
type Config struct {
	// Logger receives call logs and lifecycle messages. Required.
	Logger *slog.Logger
	// HardStopTimeout bounds the graceful drain; after it, remaining calls are cut. 0 means 10s.
	HardStopTimeout time.Duration
	// Options are extra server options (credentials, limits, keepalive...).
	Options []grpc.ServerOption
	// Unary and Stream are interceptors placed between logging and recovery (auth, validation,
	// rate limiting...), in order.
	Unary []grpc.UnaryServerInterceptor
	// Stream interceptors, see Unary.
	Stream []grpc.StreamServerInterceptor
}

// Server is a gRPC server with health and reflection, and a graceful Serve.
type Server struct {
	// GRPC is the underlying server; register services on it before Serve.
	GRPC *grpc.Server
	// Health is the health service; Serve sets it SERVING, then NOT_SERVING on shutdown.
	Health *health.Server

	logger   *slog.Logger
	hardStop time.Duration
}

// New builds a Server. Register services on s.GRPC, then call Serve.
func New(cfg Config) *Server {
	if cfg.HardStopTimeout == 0 {
		cfg.HardStopTimeout = 10 * time.Second
	}
	logger := cfg.Logger
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.StartCall, logging.FinishCall)}
	recoverOpts := []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		logger.ErrorContext(ctx, "panic in gRPC handler", "panic", p, "stack", string(debug.Stack()))
		return status.Errorf(codes.Internal, "internal error")
	})}
	unary := append([]grpc.UnaryServerInterceptor{logging.UnaryServerInterceptor(SlogLogger(logger), logOpts...)}, cfg.Unary...)
	unary = append(unary, recovery.UnaryServerInterceptor(recoverOpts...))
	stream := append([]grpc.StreamServerInterceptor{logging.StreamServerInterceptor(SlogLogger(logger), logOpts...)}, cfg.Stream...)
	stream = append(stream, recovery.StreamServerInterceptor(recoverOpts...))

	opts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}, cfg.Options...)
	gs := grpc.NewServer(opts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return &Server{GRPC: gs, Health: hs, logger: logger, hardStop: cfg.HardStopTimeout}
}

// SlogLogger adapts a slog.Logger to the go-grpc-middleware logging interface.
func SlogLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// Serve marks every registered service SERVING and serves lis until ctx is done; then it sets
// health to NOT_SERVING, drains with GracefulStop, and hard-stops after the timeout. It returns
// nil after a shutdown caused by ctx, or the error that stopped serving.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	s.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for name := range s.GRPC.GetServiceInfo() {
		s.Health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.GRPC.Serve(lis) }()
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve %s: %w", lis.Addr(), err)
		}
		return nil
	case <-ctx.Done():
	}
	s.Shutdown()
	<-errc
	return nil
}

// Shutdown sets health NOT_SERVING, drains with GracefulStop and hard-stops after the timeout.
func (s *Server) Shutdown() {
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.GRPC.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(s.hardStop)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.logger.Warn("graceful stop timed out; stopping hard", "timeout", s.hardStop)
		s.GRPC.Stop()
		<-done
	}
}
