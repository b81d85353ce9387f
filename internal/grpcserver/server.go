// Package grpcserver builds the gRPC servers of both services the same way: one interceptor
// chain (Prometheus metrics, logging, auth, request validation, per-client rate limiting,
// recovery), the health service, server reflection, message/stream limits and keepalive
// enforcement, an optional /metrics HTTP endpoint and plaintext health port, reloading of
// certificates and token files, and a graceful shutdown (health NOT_SERVING, GracefulStop,
// then a hard Stop when the drain takes too long), as a part of the process's lifecycle.
//
// It knows no product service nor message: the binaries name their services (Role: the
// coordinator's gateway, exempt from rate limiting, with tokens of its own) and pass the
// product's request validation (Config.Validate, validate.Request).
package grpcserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/paperfetch/paperfetch/internal/auth"
	"github.com/paperfetch/paperfetch/internal/grpcclient"
	"github.com/paperfetch/paperfetch/internal/lifecycle"
	"github.com/paperfetch/paperfetch/internal/tlsreload"
)

// LivenessService is a health service name that stays SERVING while the server drains (the
// overall "" status and every real service turn NOT_SERVING at once). Point Kubernetes liveness
// probes at it and readiness probes at "", so a draining pod is taken out of rotation without
// being killed before its drain ends.
const LivenessService = "liveness"

// streamWorkers is the number of goroutines the server keeps to run calls
// (grpc.NumStreamWorkers, experimental in grpc-go): a call runs on one whose stack has
// already grown through the interceptor chain, where a new goroutine per call grew its
// stack every time (runtime.copystack: a tenth of the CPU of a GetBatch call in
// BenchmarkUnaryCall). A long stream holds its worker; a call that finds every worker busy
// gets a goroutine of its own, as without workers (TestCallsBeyondStreamWorkers).
const streamWorkers = 32

// Defaults of Config.
const (
	// DefaultHardStopTimeout bounds the graceful drain.
	DefaultHardStopTimeout = 10 * time.Second
	// DefaultMaxConcurrentStreams bounds the streams of one connection.
	DefaultMaxConcurrentStreams = 1000
	// DefaultMaxConnectionIdle closes connections without calls for this long.
	DefaultMaxConnectionIdle = 5 * time.Minute
	// DefaultReloadInterval is how often certificate and token files are checked for changes.
	DefaultReloadInterval = 30 * time.Second
	// metricsShutdownTimeout bounds the /metrics server's shutdown.
	metricsShutdownTimeout = 5 * time.Second
)

// Reloader is material read from files that can be re-read: tlsreload.KeyPair,
// tlsreload.CertPool, auth.TokenFile. Reload reports whether anything changed.
type Reloader interface {
	Reload() (bool, error)
	String() string
}

