// Package grpcclient dials the paperfetch services the same way from every client (the fetcher,
// the CLI): transport security, credentials, keepalive and message limits come from shared flags.
package grpcclient

import (
	"flag"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Flags holds the client flags shared by the binaries that call a paperfetch service.
type Flags struct{}

// RegisterFlags registers the client flags on fs.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	return &Flags{}
}

// KeepaliveParams are the client keepalive settings; the servers' enforcement policy allows them.
var KeepaliveParams = keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

// MaxMessageSize is the largest message a client sends or accepts (16 MiB).
const MaxMessageSize = 16 << 20

// Dial creates a client connection to target (host:port) configured by the flags.
func (f *Flags) Dial(target string, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(KeepaliveParams),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
	}, extra...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", target, err)
	}
	return conn, nil
}
