package grpcserver

import (
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/paperfetch/paperfetch/internal/auth"
	"github.com/paperfetch/paperfetch/internal/tlsreload"
)

// Role is what a binary's server serves, as far as its flags are concerned: the caller names
// its services (this package knows no product service), and a binary with a Gateway (the
// coordinator) gets --fetcher-tokens for it.
type Role struct {
	// Clients names the service that clients call, for the help of --tokens (e.g.
	// "CoordinatorService").
	Clients string
	// Gateway, when not empty, is the full name of the service fetchers call (the
	// coordinator's FetcherGatewayService): it is guarded by --fetcher-tokens or a verified
	// client certificate instead of --tokens, and never rate limited (it has budgets of its
	// own).
	Gateway string
	// Validate, when set, checks every request message (Config.Validate).
	Validate func(req any) error
	// Polls are the full method names of reads clients poll (Config.Polls).
	Polls []string
}

// Flags holds the server flags shared by the binaries.
type Flags struct {
	role Role
	// HardStopTimeout bounds the graceful drain (--grpc-hard-stop-timeout).
	HardStopTimeout time.Duration
	// MetricsListen is the address of the /metrics HTTP endpoint; empty disables it.
	MetricsListen string
	// HealthListen is the address of the plaintext health-only gRPC port; empty disables it.
	HealthListen string
	// ClientCAFile is the PEM bundle of CAs whose client certificates are accepted
	// (--tls-client-ca); it turns on mTLS.
	ClientCAFile string
	// TokensFile holds the bearer tokens accepted from clients (--tokens).
	TokensFile string
	// FetcherTokensFile holds the tokens accepted on FetcherGatewayService (--fetcher-tokens,
	// coordinator only).
	FetcherTokensFile string
	// RateLimit bounds client calls per second (--rate-limit; 0: unlimited).
	RateLimit float64
	// RateBurst is the rate limiter's burst (--rate-burst).
	RateBurst int
	// MaxConcurrentStreams bounds the streams per connection (--max-concurrent-streams).
	MaxConcurrentStreams uint
	// ReloadInterval is how often certificates and token files are re-read (--reload-interval).
	ReloadInterval time.Duration
	// MaxConns, MaxConnsPerIP and MaxConnectionIdle are the connection limits (--max-conns,
	// --max-conns-per-ip, --max-connection-idle), see Config.
	MaxConns, MaxConnsPerIP int
	MaxConnectionIdle       time.Duration

	keyPair *tlsreload.KeyPairFlags // --tls-cert/--tls-key, shared with grpcclient's flags
}

// RegisterFlags registers the server flags of role on fs. --tls-cert and --tls-key are shared
// with grpcclient.RegisterFlags when a binary registers both (the fetcher): one key pair serves
// as its server certificate and as its client certificate for mTLS.
func RegisterFlags(fs *flag.FlagSet, role Role) *Flags {
	f := &Flags{role: role}
	fs.DurationVar(&f.HardStopTimeout, "grpc-hard-stop-timeout", DefaultHardStopTimeout, "how long a graceful gRPC stop may drain before calls are cut")
	fs.StringVar(&f.MetricsListen, "metrics-listen", "", "`address` for the Prometheus /metrics HTTP endpoint (empty: off)")
	fs.StringVar(&f.HealthListen, "health-listen", "", "`address` of a plaintext gRPC port serving only grpc.health.v1, for Kubernetes gRPC probes when --tls-cert is set (empty: off)")
	f.keyPair = tlsreload.RegisterKeyPairFlags(fs)
	fs.StringVar(&f.ClientCAFile, "tls-client-ca", "", "PEM `file` of CAs whose client certificates are verified (mTLS); a verified certificate authenticates a fetcher")
	if role.Gateway != "" {
		fs.StringVar(&f.TokensFile, "tokens", "", "`file` of bearer tokens accepted for "+role.Clients+", one per line, # comments (empty: the client API is open); reloaded on change")
		fs.StringVar(&f.FetcherTokensFile, "fetcher-tokens", "", "`file` of bearer tokens accepted from fetchers on "+role.Gateway+" (without it and without --tls-client-ca the gateway is open); reloaded on change")
	} else {
		fs.StringVar(&f.TokensFile, "tokens", "", "`file` of bearer tokens accepted for "+role.Clients+", one per line, # comments (empty: open unless --tls-client-ca); reloaded on change")
	}
	fs.Float64Var(&f.RateLimit, "rate-limit", 1000, "client calls per second accepted from each client (its token, certificate or IP address) before RESOURCE_EXHAUSTED with a retry delay (health, reflection and the fetcher gateway are exempt; 0: unlimited)")
	fs.IntVar(&f.RateBurst, "rate-burst", 2000, "burst of each client's call rate limit")
	fs.UintVar(&f.MaxConcurrentStreams, "max-concurrent-streams", DefaultMaxConcurrentStreams, "maximum concurrent gRPC streams per connection")
	fs.IntVar(&f.MaxConns, "max-conns", DefaultMaxConns, "open connections accepted in all; one more is closed at once (-1: no limit)")
	fs.IntVar(&f.MaxConnsPerIP, "max-conns-per-ip", DefaultMaxConnsPerIP, "open connections accepted from one peer IP address; one more is closed at once (-1: no limit)")
	fs.DurationVar(&f.MaxConnectionIdle, "max-connection-idle", DefaultMaxConnectionIdle, "close a connection without any call for this long (GOAWAY; clients reconnect when needed; -1s: never)")
	fs.DurationVar(&f.ReloadInterval, "reload-interval", DefaultReloadInterval, "how often TLS certificates and token files are checked for changes (also on SIGHUP)")
	return f
}

