package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func TestParseTokens(t *testing.T) {
	s, err := ParseTokens(strings.NewReader("# clients\n\n  alpha  \nbeta\n#gamma\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 2 {
		t.Fatalf("Len = %d, want 2", s.Len())
	}
	for tok, want := range map[string]bool{"alpha": true, "beta": true, "gamma": false, "": false, "alph": false, "alphaa": false, "# clients": false} {
		if got := s.Contains(tok); got != want {
			t.Errorf("Contains(%q) = %v, want %v", tok, got, want)
		}
	}
	if _, err := ParseTokens(strings.NewReader("two words\n")); err == nil {
		t.Fatal("token with a space accepted")
	}
	var nilSet *TokenSet
	if nilSet.Contains("x") || nilSet.Len() != 0 {
		t.Fatal("nil set is not empty")
	}
}

func TestTokenFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("old\n")
	f, err := LoadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Contains("old") {
		t.Fatal("old token refused")
	}
	if changed, err := f.Reload(); changed || err != nil {
		t.Fatalf("unchanged reload = %v, %v", changed, err)
	}
	write("new\n")
	if changed, err := f.Reload(); !changed || err != nil {
		t.Fatalf("reload = %v, %v", changed, err)
	}
	if f.Contains("old") || !f.Contains("new") {
		t.Fatal("rotation not applied")
	}
	write("# emptied by mistake\n")
	if _, err := f.Reload(); !errors.Is(err, ErrNoTokens) {
		t.Fatalf("empty file: err = %v, want ErrNoTokens", err)
	}
	if !f.Contains("new") {
		t.Fatal("failed reload dropped the previous tokens")
	}
	if _, err := LoadTokenFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}

// sts is a fake server transport stream naming the called method.
type sts struct{ method string }

func (s sts) Method() string             { return s.method }
func (sts) SetHeader(metadata.MD) error  { return nil }
func (sts) SendHeader(metadata.MD) error { return nil }
func (sts) SetTrailer(metadata.MD) error { return nil }
func callCtx(method, token string, cert bool) context.Context {
	ctx := grpc.NewContextWithServerTransportStream(context.Background(), sts{method})
	if token != "" {
		ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+token))
	}
	if cert {
		leaf := &x509.Certificate{Subject: pkix.Name{CommonName: "fetcher-1"}}
		ctx = peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}}})
	}
	return ctx
}

func TestGuard(t *testing.T) {
	g := &Guard{
		Services: map[string]Requirement{
			"svc.Client":   {Tokens: NewTokenSet("client")},
			"svc.Gateway":  {Tokens: NewTokenSet("fetcher"), ClientCert: true},
			"svc.CertOnly": {ClientCert: true},
			"svc.Open":     {},
		},
		Default: Requirement{Tokens: NewTokenSet("client")},
	}
	tests := []struct {
		method, token string
		cert          bool
		want          codes.Code
		identity      string
	}{
		{"/svc.Client/Do", "", false, codes.Unauthenticated, ""},
		{"/svc.Client/Do", "wrong", false, codes.Unauthenticated, ""},
		{"/svc.Client/Do", "fetcher", false, codes.Unauthenticated, ""},
		{"/svc.Client/Do", "client", false, codes.OK, "token"},
		{"/svc.Client/Do", "", true, codes.Unauthenticated, ""}, // a certificate is not a client credential
		{"/svc.Gateway/Work", "", false, codes.Unauthenticated, ""},
		{"/svc.Gateway/Work", "client", false, codes.Unauthenticated, ""},
		{"/svc.Gateway/Work", "fetcher", false, codes.OK, "token"},
		{"/svc.Gateway/Work", "", true, codes.OK, "client-cert"},
		{"/svc.CertOnly/X", "fetcher", false, codes.Unauthenticated, ""},
		{"/svc.CertOnly/X", "", true, codes.OK, "client-cert"},
		{"/svc.Open/X", "", false, codes.OK, "none"},
		{"/other.Svc/X", "", false, codes.Unauthenticated, ""},
		{"/other.Svc/X", "client", false, codes.OK, "token"},
	}
	for _, tt := range tests {
		ctx, err := g.AuthFunc(callCtx(tt.method, tt.token, tt.cert))
		if got := status.Code(err); got != tt.want {
			t.Errorf("%s token=%q cert=%v: code %v, want %v (%v)", tt.method, tt.token, tt.cert, got, tt.want, err)
			continue
		}
		if err != nil {
			continue
		}
		id, ok := IdentityFrom(ctx)
		if !ok || id.Method != tt.identity {
			t.Errorf("%s: identity %+v, want method %s", tt.method, id, tt.identity)
		}
		if strings.Contains(id.Subject, tt.token) && tt.token != "" {
			t.Errorf("identity subject %q reveals the token", id.Subject)
		}
	}
}

func TestBadAuthorizationHeader(t *testing.T) {
	g := &Guard{Default: Requirement{Tokens: NewTokenSet("client")}}
	ctx := grpc.NewContextWithServerTransportStream(context.Background(), sts{"/a.B/C"})
	for _, h := range []string{"client", "Basic client", "Bearer"} {
		_, err := g.AuthFunc(metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", h)))
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("header %q: %v", h, err)
		}
	}
}