// Config configures a Server. Only Logger is required.
type Config struct {
	// Logger receives call logs and lifecycle messages. Required.
	Logger *slog.Logger
	// HardStopTimeout bounds the graceful drain; after it, remaining calls are cut. 0 means 10s.
	HardStopTimeout time.Duration
	// Options are extra server options (transport credentials...). They come after the
	// defaults (message sizes, keepalive, concurrent streams) and may override them.
	Options []grpc.ServerOption
	// Registry receives the gRPC server metrics (grpc_server_handled_total, handling-time
	// histogram...) and the Go and process collectors, and is what /metrics serves. nil: no
	// gRPC metrics.
	Registry *prometheus.Registry
	// Auth authenticates calls (health and reflection excluded). nil: every call is accepted.
	Auth *auth.Guard
	// RateLimit bounds the rate of client calls (every service but health, reflection and
	// FetcherGatewayService) in calls per second and per client (its token, certificate name or
	// IP address), with bursts of RateBurst. A rejection is RESOURCE_EXHAUSTED with a RetryInfo
	// delay. 0 means unlimited.
	RateLimit float64
	// RateBurst is the rate limiter's burst; 0 means max(1, RateLimit).
	RateBurst int
	// MaxConcurrentStreams bounds the concurrent streams of one connection. 0 means 1000.
	MaxConcurrentStreams uint32
	// MaxConns bounds the open connections; one more is closed at once. 0 means
	// DefaultMaxConns, negative no limit.
	MaxConns int
	// MaxConnsPerIP bounds the open connections from one peer IP address; one more is closed
	// at once. 0 means DefaultMaxConnsPerIP, negative no limit.
	MaxConnsPerIP int
	// MaxConnectionIdle: a connection without any call for this long is closed with a GOAWAY
	// (clients reconnect when they need to). 0 means DefaultMaxConnectionIdle, negative never.
	MaxConnectionIdle time.Duration
	// Validate, when set, checks every request message before the handler sees it: a unary
	// request, and each message received on a stream (RecvMsg returns its error). Its error is
	// returned as is (e.g. INVALID_ARGUMENT with a BadRequest). The binaries pass the product's
	// validate.Request.
	Validate func(req any) error
	// RateLimitExempt are services never rate limited, beside health and reflection (the
	// coordinator's FetcherGatewayService, which has per-stream budgets of its own).
	RateLimitExempt []string
	// Polls are full method names ("/package.Service/Method") of reads that clients call over
	// and over (a progress display's GetBatch every second): their successful calls are
	// logged at debug instead of info, so that a polling client does not write a log line per
	// call (nor the server spend a formatted line and a write per call). Their failures are
	// logged as any call's.
	Polls []string
	// Unary and Stream are extra interceptors placed after rate limiting and before recovery,
	// in order.
	Unary []grpc.UnaryServerInterceptor
	// Stream interceptors, see Unary.
	Stream []grpc.StreamServerInterceptor
	// MetricsListen is the address of the /metrics HTTP endpoint opened by Serve; empty: none.
	MetricsListen string
	// MetricsListener, when set, is used instead of MetricsListen (tests pass a bound listener).
	MetricsListener net.Listener
	// HealthListen is the address of a plaintext gRPC port serving only grpc.health.v1, for
	// Kubernetes' native gRPC probes, which cannot speak TLS. Empty: none.
	HealthListen string
	// HealthListener, when set, is used instead of HealthListen.
	HealthListener net.Listener
	// Reloaders are re-read every ReloadInterval and on SIGHUP while Serve runs.
	Reloaders []Reloader
	// ReloadInterval is the period of the reload loop; 0 means 30s, negative disables the
	// timer (SIGHUP still reloads).
	ReloadInterval time.Duration
	// KeyPair is the server's certificate when Options carry TLS credentials built from it
	// (NewServer sets both). Local connections pin it, and HTTPTLSConfig serves it.
	KeyPair *tlsreload.KeyPair
}

// Server is a gRPC server with health and reflection, and a graceful Serve.
type Server struct {
	// GRPC is the underlying server; register services on it before Serve.
	GRPC *grpc.Server
	// Health is the health service; Serve sets it SERVING, then NOT_SERVING on shutdown.
	Health *health.Server

	cfg      Config
	logger   *slog.Logger
	hardStop time.Duration
	metrics  *grpcprom.ServerMetrics // nil without a registry
	health   *grpc.Server            // plaintext health-only server, nil without HealthListen
	local    *bufconn.Listener       // in-memory listener of Local, nil until Local is called
}

