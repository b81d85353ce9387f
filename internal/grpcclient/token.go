package grpcclient

import (
	"context"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
)

// tokenCredentials sends "authorization: Bearer <token>" with every call. A token file is
// re-read for every call (calls that need one are few: the fetcher's Work stream, CLI
// commands), so a rotated token is used without a restart.
type tokenCredentials struct {
	path            string
	static          string
	requireSecurity bool
}

// GetRequestMetadata returns the authorization header.
func (t *tokenCredentials) GetRequestMetadata(_ context.Context, _ ...string) (map[string]string, error) {
	tok, err := t.read()
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity is true unless the target is on loopback; gRPC then refuses to send
// the token over a connection without transport security.
func (t *tokenCredentials) RequireTransportSecurity() bool { return t.requireSecurity }

// read returns the token: the first line of the file that is neither blank nor a # comment.
func (t *tokenCredentials) read() (string, error) {
	if t.path == "" {
		return t.static, nil
	}
	data, err := os.ReadFile(t.path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			return line, nil
		}
	}
	return "", fmt.Errorf("token file %s holds no token", t.path)
}

var _ credentials.PerRPCCredentials = (*tokenCredentials)(nil)
