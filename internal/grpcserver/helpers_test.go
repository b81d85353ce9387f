package grpcserver

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/grpcclient"
	"github.com/paperfetch/paperfetch/internal/validate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeCoordinator is a tiny CoordinatorService + FetcherGatewayService.
type fakeCoordinator struct {
	pb.UnimplementedCoordinatorServiceServer
	pb.UnimplementedFetcherGatewayServiceServer

	watchStarted chan struct{} // closed when WatchBatch "block" starts
	blocked      chan struct{} // receives one value per WatchBatch "block" started (up to its capacity)
	release      chan struct{} // WatchBatch "block" returns when closed
	once         sync.Once
	releaseOnce  sync.Once
}

// releaseAll lets blocked WatchBatch calls finish.
func (f *fakeCoordinator) releaseAll() { f.releaseOnce.Do(func() { close(f.release) }) }

func newFake() *fakeCoordinator {
	return &fakeCoordinator{watchStarted: make(chan struct{}), blocked: make(chan struct{}, 256), release: make(chan struct{})}
}

func (f *fakeCoordinator) GetBatch(_ context.Context, r *pb.GetBatchRequest) (*pb.GetBatchResponse, error) {
	return &pb.GetBatchResponse{Batch: &pb.Batch{BatchId: r.GetBatchId()}}, nil
}

func (f *fakeCoordinator) SubmitBatch(_ context.Context, r *pb.SubmitBatchRequest) (*pb.SubmitBatchResponse, error) {
	return &pb.SubmitBatchResponse{BatchId: "b1", Created: true}, nil
}

func (f *fakeCoordinator) ListBatches(context.Context, *pb.ListBatchesRequest) (*pb.ListBatchesResponse, error) {
	panic("boom: handler bug")
}

func (f *fakeCoordinator) WatchBatch(r *pb.WatchBatchRequest, s grpc.ServerStreamingServer[pb.WatchBatchResponse]) error {
	if r.GetBatchId() == "block" {
		f.once.Do(func() { close(f.watchStarted) })
		select {
		case f.blocked <- struct{}{}:
		default:
		}
		<-f.release
	}
	return s.Send(&pb.WatchBatchResponse{Snapshot: true, Batch: &pb.Batch{BatchId: r.GetBatchId()}})
}

func (f *fakeCoordinator) Work(s grpc.BidiStreamingServer[pb.WorkRequest, pb.WorkResponse]) error {
	m, err := s.Recv()
	if err != nil {
		return err
	}
	if m.GetHello() == nil {
		return status.Error(codes.InvalidArgument, "first message must be Hello")
	}
	return s.Send(&pb.WorkResponse{Msg: &pb.WorkResponse_Ack{Ack: &pb.Ack{LeaseId: m.GetHello().GetFetcherId()}}})
}

// testServer is a running server (coordinator or fetcher role).
type testServer struct {
	srv     *Server
	addr    string
	fake    *fakeCoordinator
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
	metrics string // host:port of /metrics, if any
	health  string // host:port of the plaintext health port, if any
}

// startCoordinator builds a coordinator-role server from command-line flags and serves it on
// 127.0.0.1:0 until the test ends.
func startCoordinator(t testing.TB, args ...string) *testServer {
	t.Helper()
	return startServer(t, roleCoordinator, args...)
}

// fakeFetcher is a FetcherService whose Fetch is unimplemented (enough for connection tests).
type fakeFetcher struct {
	pb.UnimplementedFetcherServiceServer
}

// startServer builds a server of the role from command-line flags (a fake CoordinatorService
// and FetcherGatewayService for the coordinator, a fake FetcherService for a fetcher) and
// The roles of the two binaries, as cmd/coordinator and cmd/fetcher name them.
var (
	roleCoordinator = Role{Clients: "CoordinatorService", Gateway: pb.FetcherGatewayService_ServiceDesc.ServiceName, Validate: validate.Request}
	roleFetcher     = Role{Clients: "FetcherService", Validate: validate.Request}
)

// serves it on 127.0.0.1:0 until the test ends.
func startServer(t testing.TB, role Role, args ...string) *testServer {
	t.Helper()
	return startServerLogged(t, testLogger(t), role, args...)
}

// startServerLogged is startServer with the server's logger.
func startServerLogged(t testing.TB, logger *slog.Logger, role Role, args ...string) *testServer {
	t.Helper()
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	sf := RegisterFlags(fs, role)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv, err := sf.NewServer(logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{srv: srv, fake: newFake(), reg: reg, done: make(chan error, 1)}
	if sf.MetricsListen != "" {
		l := listen(t)
		srv.cfg.MetricsListener, ts.metrics = l, l.Addr().String()
	}
	if sf.HealthListen != "" {
		l := listen(t)
		srv.cfg.HealthListener, ts.health = l, l.Addr().String()
	}
	if role.Gateway == "" {
		pb.RegisterFetcherServiceServer(srv.GRPC, fakeFetcher{})
	} else {
		pb.RegisterCoordinatorServiceServer(srv.GRPC, ts.fake)
		pb.RegisterFetcherGatewayServiceServer(srv.GRPC, ts.fake)
	}
	lis := listen(t)
	ts.addr = lis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

// stop shuts the server down and waits for Serve (idempotent).
func (ts *testServer) stop(t testing.TB) {
	t.Helper()
	ts.cancel()
	ts.fake.releaseAll()
	if err, ok := <-ts.done; ok {
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		close(ts.done)
	}
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// dial connects with grpcclient flags given as command-line arguments.
func dial(t testing.TB, target string, args ...string) *grpc.ClientConn {
	t.Helper()
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	cf := grpcclient.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	cf.LookupEnv = func(string) (string, bool) { return "", false }
	conn, err := cf.Dial(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// writeFile writes content to a new file in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code %v, want %v (err %v)", what, got, want, err)
	}
}

// openWork opens a Work stream, sends Hello and returns the first answer's error.
func openWork(ctx context.Context, conn *grpc.ClientConn) error {
	s, err := pb.NewFetcherGatewayServiceClient(conn).Work(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(&pb.WorkRequest{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: "f1", Slots: 1}}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = s.Recv()
	return err
}