// New builds a Server. Register services on s.GRPC, then call Serve.
func New(cfg Config) *Server {
	if cfg.HardStopTimeout == 0 {
		cfg.HardStopTimeout = DefaultHardStopTimeout
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if cfg.MaxConnectionIdle == 0 {
		cfg.MaxConnectionIdle = DefaultMaxConnectionIdle
	}
	if cfg.ReloadInterval == 0 {
		cfg.ReloadInterval = DefaultReloadInterval
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
		cfg.Logger = logger
	}
	s := &Server{cfg: cfg, logger: logger, hardStop: cfg.HardStopTimeout}

	// 0. The client an in-process caller acts for (ForwardedClientKey), before anything that
	// looks at the peer.
	unary := []grpc.UnaryServerInterceptor{forwardedUnary}
	stream := []grpc.StreamServerInterceptor{forwardedStream}
	// 1. Metrics.
	if cfg.Registry != nil {
		s.metrics = serverMetrics(cfg.Registry, logger)
		unary = append(unary, s.metrics.UnaryServerInterceptor())
		stream = append(stream, s.metrics.StreamServerInterceptor())
	}
	// 2. Logging: the start (debug) and the end of every call, never per message; health
	// checks (probes every few seconds) are not logged.
	// The successful calls of Polls are logged at debug.
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.StartCall, logging.FinishCall)}
	pollOpts := append(slices.Clip(logOpts), logging.WithLevels(pollLevel))
	polls := slices.Clone(cfg.Polls)
	isPoll := func(_ context.Context, c interceptors.CallMeta) bool { return slices.Contains(polls, c.FullMethod()) }
	notPoll := func(ctx context.Context, c interceptors.CallMeta) bool { return notHealth(ctx, c) && !isPoll(ctx, c) }
	unary = append(unary,
		selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(callLogger(logger), logOpts...), selector.MatchFunc(notPoll)),
		selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(callLogger(logger), pollOpts...), selector.MatchFunc(isPoll)))
	stream = append(stream,
		selector.StreamServerInterceptor(logging.StreamServerInterceptor(callLogger(logger), logOpts...), selector.MatchFunc(notPoll)),
		selector.StreamServerInterceptor(logging.StreamServerInterceptor(callLogger(logger), pollOpts...), selector.MatchFunc(isPoll)))
	// 3. Auth, except health and reflection.
	if cfg.Auth != nil {
		unary = append(unary, selector.UnaryServerInterceptor(cfg.Auth.UnaryServerInterceptor(), selector.MatchFunc(notInfrastructure)))
		stream = append(stream, selector.StreamServerInterceptor(cfg.Auth.StreamServerInterceptor(), selector.MatchFunc(notInfrastructure)))
	}
	// 4. Request validation.
	if cfg.Validate != nil {
		unary = append(unary, validatingUnary(cfg.Validate))
		stream = append(stream, validatingStream(cfg.Validate))
	}
	// 5. Rate limiting of client calls.
	if cfg.RateLimit > 0 {
		burst := cfg.RateBurst
		if burst <= 0 {
			burst = max(1, int(cfg.RateLimit))
		}
		lim := newClientLimiter(cfg.RateLimit, burst, time.Now)
		limited := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
			return !infrastructure(c.Service) && !slices.Contains(cfg.RateLimitExempt, c.Service)
		})
		unary = append(unary, selector.UnaryServerInterceptor(lim.unary, limited))
		stream = append(stream, selector.StreamServerInterceptor(lim.stream, limited))
	}
	unary = append(unary, cfg.Unary...)
	stream = append(stream, cfg.Stream...)
	// 6. Recovery, last: a panicking handler becomes INTERNAL and the server lives on.
	recoverOpts := []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		logger.ErrorContext(ctx, "panic in gRPC handler", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})}
	unary = append(unary, recovery.UnaryServerInterceptor(recoverOpts...))
	stream = append(stream, recovery.StreamServerInterceptor(recoverOpts...))

	opts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(grpcclient.MaxMessageSize),
		grpc.MaxSendMsgSize(grpcclient.MaxMessageSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.KeepaliveEnforcementPolicy(KeepaliveEnforcementPolicy()),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * grpcclient.KeepaliveTime, Timeout: 2 * grpcclient.KeepaliveTimeout, MaxConnectionIdle: max(cfg.MaxConnectionIdle, 0)}),
	}, cfg.Options...)
	gs := grpc.NewServer(opts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	s.GRPC, s.Health = gs, hs
	if cfg.HealthListen != "" || cfg.HealthListener != nil {
		s.health = grpc.NewServer(grpc.KeepaliveEnforcementPolicy(KeepaliveEnforcementPolicy()))
		healthpb.RegisterHealthServer(s.health, hs)
	}
	return s
}

// KeepaliveEnforcementPolicy is the servers' policy: it permits the pings of
// grpcclient.KeepaliveParams (every KeepaliveTime, also without active streams) with a margin.
func KeepaliveEnforcementPolicy() keepalive.EnforcementPolicy {
	return keepalive.EnforcementPolicy{MinTime: grpcclient.KeepaliveTime / 2, PermitWithoutStream: true}
}

