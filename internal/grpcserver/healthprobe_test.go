package grpcserver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// healthProbe finds grpc-health-probe on PATH or in ~/go/bin.
func healthProbe(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("grpc-health-probe"); err == nil {
		return p
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, "go", "bin", "grpc-health-probe")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("grpc-health-probe not installed (go install github.com/grpc-ecosystem/grpc-health-probe@latest)")
	return ""
}

// TestGRPCHealthProbeTLS runs the real grpc-health-probe against a TLS + mTLS + token server:
// the command operators use, and the plaintext health port used by Kubernetes probes.
func TestGRPCHealthProbeTLS(t *testing.T) {
	probe := healthProbe(t)
	p := newPKI(t)
	ts := startCoordinator(t,
		"--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.ca,
		"--tokens", writeFile(t, p.dir, "tokens", "client-token\n"),
		"--health-listen", "127.0.0.1:0")
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, probe, args...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	for _, args := range [][]string{
		{"-addr", ts.addr, "-tls", "-tls-ca-cert", p.ca},
		{"-addr", ts.addr, "-tls", "-tls-ca-cert", p.ca, "-tls-client-cert", p.fetcherCert, "-tls-client-key", p.fetcherKey},
		{"-addr", ts.addr, "-tls", "-tls-ca-cert", p.ca, "-service", "paperfetch.v1.CoordinatorService"},
		{"-addr", ts.health},
		{"-addr", ts.health, "-service", LivenessService},
	} {
		out, err := run(args...)
		if err != nil || !strings.Contains(out, "SERVING") {
			t.Errorf("grpc-health-probe %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	// Without TLS the TLS port does not answer.
	if out, err := run("-addr", ts.addr, "-connect-timeout", "2s", "-rpc-timeout", "2s"); err == nil {
		t.Errorf("plaintext probe of the TLS port succeeded: %s", out)
	}
}
