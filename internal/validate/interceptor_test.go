package validate

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func TestUnaryServerInterceptor(t *testing.T) {
	icpt := UnaryServerInterceptor()
	called := false
	h := func(context.Context, any) (any, error) { called = true; return "ok", nil }
	if _, err := icpt(t.Context(), &pb.GetBatchRequest{}, &grpc.UnaryServerInfo{}, h); status.Code(err) != codes.InvalidArgument || called {
		t.Fatalf("invalid request: err %v, handler called %v", err, called)
	}
	if resp, err := icpt(t.Context(), &pb.GetBatchRequest{BatchId: "b"}, &grpc.UnaryServerInfo{}, h); err != nil || resp != "ok" {
		t.Fatalf("valid request: %v %v", resp, err)
	}
}

type fakeStream struct {
	grpc.ServerStream
	msg *pb.WatchBatchRequest
}

func (f *fakeStream) Context() context.Context { return context.Background() }
func (f *fakeStream) RecvMsg(m any) error {
	*m.(*pb.WatchBatchRequest) = pb.WatchBatchRequest{BatchId: f.msg.GetBatchId()}
	return nil
}

func TestStreamServerInterceptor(t *testing.T) {
	icpt := StreamServerInterceptor()
	h := func(_ any, ss grpc.ServerStream) error {
		var m pb.WatchBatchRequest
		return ss.RecvMsg(&m)
	}
	if err := icpt(nil, &fakeStream{msg: &pb.WatchBatchRequest{}}, &grpc.StreamServerInfo{}, h); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("invalid: %v", err)
	}
	if err := icpt(nil, &fakeStream{msg: &pb.WatchBatchRequest{BatchId: "b"}}, &grpc.StreamServerInfo{}, h); err != nil {
		t.Fatalf("valid: %v", err)
	}
}
