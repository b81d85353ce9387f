// Package grpcclient dials the paperfetch services the same way from every client (the fetcher,
// the CLI): transport security, credentials, keepalive and message limits come from shared flags.
//
// Transport security is on when any of --tls, --tls-ca, --tls-cert or --tls-server-name is
// given. A bearer token (--token-file, or the PAPERFETCH_TOKEN environment variable) is sent
// with every call and requires transport security unless the target is on loopback.
package grpcclient

import (
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/paperfetch/paperfetch/internal/tlsreload"
)

// TokenEnv is the environment variable holding a bearer token when --token-file is not given.
const TokenEnv = "PAPERFETCH_TOKEN"

// KeepaliveTime is how often a client pings an idle connection. Servers' keepalive
// enforcement policy (grpcserver) permits pings this frequent, so neither side sends GOAWAY
// "too_many_pings".
const KeepaliveTime = 30 * time.Second

// KeepaliveTimeout is how long a client waits for a ping's answer before closing the
// connection.
const KeepaliveTimeout = 10 * time.Second

// MaxMessageSize is the largest message a client sends or accepts (16 MiB).
const MaxMessageSize = 16 << 20

// KeepaliveParams returns the client keepalive settings; the servers' enforcement policy allows
// them.
func KeepaliveParams() keepalive.ClientParameters {
	return keepalive.ClientParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout, PermitWithoutStream: true}
}

// Flags holds the client flags shared by the binaries that call a paperfetch service.
type Flags struct {
	// TLS turns on transport security with the system roots (implied by the other TLS flags).
	TLS bool
	// CAFile is a PEM bundle of the CAs that sign the server's certificate (--tls-ca).
	CAFile string
	// ServerName overrides the name verified in the server's certificate (--tls-server-name).
	ServerName string
	// TokenFile holds the bearer token sent with every call (--token-file).
	TokenFile string
	// LookupEnv reads the environment (PAPERFETCH_TOKEN); nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)

	keyPair *tlsreload.KeyPairFlags // --tls-cert/--tls-key, shared with the server flags
}

// RegisterFlags registers the client flags on fs. --tls-cert and --tls-key (the client
// certificate for mTLS) are shared with the server flags of grpcserver when a binary registers
// both: one key pair then serves as the server's and the client's certificate.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.BoolVar(&f.TLS, "tls", false, "dial with TLS, verifying the server against the system roots (implied by --tls-ca, --tls-cert, --tls-server-name)")
	fs.StringVar(&f.CAFile, "tls-ca", "", "PEM `file` of CA certificates that sign the server's certificate (turns on TLS)")
	fs.StringVar(&f.ServerName, "tls-server-name", "", "server `name` to verify in its certificate (default: the host of the address dialed)")
	fs.StringVar(&f.TokenFile, "token-file", "", "`file` holding the bearer token sent with every call (default: the "+TokenEnv+" environment variable); needs TLS unless the server is on loopback")
	f.keyPair = tlsreload.RegisterKeyPairFlags(fs)
	return f
}

// useTLS reports whether the flags ask for transport security.
func (f *Flags) useTLS() bool {
	cert, _ := f.keyPair.Files()
	return f.TLS || f.CAFile != "" || cert != "" || f.ServerName != ""
}

// TransportCredentials builds the transport credentials of the flags.
func (f *Flags) TransportCredentials() (credentials.TransportCredentials, error) {
	if !f.useTLS() {
		return insecure.NewCredentials(), nil
	}
	var roots *tlsreload.CertPool
	if f.CAFile != "" {
		p, err := tlsreload.LoadCertPool(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		roots = p
	}
	var kp *tlsreload.KeyPair
	if cert, key := f.keyPair.Files(); cert != "" || key != "" {
		k, err := tlsreload.LoadKeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		kp = k
	}
	return credentials.NewTLS(tlsreload.ClientConfig(roots, kp, f.ServerName)), nil
}

// token returns the configured token source, or nil when no token is configured.
func (f *Flags) token() (*tokenCredentials, error) {
	if f.TokenFile != "" {
		t := &tokenCredentials{path: f.TokenFile}
		if _, err := t.read(); err != nil {
			return nil, err
		}
		return t, nil
	}
	lookup := f.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	if v, ok := lookup(TokenEnv); ok && v != "" {
		return &tokenCredentials{static: v}, nil
	}
	return nil, nil
}

// Dial creates a client connection to target (host:port) configured by the flags. extra
// options come last and may override.
func (f *Flags) Dial(target string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	creds, err := f.TransportCredentials()
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", target, err)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(KeepaliveParams()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
	}
	tok, err := f.token()
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", target, err)
	}
	if tok != nil {
		tok.requireSecurity = !IsLoopback(target)
		if tok.requireSecurity && !f.useTLS() {
			return nil, fmt.Errorf("connect to %s: a bearer token is only sent over TLS to a non-loopback server: set --tls-ca (or --tls)", target)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(tok))
	}
	opts = append(opts, extra...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", target, err)
	}
	return conn, nil
}
