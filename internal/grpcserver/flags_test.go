package grpcserver

import (
	"flag"
	"testing"

	"github.com/paperfetch/paperfetch/internal/grpcclient"
)

func flagSet(t *testing.T, args ...string) *Flags {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	f := RegisterFlags(fs, roleCoordinator)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestRoleFlags(t *testing.T) {
	coord := flag.NewFlagSet("c", flag.ContinueOnError)
	RegisterFlags(coord, roleCoordinator)
	fetch := flag.NewFlagSet("f", flag.ContinueOnError)
	RegisterFlags(fetch, roleFetcher)
	grpcclient.RegisterFlags(fetch) // must not panic on the shared --tls-cert/--tls-key
	for _, name := range []string{"tokens", "fetcher-tokens", "tls-cert", "tls-key", "tls-client-ca", "metrics-listen", "health-listen", "rate-limit"} {
		if coord.Lookup(name) == nil {
			t.Errorf("coordinator lacks --%s", name)
		}
	}
	if fetch.Lookup("fetcher-tokens") != nil {
		t.Error("fetcher has --fetcher-tokens")
	}
	for _, name := range []string{"tokens", "tls-cert", "tls-ca", "token-file", "tls-server-name"} {
		if fetch.Lookup(name) == nil {
			t.Errorf("fetcher lacks --%s", name)
		}
	}
}