// callLogger adapts a slog.Logger to the go-grpc-middleware logging interface, with "started
// call" lowered to debug: the end of a call (with its code and duration) is what operators read
// at info.
func callLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		if msg == "started call" && lvl < logging.LevelWarn {
			lvl = logging.LevelDebug
		}
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// pollLevel is the log level of a finished call of Config.Polls: debug when it succeeded,
// else the server default for its code.
func pollLevel(code codes.Code) logging.Level {
	if code == codes.OK {
		return logging.LevelDebug
	}
	return logging.DefaultServerCodeToLevel(code)
}

func notHealth(_ context.Context, c interceptors.CallMeta) bool {
	return c.Service != healthpb.Health_ServiceDesc.ServiceName
}

// infrastructure reports whether a service is health or reflection, which are reachable without
// credentials and never rate-limited.
func infrastructure(service string) bool {
	switch service {
	case healthpb.Health_ServiceDesc.ServiceName,
		reflectionv1.ServerReflection_ServiceDesc.ServiceName,
		reflectionv1alpha.ServerReflection_ServiceDesc.ServiceName:
		return true
	}
	return false
}

func notInfrastructure(_ context.Context, c interceptors.CallMeta) bool {
	return !infrastructure(c.Service)
}

// validatingUnary checks every unary request with check before calling the handler.
func validatingUnary(check func(any) error) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := check(req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// validatingStream checks every message received on a stream with check: an invalid one makes
// RecvMsg return check's error, which the handler returns.
func validatingStream(check func(any) error) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &checkedStream{ServerStream: ss, check: check})
	}
}

// checkedStream checks each received message.
type checkedStream struct {
	grpc.ServerStream
	check func(any) error
}

// RecvMsg receives m and checks it.
func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.check(m)
}

// serverMetrics registers the gRPC server metrics and the Go and process collectors on reg.
// Collectors registered already (the binary's own Go collector, or the metrics of another server
// sharing the registry in one process) are reused rather than duplicated.
func serverMetrics(reg prometheus.Registerer, logger *slog.Logger) *grpcprom.ServerMetrics {
	m := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	if existing, err := register(reg, m); err != nil {
		logger.Error("cannot register gRPC server metrics", "err", err)
	} else if em, ok := existing.(*grpcprom.ServerMetrics); ok {
		m = em
	}
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if _, err := register(reg, c); err != nil {
			logger.Error("cannot register runtime metrics", "err", err)
		}
	}
	return m
}

// register registers c, returning the collector already registered in its place, if any.
func register(reg prometheus.Registerer, c prometheus.Collector) (prometheus.Collector, error) {
	err := reg.Register(c)
	var dup prometheus.AlreadyRegisteredError
	if errors.As(err, &dup) {
		return dup.ExistingCollector, nil
	}
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return c, nil
}

