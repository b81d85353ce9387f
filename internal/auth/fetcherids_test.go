package auth

import (
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

func TestTokenFetcherIDs(t *testing.T) {
	s, err := ParseTokens(strings.NewReader("plain\nscoped fetcher-ids=pod-a,pod-b-*\nall fetcher-ids=*\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		token, id string
		known, ok bool
	}{
		{"plain", "anything", true, true},
		{"scoped", "pod-a", true, true},
		{"scoped", "pod-a2", true, false},
		{"scoped", "pod-b-7f3a", true, true},
		{"scoped", "pod-c", true, false},
		{"all", "x", true, true},
		{"nope", "pod-a", false, false},
	} {
		ids, known := s.FetcherIDs(tt.token)
		if known != tt.known || (known && ids.Allows(tt.id) != tt.ok) {
			t.Errorf("%s as %s: known %v allows %v (%v)", tt.token, tt.id, known, ids.Allows(tt.id), ids)
		}
	}
	for _, bad := range []string{"t fetcher-ids=", "t fetcher-ids=a*b", "t ids=a", "t fetcher-ids=a,,b"} {
		if _, err := ParseTokens(strings.NewReader(bad + "\n")); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCertFetcherIDs(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	g := &Guard{Services: map[string]Requirement{"svc.Gateway": {ClientCert: true}}}
	for _, tt := range []struct {
		uris    []*url.URL
		id      string
		allowed bool
	}{
		{nil, "any-id", true},
		{[]*url.URL{u("spiffe://example.org/fetcher")}, "any-id", true},
		{[]*url.URL{u("paperfetch://fetcher/pod-a")}, "pod-a", true},
		{[]*url.URL{u("paperfetch://fetcher/pod-a")}, "pod-b", false},
		{[]*url.URL{u("paperfetch://fetcher/pod-*"), u("paperfetch://fetcher/x")}, "pod-9", true},
		{[]*url.URL{u("paperfetch://fetcher/a*b")}, "a*b", false}, // invalid only: nothing allowed
	} {
		ctx := callCtx("/svc.Gateway/Work", "", false)
		leaf := &x509.Certificate{URIs: tt.uris}
		ctx = peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}}})
		ctx, err := g.AuthFunc(ctx)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := IdentityFrom(ctx)
		if got := id.FetcherIDs.Allows(tt.id); got != tt.allowed {
			t.Errorf("SANs %v, id %s: allowed %v, want %v", tt.uris, tt.id, got, tt.allowed)
		}
	}
}
