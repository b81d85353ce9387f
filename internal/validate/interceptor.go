package validate

import (
	"context"

	"google.golang.org/grpc"
)

// UnaryServerInterceptor validates every unary request with Request and answers
// INVALID_ARGUMENT without calling the handler when it is invalid.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := Request(req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor validates every message received on a stream with Request; an
// invalid one makes RecvMsg return the INVALID_ARGUMENT error, which the handler returns.
func StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &validatingStream{ServerStream: ss})
	}
}

// validatingStream validates each received message.
type validatingStream struct {
	grpc.ServerStream
}

// RecvMsg receives m and validates it.
func (s *validatingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return Request(m)
}
