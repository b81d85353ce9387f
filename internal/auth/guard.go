package auth

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"strings"

	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TokenChecker reports whether a bearer token is accepted. *TokenFile and *TokenSet implement
// it.
type TokenChecker interface {
	Contains(token string) bool
}

// Requirement says what a caller of a service must present. The zero value is open: every
// caller is accepted.
type Requirement struct {
	// Tokens, when set, are the bearer tokens accepted.
	Tokens TokenChecker
	// ClientCert, when true, accepts a caller with a TLS client certificate verified against
	// the server's client CA.
	ClientCert bool
}

// Open reports whether the requirement accepts every caller.
func (r Requirement) Open() bool { return r.Tokens == nil && !r.ClientCert }

// Guard authenticates calls per service. Services not listed get Default. Health and
// reflection are excluded by the server's interceptor chain, not here.
type Guard struct {
	// Services maps a full service name ("paperfetch.v1.CoordinatorService") to its requirement.
	Services map[string]Requirement
	// Default applies to services not in Services.
	Default Requirement
}

// Identity is who a call was authenticated as, stored in the call's context.
type Identity struct {
	// Method is "token", "client-cert" or "none" (an open service).
	Method string
	// Subject identifies the caller without revealing secrets: "token:<first 8 hex digits of
	// its SHA-256>" or the certificate's subject common name.
	Subject string
	// FetcherIDs are the fetcher ids the credential may use on FetcherGatewayService (nil: any;
	// see fetcherids.go).
	FetcherIDs *FetcherIDs
}

type identityKey struct{}

// IdentityFrom returns the identity stored by the Guard, if any.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// AuthFunc authenticates the call in ctx (a server-side context: grpc.Method names the call).
// It returns UNAUTHENTICATED when the caller presents nothing acceptable.
func (g *Guard) AuthFunc(ctx context.Context) (context.Context, error) {
	method, _ := grpc.Method(ctx)
	req := g.requirement(method)
	if req.Open() {
		return context.WithValue(ctx, identityKey{}, Identity{Method: "none"}), nil
	}
	if req.ClientCert {
		if cert, ok := verifiedClientCert(ctx); ok {
			return context.WithValue(ctx, identityKey{}, Identity{Method: "client-cert", Subject: "cert:" + cert.Subject.CommonName,
				FetcherIDs: certFetcherIDs(cert)}), nil
		}
	}
	if req.Tokens == nil {
		return nil, status.Error(codes.Unauthenticated, "a verified TLS client certificate is required")
	}
	token, err := grpcauth.AuthFromMD(ctx, "bearer")
	if err != nil {
		if req.ClientCert {
			return nil, status.Error(codes.Unauthenticated, "a bearer token or a verified TLS client certificate is required")
		}
		return nil, status.Error(codes.Unauthenticated, "a bearer token is required (authorization: Bearer <token>)")
	}
	var ids *FetcherIDs
	if l, ok := req.Tokens.(FetcherIDLookup); ok {
		var known bool
		if ids, known = l.FetcherIDs(token); !known {
			return nil, status.Error(codes.Unauthenticated, "invalid bearer token")
		}
	} else if !req.Tokens.Contains(token) {
		return nil, status.Error(codes.Unauthenticated, "invalid bearer token")
	}
	sum := sha256.Sum256([]byte(token))
	return context.WithValue(ctx, identityKey{}, Identity{Method: "token", Subject: "token:" + hex.EncodeToString(sum[:4]), FetcherIDs: ids}), nil
}

// UnaryServerInterceptor authenticates unary calls.
func (g *Guard) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return grpcauth.UnaryServerInterceptor(g.AuthFunc)
}

// StreamServerInterceptor authenticates streams when they open.
func (g *Guard) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return grpcauth.StreamServerInterceptor(g.AuthFunc)
}

func (g *Guard) requirement(fullMethod string) Requirement {
	svc := strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(svc, '/'); i >= 0 {
		svc = svc[:i]
	}
	if r, ok := g.Services[svc]; ok {
		return r
	}
	return g.Default
}

// verifiedClientCert returns the caller's TLS client certificate when the TLS stack verified
// it against the configured client CAs.
func verifiedClientCert(ctx context.Context) (*x509.Certificate, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, false
	}
	return info.State.VerifiedChains[0][0], true
}
