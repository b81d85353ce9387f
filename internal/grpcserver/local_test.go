package grpcserver

import (
	"context"
	"flag"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// TestLocalConnection: the in-process connection reaches the server through the same
// interceptors (a call without the token is UNAUTHENTICATED), also when the server speaks TLS
// (the connection accepts the server's own certificate without a CA), and Serve stops it.
func TestLocalConnection(t *testing.T) {
	p := newPKI(t)
	for _, tls := range []bool{false, true} {
		args := []string{"--tokens", writeFile(t, p.dir, "tokens", "local-token\n")}
		if tls {
			args = append(args, "--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.ca)
		}
		fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
		sf := RegisterFlags(fs, roleCoordinator)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		srv, err := sf.NewServer(testLogger(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		if (srv.HTTPTLSConfig() != nil) != tls {
			t.Fatalf("tls=%v: HTTPTLSConfig %v", tls, srv.HTTPTLSConfig())
		}
		pb.RegisterCoordinatorServiceServer(srv.GRPC, newFake())
		conn, err := srv.Local()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, listen(t)) }()

		client := pb.NewCoordinatorServiceClient(conn)
		callCtx, callCancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := client.GetBatch(callCtx, &pb.GetBatchRequest{BatchId: "b"}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("tls=%v: without a token: %v", tls, err)
		}
		authed := metadata.AppendToOutgoingContext(callCtx, "authorization", "Bearer local-token")
		if r, err := client.GetBatch(authed, &pb.GetBatchRequest{BatchId: "b"}); err != nil || r.GetBatch().GetBatchId() != "b" {
			t.Errorf("tls=%v: with the token: %v %v", tls, r, err)
		}
		callCancel()
		_ = conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}
