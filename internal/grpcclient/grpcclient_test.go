package grpcclient

import (
	"context"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIsLoopback(t *testing.T) {
	for target, want := range map[string]bool{
		"localhost:7400":                   true,
		"127.0.0.1:7400":                   true,
		"127.3.4.5:1":                      true,
		"[::1]:7400":                       true,
		"dns:///localhost:7400":            true,
		"passthrough:///127.0.0.1:1":       true,
		"unix:///run/paperfetch.sock":      true,
		"10.0.0.1:7400":                    false,
		"paperfetch-coordinator:7400":      false,
		"dns:///paperfetch-coordinator:74": false,
		"dns://8.8.8.8/example.org:443":    false,
		"[::ffff:127.0.0.1]:1":             true,
		"example.org":                      false,
	} {
		if got := IsLoopback(target); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", target, got, want)
		}
	}
}

// TestLocalhostSubdomain: a name under .localhost is loopback only when it resolves to
// loopback addresses and nothing else (Go's resolver may ask DNS for it).
func TestLocalhostSubdomain(t *testing.T) {
	answers := map[string][]netip.Addr{
		"a.localhost":     {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		"evil.localhost":  {netip.MustParseAddr("203.0.113.7")},
		"mixed.localhost": {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.0.0.1")},
		"empty.localhost": {},
	}
	lookup := func(host string) ([]netip.Addr, error) {
		a, ok := answers[strings.ToLower(strings.TrimSuffix(host, "."))]
		if !ok {
			return nil, errors.New("no such host")
		}
		return a, nil
	}
	for target, want := range map[string]bool{
		"a.localhost:7400": true, "dns:///A.LOCALHOST:7400": true, "evil.localhost:7400": false,
		"mixed.localhost:7400": false, "empty.localhost:1": false, "gone.localhost:1": false,
		"localhost:7400": true,
	} {
		if got := isLoopback(target, lookup); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", target, got, want)
		}
	}
}

func parse(t *testing.T, env map[string]string, args ...string) *Flags {
	t.Helper()
	fs := flag.NewFlagSet("c", flag.ContinueOnError)
	f := RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	f.LookupEnv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	return f
}

func TestTokenNeedsTLSOffLoopback(t *testing.T) {
	f := parse(t, map[string]string{TokenEnv: "tok"})
	if _, err := f.Dial("paperfetch-coordinator:7400"); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Fatalf("token over plaintext to a remote server: err = %v", err)
	}
	conn, err := f.Dial("127.0.0.1:7400")
	if err != nil {
		t.Fatalf("token over plaintext to loopback: %v", err)
	}
	_ = conn.Close()
	conn, err = parse(t, map[string]string{TokenEnv: "tok"}, "--tls").Dial("paperfetch-coordinator:7400")
	if err != nil {
		t.Fatalf("token over TLS: %v", err)
	}
	_ = conn.Close()
	conn, err = parse(t, nil).Dial("paperfetch-coordinator:7400")
	if err != nil {
		t.Fatalf("no token, plaintext: %v", err)
	}
	_ = conn.Close()
}

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	if err := os.WriteFile(path, []byte("# fetcher token\n\n  s3cret \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := parse(t, map[string]string{TokenEnv: "from-env"}, "--token-file", path)
	tok, err := f.token()
	if err != nil || tok == nil {
		t.Fatalf("token: %v %v", tok, err)
	}
	md, err := tok.GetRequestMetadata(context.Background())
	if err != nil || md["authorization"] != "Bearer s3cret" {
		t.Fatalf("metadata = %v, %v (the file wins over the environment)", md, err)
	}
	// A rotated file is used by the next call.
	if err := os.WriteFile(path, []byte("rotated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if md, _ := tok.GetRequestMetadata(context.Background()); md["authorization"] != "Bearer rotated" {
		t.Fatalf("after rotation: %v", md)
	}
	if _, err := parse(t, nil, "--token-file", filepath.Join(dir, "missing")).Dial("127.0.0.1:1"); err == nil {
		t.Fatal("missing token file accepted")
	}
	if _, err := parse(t, nil, "--tls-ca", filepath.Join(dir, "missing")).Dial("127.0.0.1:1"); err == nil {
		t.Fatal("missing CA file accepted")
	}
}

func TestKeepalive(t *testing.T) {
	if p := KeepaliveParams(); p.Time != KeepaliveTime || p.Timeout != KeepaliveTimeout || !p.PermitWithoutStream {
		t.Fatalf("KeepaliveParams = %+v", p)
	}
}
