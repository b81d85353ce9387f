package fetcher

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

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

// fieldOf returns the first BadRequest field of an INVALID_ARGUMENT error, or "".
func fieldOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

// TestFetchServiceLimits: a caller can only lower the fetcher's limits, and the calls running
// at once are bounded.
func TestFetchServiceLimits(t *testing.T) {
	pdf := pdfBody(20_000, 3)
	arrived := make(chan struct{}, 16)
	gate := make(chan struct{})
	var openGate sync.Once
	release := func() { openGate.Do(func() { close(gate) }) }
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-gate
		}
		w.Header().Set("Content-Type", "application/pdf")
		_, _ = w.Write(pdf)
	}))
	t.Cleanup(origin.Close)
	t.Cleanup(release) // runs first: a failing test does not leave the origin blocked
	tf := newTestFetcher(t, func(c *Config) { c.MaxSize = 100_000; c.Timeout = time.Minute; c.MaxFetchCalls = 2 })
	c := fetchClient(t, tf)

	for _, tc := range []struct {
		req   *pb.FetchRequest
		field string
	}{
		{&pb.FetchRequest{Url: origin.URL, MaxSizeBytes: 100_001}, "max_size_bytes"},
		{&pb.FetchRequest{Url: origin.URL, MaxSizeBytes: 1 << 40}, "max_size_bytes"},
		{&pb.FetchRequest{Url: origin.URL, Timeout: durationpb.New(24 * time.Hour)}, "timeout"},
		{&pb.FetchRequest{Url: origin.URL, Timeout: durationpb.New(time.Minute + time.Nanosecond)}, "timeout"},
	} {
		_, err := collect(t, c, tc.req)
		if status.Code(err) != codes.InvalidArgument || fieldOf(err) != tc.field {
			t.Errorf("%v: err %v (field %q), want InvalidArgument naming %s", tc.req, err, fieldOf(err), tc.field)
		}
	}
	// Lower limits are honoured.
	evs, err := collect(t, c, &pb.FetchRequest{Url: origin.URL + "/pdf", MaxSizeBytes: 10_000, Timeout: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if f := evs[len(evs)-1].GetFailed(); f.GetReason() != pb.FailureReason_FAILURE_REASON_TOO_LARGE {
		t.Fatalf("events %v, want TOO_LARGE at 10,000 bytes", evs)
	}

	// Two calls run; a third is refused while they do.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			st, err := c.Fetch(ctx, &pb.FetchRequest{Url: origin.URL + "/slow"})
			if err == nil {
				for err == nil {
					_, err = st.Recv()
				}
			}
			errs <- err
		}()
	}
	<-arrived
	<-arrived
	if _, err := collect(t, c, &pb.FetchRequest{Url: origin.URL + "/pdf"}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third concurrent call: err %v, want ResourceExhausted", err)
	}
	release()
	for range 2 {
		if err := <-errs; err != io.EOF {
			t.Fatalf("running call: %v", err)
		}
	}
	if evs, err := collect(t, c, &pb.FetchRequest{Url: origin.URL + "/pdf"}); err != nil || evs[len(evs)-1].GetCompleted() == nil {
		t.Fatalf("after the calls finished: %v %v", evs, err)
	}
}

// TestHTTPClientIdleBounds: the origin-facing client keeps a bounded number of idle
// connections, sized from the downloads that may run at once (slots + prefetch), and closes
// them after idleConnTimeout.
func TestHTTPClientIdleBounds(t *testing.T) {
	tf := newTestFetcher(t, func(c *Config) { c.Slots, c.Prefetch = 16, 4 })
	h1 := tf.dl.client.Transport.(*h1Transport)
	if h1.maxIdle != 48 || h1.maxIdlePerHost != 20 || h1.idleTimeout != idleConnTimeout {
		t.Fatalf("h1: maxIdle %d, maxIdlePerHost %d, idleTimeout %s", h1.maxIdle, h1.maxIdlePerHost, h1.idleTimeout)
	}
	tr := h1.std
	if tr.MaxIdleConns != 48 || tr.MaxIdleConnsPerHost != 20 || tr.IdleConnTimeout != idleConnTimeout || tr.Proxy != nil || !tr.DisableCompression {
		t.Fatalf("MaxIdleConns %d, MaxIdleConnsPerHost %d, IdleConnTimeout %s", tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.IdleConnTimeout)
	}
}