// Serve marks every registered service SERVING and serves lis until ctx is done (or Shutdown is
// called); then it sets health to NOT_SERVING, drains with GracefulStop, and hard-stops after
// the timeout. While it runs it also owns the /metrics HTTP server, the plaintext health port
// and the reload loop (timer and SIGHUP), and stops them before returning. It returns nil after
// a shutdown, or the error that stopped serving.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	if s.metrics != nil {
		s.metrics.InitializeMetrics(s.GRPC)
	}
	metricsLis, healthLis, err := s.auxListeners()
	if err != nil {
		_ = lis.Close()
		return err
	}

	var wg sync.WaitGroup
	stopAux := make(chan struct{})
	var metricsSrv *http.Server
	auxErr := make(chan error, 3)
	if metricsLis != nil {
		metricsSrv = s.metricsServer()
		s.logger.Info("serving metrics", "addr", metricsLis.Addr().String())
		wg.Go(func() {
			if err := metricsSrv.Serve(metricsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				auxErr <- fmt.Errorf("serve metrics on %s: %w", metricsLis.Addr(), err)
			}
		})
	}
	if healthLis != nil {
		s.logger.Info("serving plaintext health", "addr", healthLis.Addr().String())
		wg.Go(func() {
			if err := s.health.Serve(healthLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				auxErr <- fmt.Errorf("serve health on %s: %w", healthLis.Addr(), err)
			}
		})
	}
	if len(s.cfg.Reloaders) > 0 {
		wg.Go(func() { s.reloadLoop(stopAux) })
	}

	s.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.Health.SetServingStatus(LivenessService, healthpb.HealthCheckResponse_SERVING)
	for name := range s.GRPC.GetServiceInfo() {
		s.Health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	errc := make(chan error, 1)
	limited := limitConns(lis, s.cfg.MaxConns, s.cfg.MaxConnsPerIP, func(ip netip.Addr, limit string) {
		s.logger.Warn("connection refused: too many connections", "peer_ip", ip.String(), "limit", limit)
	})
	wg.Go(func() { errc <- s.GRPC.Serve(limited) })
	if s.local != nil {
		wg.Go(func() {
			if err := s.GRPC.Serve(inProcessListener{s.local}); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				auxErr <- fmt.Errorf("serve in-process listener: %w", err)
			}
		})
	}

	var serveErr error
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			serveErr = fmt.Errorf("serve %s: %w", lis.Addr(), err)
		}
		errc <- err // let the shutdown below see it again
	case err := <-auxErr:
		serveErr = err
	case <-ctx.Done():
	}
	s.Shutdown()
	<-errc

	close(stopAux)
	if s.health != nil {
		s.health.Stop()
	}
	if metricsSrv != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), metricsShutdownTimeout)
		if err := metricsSrv.Shutdown(sctx); err != nil {
			_ = metricsSrv.Close()
		}
		cancel()
	}
	wg.Wait()
	s.logger.Info("gRPC server stopped", "addr", lis.Addr().String())
	return serveErr
}

// localBuffer is the in-memory listener's buffer per connection direction.
const localBuffer = 1 << 20

// Local returns a client connection to this server through an in-memory listener that Serve
// serves beside its network listener, so that an in-process client (the HTTP/JSON gateway)
// goes through the same interceptors (auth, validation, rate limit, metrics) as a remote one.
// With TLS the connection speaks TLS too and accepts only the server's own certificate. A call
// on it may name the remote client it acts for (ForwardedClientKey).
// Call it before Serve; the caller closes the connection. The target is opened lazily.
func (s *Server) Local() (*grpc.ClientConn, error) {
	if s.local == nil {
		s.local = bufconn.Listen(localBuffer)
	}
	creds := insecure.NewCredentials()
	if kp := s.cfg.KeyPair; kp != nil {
		creds = credentials.NewTLS(&tls.Config{
			MinVersion: tls.VersionTLS12,
			// The peer is this process, reached without a network: instead of a CA chain and
			// a name, the connection checks that it got the certificate the server serves.
			InsecureSkipVerify: true, //nolint:gosec // pinned in VerifyConnection
			VerifyConnection: func(cs tls.ConnectionState) error {
				cur := kp.Certificate()
				if len(cs.PeerCertificates) == 0 || cur == nil || len(cur.Certificate) == 0 ||
					!bytes.Equal(cs.PeerCertificates[0].Raw, cur.Certificate[0]) {
					return errors.New("in-process connection: not the server's own certificate")
				}
				return nil
			},
		})
	}
	lis := s.local
	return grpc.NewClient("passthrough:///in-process",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(grpcclient.MaxMessageSize), grpc.MaxCallSendMsgSize(grpcclient.MaxMessageSize)),
	)
}

// LimitConns bounds the connections of another listener of the process (the coordinator's
// HTTP port) with the server's connection limits (Config.MaxConns, MaxConnsPerIP), counted
// apart from the gRPC port's; refusals are logged like the gRPC port's.
func (s *Server) LimitConns(lis net.Listener) net.Listener {
	return limitConns(lis, s.cfg.MaxConns, s.cfg.MaxConnsPerIP, func(ip netip.Addr, limit string) {
		s.logger.Warn("connection refused: too many connections", "addr", lis.Addr().String(), "peer_ip", ip.String(), "limit", limit)
	})
}