// NewServer builds a Server from the flags: TLS (and mTLS) from the certificate files, the
// auth guard from the token files, rate limiting, limits, /metrics and the health port. reg
// receives the server's metrics and is served on --metrics-listen; nil means no gRPC metrics.
// Errors name the flag at fault.
func (f *Flags) NewServer(logger *slog.Logger, reg *prometheus.Registry) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg := Config{
		Logger:            logger,
		HardStopTimeout:   f.HardStopTimeout,
		Registry:          reg,
		RateLimit:         f.RateLimit,
		RateBurst:         f.RateBurst,
		MetricsListen:     f.MetricsListen,
		HealthListen:      f.HealthListen,
		ReloadInterval:    f.ReloadInterval,
		MaxConns:          f.MaxConns,
		MaxConnsPerIP:     f.MaxConnsPerIP,
		MaxConnectionIdle: f.MaxConnectionIdle,
		Validate:          f.role.Validate,
		Polls:             f.role.Polls,
	}
	if f.role.Gateway != "" {
		cfg.RateLimitExempt = []string{f.role.Gateway}
	}
	if f.MaxConcurrentStreams > 0 {
		cfg.MaxConcurrentStreams = uint32(min(f.MaxConcurrentStreams, 1<<31))
	}
	certFile, keyFile := f.keyPair.Files()
	var clientCAs *tlsreload.CertPool
	switch {
	case certFile != "" || keyFile != "":
		kp, err := tlsreload.LoadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Reloaders = append(cfg.Reloaders, kp)
		cfg.KeyPair = kp
		if f.ClientCAFile != "" {
			if clientCAs, err = tlsreload.LoadCertPool(f.ClientCAFile); err != nil {
				return nil, fmt.Errorf("--tls-client-ca: %w", err)
			}
			cfg.Reloaders = append(cfg.Reloaders, clientCAs)
		}
		cfg.Options = append(cfg.Options, grpc.Creds(credentials.NewTLS(tlsreload.ServerConfig(kp, clientCAs))))
	case f.ClientCAFile != "":
		return nil, fmt.Errorf("--tls-client-ca needs --tls-cert and --tls-key")
	}

	load := func(flagName, path string) (auth.TokenChecker, error) {
		if path == "" {
			return nil, nil
		}
		tf, err := auth.LoadTokenFile(path)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flagName, err)
		}
		cfg.Reloaders = append(cfg.Reloaders, tf)
		return tf, nil
	}
	clientTokens, err := load("tokens", f.TokensFile)
	if err != nil {
		return nil, err
	}
	guard := &auth.Guard{Services: map[string]auth.Requirement{}}
	if f.role.Gateway != "" {
		fetcherTokens, err := load("fetcher-tokens", f.FetcherTokensFile)
		if err != nil {
			return nil, err
		}
		guard.Default = auth.Requirement{Tokens: clientTokens}
		guard.Services[f.role.Gateway] = auth.Requirement{Tokens: fetcherTokens, ClientCert: clientCAs != nil}
	} else {
		guard.Default = auth.Requirement{Tokens: clientTokens, ClientCert: clientCAs != nil}
	}
	cfg.Auth = guard
	logger.Info("gRPC server security",
		"tls", certFile != "", "mtls", clientCAs != nil,
		"client_tokens", f.TokensFile != "", "fetcher_tokens", f.FetcherTokensFile != "")
	return New(cfg), nil
}
