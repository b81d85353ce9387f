package fetcher

import (
	"context"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

func fetchClient(t *testing.T, tf *testFetcher) pb.FetcherServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	tf.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(); srv.Stop() })
	return pb.NewFetcherServiceClient(conn)
}

func collect(t *testing.T, c pb.FetcherServiceClient, req *pb.FetchRequest) ([]*pb.DownloadEvent, error) {
	t.Helper()
	st, err := c.Fetch(context.Background(), req)
	if err != nil {
		return nil, err
	}
	var evs []*pb.DownloadEvent
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
		evs = append(evs, m.GetEvent())
	}
}

func TestFetchService(t *testing.T) {
	pdf := pdfBody(200_000, 21)
	srv := hostileOrigin(t, pdf)
	tf := newTestFetcher(t, nil)
	c := fetchClient(t, tf)

	// Validate only: nothing stored.
	evs, err := collect(t, c, &pb.FetchRequest{Url: srv.URL + "/chain/2"})
	if err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1].GetCompleted()
	if evs[0].GetStarted() == nil || last == nil || last.GetSha256() != sha(pdf) || last.GetBlobKey() != "" || last.GetFinalUrl() != srv.URL+"/pdf" {
		t.Fatalf("events %v", evs)
	}
	for i, ev := range evs {
		if ev.GetSequence() != int64(i+1) || ev.GetLeaseId() != "" {
			t.Fatalf("event %d: %v", i, ev)
		}
	}
	tf.assertStore(t)

	// Store.
	evs, err = collect(t, c, &pb.FetchRequest{Url: srv.URL + "/pdf", Store: true, ExpectedSha256: sha(pdf)})
	if err != nil {
		t.Fatal(err)
	}
	key := blobstore.ContentKey(sha(pdf))
	if got := evs[len(evs)-1].GetCompleted().GetBlobKey(); got != key {
		t.Fatalf("blob key %q, want %q", got, key)
	}
	tf.assertStore(t, key)

	// Failures are events, not RPC errors.
	evs, err = collect(t, c, &pb.FetchRequest{Url: srv.URL + "/status/404"})
	if err != nil {
		t.Fatal(err)
	}
	if f := evs[len(evs)-1].GetFailed(); f.GetReason() != pb.FailureReason_FAILURE_REASON_NOT_FOUND || f.GetHttpStatus() != 404 {
		t.Fatalf("events %v", evs)
	}
	evs, err = collect(t, c, &pb.FetchRequest{Url: srv.URL + "/endless", MaxSizeBytes: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	if f := evs[len(evs)-1].GetFailed(); f.GetReason() != pb.FailureReason_FAILURE_REASON_TOO_LARGE {
		t.Fatalf("events %v", evs)
	}

	// Malformed requests are INVALID_ARGUMENT.
	for _, req := range []*pb.FetchRequest{{}, {Url: srv.URL, ExpectedSha256: "abc"}, {Url: srv.URL, MaxSizeBytes: -1}} {
		if _, err := collect(t, c, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: err %v, want InvalidArgument", req, err)
		}
	}
}