// HTTPTLSConfig returns the TLS configuration of an HTTP listener beside the gRPC one, serving
// the same (reloaded) certificate, or nil when the server has no TLS.
func (s *Server) HTTPTLSConfig() *tls.Config {
	kp := s.cfg.KeyPair
	if kp == nil {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
}

// auxListeners opens the /metrics and health listeners configured.
func (s *Server) auxListeners() (metricsLis, healthLis net.Listener, err error) {
	metricsLis = s.cfg.MetricsListener
	if metricsLis == nil && s.cfg.MetricsListen != "" {
		if metricsLis, err = net.Listen("tcp", s.cfg.MetricsListen); err != nil {
			return nil, nil, fmt.Errorf("listen for metrics: %w", err)
		}
	}
	if s.health == nil {
		return metricsLis, nil, nil
	}
	healthLis = s.cfg.HealthListener
	if healthLis == nil {
		if healthLis, err = net.Listen("tcp", s.cfg.HealthListen); err != nil {
			if metricsLis != nil {
				_ = metricsLis.Close()
			}
			return nil, nil, fmt.Errorf("listen for health: %w", err)
		}
	}
	return metricsLis, healthLis, nil
}

// metricsServer builds the /metrics HTTP server for the registry.
func (s *Server) metricsServer() *http.Server {
	mux := http.NewServeMux()
	var gatherer prometheus.Gatherer = prometheus.NewRegistry()
	if s.cfg.Registry != nil {
		gatherer = s.cfg.Registry
	}
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelError),
		EnableOpenMetrics: true,
	}))
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
}

// reloadLoop re-reads the reloaders on a timer and on SIGHUP until stop is closed.
func (s *Server) reloadLoop(stop <-chan struct{}) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var tick <-chan time.Time
	if s.cfg.ReloadInterval > 0 {
		t := time.NewTicker(s.cfg.ReloadInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-stop:
			return
		case <-hup:
			s.logger.Info("SIGHUP: reloading certificates and tokens")
			s.Reload()
		case <-tick:
			s.Reload()
		}
	}
}

// Reload re-reads every reloader now (certificates, CA bundles, token files), logging what
// changed and what failed; a failed reload keeps the previous material.
func (s *Server) Reload() {
	for _, r := range s.cfg.Reloaders {
		changed, err := r.Reload()
		switch {
		case err != nil:
			s.logger.Error("reload failed; keeping the previous version", "what", r.String(), "err", err)
		case changed:
			s.logger.Info("reloaded", "what", r.String())
		}
	}
}

// MarkDraining turns readiness NOT_SERVING (the overall "" status and every service) while
// LivenessService stays SERVING, so probes take the process out of rotation without killing it
// before its drain ends. Binaries that drain before stopping the server (the fetcher) call it
// instead of Health.Shutdown, which would fail liveness too.
func (s *Server) MarkDraining() {
	s.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	for name := range s.GRPC.GetServiceInfo() {
		if name != healthpb.Health_ServiceDesc.ServiceName {
			s.Health.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
		}
	}
}

// Part is the server serving lis as a part of a process (package lifecycle): when the process
// stops, readiness turns NOT_SERVING first (MarkDraining, while the other parts drain), then
// Serve's context is cancelled (GracefulStop with the hard-stop timer) and stopping, when not
// nil, is called as the graceful stop begins (the coordinator ends its streams there, so that
// the drain does not wait for them).
func (s *Server) Part(lis net.Listener, stopping func()) lifecycle.Part {
	return lifecycle.Part{
		Name:     "gRPC server",
		Run:      func(ctx context.Context) error { return s.Serve(ctx, lis) },
		Drain:    s.MarkDraining,
		Stopping: stopping,
	}
}

// Shutdown marks the server draining (MarkDraining), drains with GracefulStop and hard-stops
// after the timeout; then every status, liveness included, is NOT_SERVING.
func (s *Server) Shutdown() {
	s.MarkDraining()
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
	s.Health.Shutdown()
}
