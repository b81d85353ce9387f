package grpcserver

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// TestForwardedClient: a call on the in-process connection that names the client it acts for
// (ForwardedClientKey) has that client as its peer, unary and streaming; an invalid or repeated
// value leaves the in-process peer; on a network connection the key is ignored.
func TestForwardedClient(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	record := func(ctx context.Context) {
		p, _ := peer.FromContext(ctx)
		mu.Lock()
		seen = append(seen, p.Addr.String())
		mu.Unlock()
	}
	srv := New(Config{
		Logger: testLogger(t),
		Unary: []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			record(ctx)
			return h(ctx, req)
		}},
		Stream: []grpc.StreamServerInterceptor{func(s any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			record(ss.Context())
			return h(s, ss)
		}},
	})
	pb.RegisterCoordinatorServiceServer(srv.GRPC, newFake())
	local, err := srv.Local()
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	lis := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	remote, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()

	callCtx, callCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer callCancel()
	for _, c := range []struct {
		conn *grpc.ClientConn
		vals []string
		want string
	}{
		{local, []string{"192.0.2.7:4321"}, "192.0.2.7:4321"},
		{local, []string{"[2001:db8::1]:80"}, "[2001:db8::1]:80"},
		{local, []string{"192.0.2.8"}, "192.0.2.8:0"},
		{local, nil, "in-process"},
		{local, []string{"not an address"}, "in-process"},
		{local, []string{"192.0.2.7:1", "192.0.2.8:1"}, "in-process"},
		{remote, []string{"192.0.2.7:4321"}, "127.0.0.1:"},
	} {
		ctx := callCtx
		for _, v := range c.vals {
			ctx = metadata.AppendToOutgoingContext(ctx, ForwardedClientKey, v)
		}
		client := pb.NewCoordinatorServiceClient(c.conn)
		if _, err := client.GetBatch(ctx, &pb.GetBatchRequest{BatchId: "b"}); err != nil {
			t.Fatal(err)
		}
		stream, err := client.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: "b"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		got := seen
		seen = nil
		mu.Unlock()
		if len(got) != 2 || got[0] != got[1] || (got[0] != c.want && !(c.want == "127.0.0.1:" && len(got[0]) > len(c.want) && got[0][:len(c.want)] == c.want)) {
			t.Errorf("forwarded %q: peers %q, want %q", c.vals, got, c.want)
		}
	}
}
