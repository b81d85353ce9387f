package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// harness runs a Coordinator on a bufconn gRPC server.
type harness struct {
	t       testing.TB
	cfg     Config
	c       *Coordinator
	srv     *grpc.Server
	lis     *bufconn.Listener
	cancel  context.CancelFunc
	runDone chan error
	conn    *grpc.ClientConn
	api     pb.CoordinatorServiceClient
	gw      pb.FetcherGatewayServiceClient
	stopped bool
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("COORD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig is the configuration of the test harnesses: DefaultConfig in a temporary folder,
// without the politeness delay (PerHostDelay 0), changed by mutate (when not nil).
func testConfig(t testing.TB, mutate func(*Config)) Config {
	return configIn(t, t.TempDir(), mutate)
}

// configIn is testConfig with its data directory.
func configIn(t testing.TB, dataDir string, mutate func(*Config)) Config {
	cfg := DefaultConfig()
	cfg.DataDir = dataDir
	cfg.Logger = testLogger(t)
	cfg.PerHostDelay = 0
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg
}

// startHarness opens a coordinator on testConfig(t, mutate) and serves it in-process.
func startHarness(t testing.TB, mutate func(*Config)) *harness {
	t.Helper()
	return startHarnessWith(t, mutate, nil)
}

// startHarnessWith is startHarness calling prepare, when not nil, before the loop runs.
func startHarnessWith(t testing.TB, mutate func(*Config), prepare func(*Coordinator)) *harness {
	t.Helper()
	cfg := testConfig(t, mutate)
	c, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if prepare != nil {
		prepare(c)
	}
	h := &harness{t: t, cfg: cfg, c: c, lis: bufconn.Listen(1 << 20), runDone: make(chan error, 1)}
	h.srv = grpc.NewServer()
	c.Register(h.srv)
	go func() { _ = h.srv.Serve(h.lis) }()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.runDone <- c.Run(ctx) }()
	h.conn, err = grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return h.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	h.api = pb.NewCoordinatorServiceClient(h.conn)
	h.gw = pb.NewFetcherGatewayServiceClient(h.conn)
	t.Cleanup(h.stop)
	return h
}

// stop shuts the coordinator down gracefully.
func (h *harness) stop() {
	if h.stopped {
		return
	}
	h.stopped = true
	h.c.CloseStreams()
	_ = h.conn.Close()
	h.srv.Stop()
	h.cancel()
	if err := <-h.runDone; err != nil {
		h.t.Errorf("Run: %v", err)
	}
	if err := h.c.Close(); err != nil {
		h.t.Errorf("Close: %v", err)
	}
}

// crash stops the coordinator abruptly: streams are cut, the loop is cancelled mid-flight
// and the store closed, with no graceful shutdown of the streams.
func (h *harness) crash() {
	if h.stopped {
		return
	}
	h.stopped = true
	h.cancel()
	<-h.runDone
	_ = h.conn.Close()
	h.srv.Stop()
	_ = h.c.Close()
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func specs(prefix string, n int, hosts int) []*pb.PaperSpec {
	out := make([]*pb.PaperSpec, n)
	for i := range out {
		out[i] = &pb.PaperSpec{
			PaperId: fmt.Sprintf("%s-%d", prefix, i),
			Urls:    []string{fmt.Sprintf("https://h%d.example/%s/%d.pdf", i%max(hosts, 1), prefix, i)},
		}
	}
	return out
}

func fakeSHA(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// fakeFetcher speaks the Work protocol; by default it completes every Assign at once.
type fakeFetcher struct {
	t      testing.TB
	id     string
	slots  int
	stream pb.FetcherGatewayService_WorkClient
	cancel context.CancelFunc
	done   chan struct{}
	// onAssign decides what to do with an assignment (runs on the receive goroutine).
	onAssign func(f *fakeFetcher, a *pb.Assign)

	mu      sync.Mutex
	assigns []*pb.Assign
	acks    map[string]int64
	cancels []string
	seq     map[string]int64
	recvErr error
}

func completeNow(f *fakeFetcher, a *pb.Assign) {
	f.sendEvent(a, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{Url: a.GetUrl()}}})
	f.complete(a)
	f.credit(1)
}

func (f *fakeFetcher) complete(a *pb.Assign) {
	sha := fakeSHA(a.GetPaperId())
	f.sendEvent(a, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Completed{Completed: &pb.DownloadCompleted{
		Sha256: sha, Size: int64(len(a.GetPaperId())) + 100, BlobKey: "sha256/" + sha[:2] + "/" + sha + ".pdf",
		FinalUrl: a.GetUrl(), ContentType: "application/pdf", Duration: durationpb.New(time.Millisecond),
	}}})
}

func (f *fakeFetcher) failWith(a *pb.Assign, class pb.FailureClass, reason pb.FailureReason, retryAfter time.Duration) {
	fl := &pb.DownloadFailed{Class: class, Reason: reason, Message: "test failure", Url: a.GetUrl()}
	if retryAfter > 0 {
		fl.RetryAfter = durationpb.New(retryAfter)
	}
	f.sendEvent(a, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Failed{Failed: fl}})
}

func (f *fakeFetcher) sendEvent(a *pb.Assign, ev *pb.DownloadEvent) {
	f.mu.Lock()
	f.seq[a.GetLeaseId()]++
	ev.Sequence = f.seq[a.GetLeaseId()]
	f.mu.Unlock()
	ev.LeaseId, ev.Attempt, ev.BatchId, ev.PaperId = a.GetLeaseId(), a.GetAttempt(), a.GetBatchId(), a.GetPaperId()
	_ = f.stream.Send(&pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: ev}})
}

func (f *fakeFetcher) credit(n int) {
	_ = f.stream.Send(&pb.WorkRequest{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: int32(n)}}})
}

func startFetcher(t testing.TB, h *harness, id string, slots int, onAssign func(*fakeFetcher, *pb.Assign), inFlight ...*pb.InFlightLease) *fakeFetcher {
	t.Helper()
	if onAssign == nil {
		onAssign = completeNow
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := h.gw.Work(ctx)
	if err != nil {
		cancel()
		t.Fatalf("Work: %v", err)
	}
	f := &fakeFetcher{t: t, id: id, slots: slots, stream: stream, cancel: cancel, done: make(chan struct{}),
		onAssign: onAssign, acks: map[string]int64{}, seq: map[string]int64{}}
	if err := stream.Send(&pb.WorkRequest{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{
		FetcherId: id, BootId: "boot-" + id, Slots: int32(slots), InFlight: inFlight}}}); err != nil {
		cancel()
		t.Fatalf("send hello: %v", err)
	}
	go func() {
		defer close(f.done)
		for {
			m, err := stream.Recv()
			if err != nil {
				f.mu.Lock()
				f.recvErr = err
				f.mu.Unlock()
				return
			}
			switch x := m.GetMsg().(type) {
			case *pb.WorkResponse_Assign:
				f.mu.Lock()
				f.assigns = append(f.assigns, x.Assign)
				f.mu.Unlock()
				f.onAssign(f, x.Assign)
			case *pb.WorkResponse_Ack:
				f.mu.Lock()
				f.acks[x.Ack.GetLeaseId()] = x.Ack.GetSequence()
				f.mu.Unlock()
			case *pb.WorkResponse_Cancel:
				f.mu.Lock()
				f.cancels = append(f.cancels, x.Cancel.GetLeaseId())
				f.mu.Unlock()
			}
		}
	}()
	t.Cleanup(f.kill)
	return f
}

// kill breaks the stream (like a crashed fetcher).
func (f *fakeFetcher) kill() {
	f.cancel()
	<-f.done
}

// closeSend ends the stream politely and waits for the server to finish it.
func (f *fakeFetcher) closeSend() error {
	_ = f.stream.CloseSend()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	if errors.Is(f.recvErr, io.EOF) {
		return nil
	}
	return f.recvErr
}

func (f *fakeFetcher) assignCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.assigns)
}

func (f *fakeFetcher) ackCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.acks)
}

// waitFor polls cond (the system under test runs on real goroutines; polling a condition is
// not a sleep used as synchronisation).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// watchToEnd follows a batch until its terminal message and returns it.
func watchToEnd(t testing.TB, h *harness, id string) *pb.Batch {
	t.Helper()
	ws, err := h.api.WatchBatch(ctxT(t), &pb.WatchBatchRequest{BatchId: id})
	if err != nil {
		t.Fatalf("WatchBatch: %v", err)
	}
	var last *pb.Batch
	for {
		m, err := ws.Recv()
		if errors.Is(err, io.EOF) {
			return last
		}
		if err != nil {
			t.Fatalf("watch recv: %v", err)
		}
		last = m.GetBatch()
	}
}
