package fetcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
	"github.com/paperfetch/paperfetch/internal/clock"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// testWait bounds every wait in these tests; it is a failure timeout, not synchronisation.
const testWait = 20 * time.Second

// fakeCoordinator serves FetcherGatewayService and hands each Work stream to the test.
type fakeCoordinator struct {
	pb.UnimplementedFetcherGatewayServiceServer
	streams chan *fakeStream
}

// fakeStream is one Work stream seen from the coordinator side.
type fakeStream struct {
	recv   chan *pb.WorkRequest
	send   chan *pb.WorkResponse
	end    chan error    // the test ends the stream with this error
	closed chan struct{} // the fetcher closed its side (or the stream broke)
}

func (c *fakeCoordinator) Work(stream grpc.BidiStreamingServer[pb.WorkRequest, pb.WorkResponse]) error {
	fs := &fakeStream{
		recv:   make(chan *pb.WorkRequest, 1000),
		send:   make(chan *pb.WorkResponse),
		end:    make(chan error, 1),
		closed: make(chan struct{}),
	}
	c.streams <- fs
	go func() {
		defer close(fs.closed)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case fs.recv <- m:
			case <-stream.Context().Done():
				return
			}
		}
	}()
	for {
		select {
		case m := <-fs.send:
			if err := stream.Send(m); err != nil {
				return err
			}
		case err := <-fs.end:
			return err
		case <-fs.closed:
			return nil
		}
	}
}

// next returns the next message the fetcher sent, skipping heartbeats and progress events.
func (fs *fakeStream) next(t *testing.T) *pb.WorkRequest {
	t.Helper()
	for {
		select {
		case m := <-fs.recv:
			if m.GetHeartbeat() != nil || m.GetEvent().GetProgress() != nil {
				continue
			}
			return m
		case <-time.After(testWait):
			t.Fatal("timed out waiting for a message from the fetcher")
			return nil
		}
	}
}

func (fs *fakeStream) push(t *testing.T, m *pb.WorkResponse) {
	t.Helper()
	select {
	case fs.send <- m:
	case <-time.After(testWait):
		t.Fatal("timed out sending to the fetcher")
	}
}

// workHarness runs a Fetcher against a fake coordinator over bufconn.
type workHarness struct {
	tf     *testFetcher
	coord  *fakeCoordinator
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	runErr chan error
}

func newWorkHarness(t *testing.T, mutate func(*Config)) *workHarness {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	coord := &fakeCoordinator{streams: make(chan *fakeStream, 10)}
	srv := grpc.NewServer()
	pb.RegisterFetcherGatewayServiceServer(srv, coord)
	go func() { _ = srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	tf := newTestFetcher(t, func(c *Config) {
		c.ReconnectMin, c.ReconnectMax = time.Millisecond, 5*time.Millisecond
		if mutate != nil {
			mutate(c)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	h := &workHarness{tf: tf, coord: coord, conn: conn, cancel: cancel, runErr: make(chan error, 1)}
	go func() { h.runErr <- tf.Run(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-h.runErr:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
			h.runErr <- nil
		case <-time.After(testWait):
			t.Error("Run did not return")
		}
		_ = conn.Close()
		srv.Stop()
	})
	return h
}

func (h *workHarness) stream(t *testing.T) *fakeStream {
	t.Helper()
	select {
	case s := <-h.coord.streams:
		return s
	case <-time.After(testWait):
		t.Fatal("the fetcher did not open a Work stream")
		return nil
	}
}

// gatedOrigin serves a PDF whose second half is held back until release is closed.
type gatedOrigin struct {
	*httptest.Server
	pdf       []byte
	release   chan struct{}
	firstHalf chan struct{}
	once      sync.Once
}

func newGatedOrigin(t *testing.T, pdf []byte) *gatedOrigin {
	g := &gatedOrigin{pdf: pdf, release: make(chan struct{}), firstHalf: make(chan struct{}, 16)}
	mux := http.NewServeMux()
	mux.HandleFunc("/gate", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(pdf)))
		_, _ = w.Write(pdf[:len(pdf)/2])
		http.NewResponseController(w).Flush()
		g.firstHalf <- struct{}{}
		select {
		case <-g.release:
			_, _ = w.Write(pdf[len(pdf)/2:])
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/pdf", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(pdf) })
	g.Server = httptest.NewServer(mux)
	t.Cleanup(func() { g.open(); g.Close() })
	return g
}

func (g *gatedOrigin) open() { g.once.Do(func() { close(g.release) }) }

func assign(id, url string) *pb.WorkResponse {
	return &pb.WorkResponse{Msg: &pb.WorkResponse_Assign{Assign: &pb.Assign{
		LeaseId: id, BatchId: "b1", PaperId: "../../paper/" + id + "\x00", Url: url, Attempt: 1,
	}}}
}

func wantEvent(t *testing.T, m *pb.WorkRequest, lease string) *pb.DownloadEvent {
	t.Helper()
	ev := m.GetEvent()
	if ev == nil {
		t.Fatalf("got %v, want an event of %s", m, lease)
	}
	// A Work event names its lease only: no batch or paper id, no time (paper.proto).
	if ev.GetLeaseId() != lease || ev.GetAttempt() != 1 || ev.GetBatchId() != "" || ev.GetPaperId() != "" || ev.GetTime() != nil {
		t.Fatalf("event %v: wrong lease fields", ev)
	}
	return ev
}

// nextReceived returns the body_received progress event of lease, skipping heartbeats and
// other progress events; it fails on anything else.
func (fs *fakeStream) nextReceived(t *testing.T, lease string) *pb.DownloadEvent {
	t.Helper()
	for {
		select {
		case m := <-fs.recv:
			if m.GetHeartbeat() != nil || (m.GetEvent().GetProgress() != nil && !m.GetEvent().GetProgress().GetBodyReceived()) {
				continue
			}
			ev := wantEvent(t, m, lease)
			if !ev.GetProgress().GetBodyReceived() {
				t.Fatalf("got %v, want the body_received progress event of %s", m, lease)
			}
			return ev
		case <-time.After(testWait):
			t.Fatal("timed out waiting for a message from the fetcher")
			return nil
		}
	}
}

// completedAndCredits reads the next two messages: the slot's credit (returned when the body
// was received) and the terminal event of lease (sent once the blob is durable), in either
// order (they may share a flush). It returns the terminal event.
func (fs *fakeStream) completedAndCredits(t *testing.T, lease string, credits int32) *pb.DownloadEvent {
	t.Helper()
	a, b := fs.next(t), fs.next(t)
	if a.GetCredits() != nil {
		a, b = b, a
	}
	wantCredits(t, b, credits)
	return wantEvent(t, a, lease)
}

func wantCredits(t *testing.T, m *pb.WorkRequest, n int32) {
	t.Helper()
	if m.GetCredits().GetCredits() != n {
		t.Fatalf("got %v, want Credits{%d}", m, n)
	}
}

func TestWorkAssignEventsAckCancel(t *testing.T) {
	pdf := pdfBody(600_000, 11)
	g := newGatedOrigin(t, pdf)
	h := newWorkHarness(t, nil)
	s := h.stream(t)

	hello := s.next(t).GetHello()
	if hello == nil || hello.GetFetcherId() != "test-fetcher" || hello.GetBootId() == "" || hello.GetSlots() != 4 || len(hello.GetInFlight()) != 0 || hello.GetVersion() == "" {
		t.Fatalf("hello %v", hello)
	}

	// Assign → started → body received (the slot's credit returns) → completed → ack.
	s.push(t, assign("L1", g.URL+"/pdf"))
	started := wantEvent(t, s.next(t), "L1")
	if started.GetStarted().GetUrl() != g.URL+"/pdf" || started.GetSequence() != 1 {
		t.Fatalf("started %v", started)
	}
	recvd := s.nextReceived(t, "L1")
	if p := recvd.GetProgress(); p.GetBytes() != int64(len(pdf)) || p.GetTotal() != int64(len(pdf)) || recvd.GetSequence() <= started.GetSequence() {
		t.Fatalf("body_received %v", recvd)
	}
	done := s.completedAndCredits(t, "L1", 1)
	c := done.GetCompleted()
	if c == nil || c.GetSha256() != sha(pdf) || c.GetSize() != int64(len(pdf)) || c.GetBlobKey() != blobstore.ContentKey(sha(pdf)) || done.GetSequence() <= recvd.GetSequence() {
		t.Fatalf("completed %v", done)
	}
	s.push(t, &pb.WorkResponse{Msg: &pb.WorkResponse_Ack{Ack: &pb.Ack{LeaseId: "L1", Sequence: done.GetSequence()}}})
	h.waitLeases(t, 0)
	h.tf.assertStore(t, c.GetBlobKey())

	// Cancel of a running lease → failed ABORTED → credit; the lease is forgotten.
	s.push(t, assign("L2", g.URL+"/gate"))
	wantEvent(t, s.next(t), "L2")
	g.waitFirstHalf(t)
	s.push(t, &pb.WorkResponse{Msg: &pb.WorkResponse_Cancel{Cancel: &pb.Cancel{LeaseId: "L2", Reason: "batch cancelled"}}})
	failed := wantEvent(t, s.next(t), "L2").GetFailed()
	if failed.GetReason() != pb.FailureReason_FAILURE_REASON_ABORTED || failed.GetClass() != pb.FailureClass_FAILURE_CLASS_TRANSIENT {
		t.Fatalf("failed %v", failed)
	}
	wantCredits(t, s.next(t), 1)
	h.waitLeases(t, 0)
	h.tf.assertStore(t, c.GetBlobKey())
}

// startDrain runs the fetcher's Drain (with a testWait deadline) and returns its result.
func (h *workHarness) startDrain() <-chan error {
	drainErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		drainErr <- h.tf.Drain(ctx)
	}()
	return drainErr
}

// ackCompletedThenDrained wants the next event to be lease's completion, acknowledges it and
// wants the Drain of startDrain to return without error.
func (s *fakeStream) ackCompletedThenDrained(t *testing.T, lease string, drainErr <-chan error) {
	t.Helper()
	done := wantEvent(t, s.next(t), lease)
	if done.GetCompleted() == nil {
		t.Fatalf("want completed, got %v", done)
	}
	s.push(t, &pb.WorkResponse{Msg: &pb.WorkResponse_Ack{Ack: &pb.Ack{LeaseId: lease, Sequence: done.GetSequence()}}})
	select {
	case err := <-drainErr:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(testWait):
		t.Fatal("Drain did not return")
	}
}

// startWithSuccessor assigns L1 (a download from the gated origin g) and L2, its prefetched
// successor (Assign.after_lease_id), and waits until L1 started and half its body is in.
func (s *fakeStream) startWithSuccessor(t *testing.T, g *gatedOrigin) {
	t.Helper()
	s.push(t, assign("L1", g.URL+"/gate"))
	succ := assign("L2", g.URL+"/pdf")
	succ.GetAssign().AfterLeaseId = "L1"
	s.push(t, succ)
	wantEvent(t, s.next(t), "L1") // started
	g.waitFirstHalf(t)
}

// waitLeases waits until the fetcher holds n leases.
func (h *workHarness) waitLeases(t *testing.T, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if !h.tf.waitFor(ctx, func() bool { return h.tf.book.len() == n }) {
		t.Fatalf("fetcher still holds %d leases, want %d", h.tf.book.len(), n)
	}
}

// waitFirstHalf waits until the gated origin has sent the first half of a body, so that a
// cancel or disconnect happens mid-body.
func (g *gatedOrigin) waitFirstHalf(t *testing.T) {
	t.Helper()
	select {
	case <-g.firstHalf:
	case <-time.After(testWait):
		t.Fatal("the origin did not serve the first half")
	}
}

func TestWorkReconnectReannouncesInFlight(t *testing.T) {
	pdf := pdfBody(600_000, 12)
	g := newGatedOrigin(t, pdf)
	h := newWorkHarness(t, nil)
	s1 := h.stream(t)
	s1.next(t) // hello
	s1.push(t, assign("L1", g.URL+"/gate"))
	started := wantEvent(t, s1.next(t), "L1")
	g.waitFirstHalf(t)
	s1.end <- status.Error(codes.Unavailable, "coordinator restarting")

	// Reconnect: the running lease is announced and holds a slot.
	s2 := h.stream(t)
	hello := s2.next(t).GetHello()
	if len(hello.GetInFlight()) != 1 || hello.GetInFlight()[0].GetLeaseId() != "L1" || hello.GetInFlight()[0].GetPaperId() != "../../paper/L1\x00" || hello.GetSlots() != 3 {
		t.Fatalf("hello after reconnect %v", hello)
	}
	g.open()
	done := s2.completedAndCredits(t, "L1", 1)
	if done.GetCompleted() == nil || done.GetSequence() <= started.GetSequence() {
		t.Fatalf("completed %v", done)
	}

	// Not acknowledged: after another reconnect the result is re-reported.
	s2.end <- status.Error(codes.Unavailable, "again")
	s3 := h.stream(t)
	hello = s3.next(t).GetHello()
	if len(hello.GetInFlight()) != 1 || hello.GetSlots() != 4 {
		t.Fatalf("hello after second reconnect %v", hello)
	}
	again := wantEvent(t, s3.next(t), "L1")
	if again.GetSequence() != done.GetSequence() || again.GetCompleted().GetSha256() != sha(pdf) {
		t.Fatalf("re-reported %v, want %v", again, done)
	}
	s3.push(t, &pb.WorkResponse{Msg: &pb.WorkResponse_Ack{Ack: &pb.Ack{LeaseId: "L1", Sequence: again.GetSequence()}}})
	h.waitLeases(t, 0)
}

func TestWorkDrain(t *testing.T) {
	pdf := pdfBody(600_000, 13)
	g := newGatedOrigin(t, pdf)
	h := newWorkHarness(t, nil)
	s := h.stream(t)
	s.next(t)
	s.push(t, assign("L1", g.URL+"/gate"))
	wantEvent(t, s.next(t), "L1")

	drainErr := h.startDrain()
	if s.next(t).GetDraining() == nil {
		t.Fatal("want Draining")
	}
	// Work arriving after Draining is refused at once.
	s.push(t, assign("L2", g.URL+"/pdf"))
	refused := wantEvent(t, s.next(t), "L2").GetFailed()
	if refused.GetReason() != pb.FailureReason_FAILURE_REASON_ABORTED {
		t.Fatalf("late assign: %v", refused)
	}
	s.push(t, &pb.WorkResponse{Msg: &pb.WorkResponse_Cancel{Cancel: &pb.Cancel{LeaseId: "L2"}}})
	// The running download finishes within the grace period and is reported.
	g.open()
	s.ackCompletedThenDrained(t, "L1", drainErr)
	// The fetcher closes the stream and Run returns by itself.
	select {
	case <-s.closed:
	case <-time.After(testWait):
		t.Fatal("stream not closed")
	}
	select {
	case err := <-h.runErr:
		h.runErr <- err
	case <-time.After(testWait):
		t.Fatal("Run did not return after Drain")
	}
}

func TestWorkDrainGraceOver(t *testing.T) {
	pdf := pdfBody(600_000, 14)
	g := newGatedOrigin(t, pdf)
	h := newWorkHarness(t, nil)
	s := h.stream(t)
	s.next(t)
	s.push(t, assign("L1", g.URL+"/gate"))
	wantEvent(t, s.next(t), "L1")
	ctx, cancel := context.WithCancel(context.Background())
	drainErr := make(chan error, 1)
	go func() { drainErr <- h.tf.Drain(ctx) }()
	if s.next(t).GetDraining() == nil {
		t.Fatal("want Draining")
	}
	cancel() // grace period over
	failed := wantEvent(t, s.next(t), "L1").GetFailed()
	if failed.GetReason() != pb.FailureReason_FAILURE_REASON_ABORTED {
		t.Fatalf("want aborted, got %v", failed)
	}
	if err := <-drainErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain: %v", err)
	}
	h.tf.assertStore(t)
}

func TestWorkHeartbeat(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	h := newWorkHarness(t, func(c *Config) { c.Clock = clk; c.HeartbeatInterval = 10 * time.Second })
	s := h.stream(t)
	s.next(t)
	// The heartbeat ticker is armed before the Hello is sent: let an interval pass.
	clk.Advance(10 * time.Second)
	select {
	case m := <-s.recv:
		if m.GetHeartbeat() == nil {
			t.Fatalf("want heartbeat, got %v", m)
		}
	case <-time.After(testWait):
		t.Fatal("no heartbeat")
	}
}

// The coordinator renews a lease only on its own events: a running download that is quiet
// (no byte arrives) gets a keep-alive progress event every heartbeat interval.
func TestWorkKeepAliveProgress(t *testing.T) {
	pdf := pdfBody(600_000, 13)
	g := newGatedOrigin(t, pdf)
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	h := newWorkHarness(t, func(c *Config) { c.Clock = clk; c.HeartbeatInterval = 10 * time.Second })
	s := h.stream(t)
	s.next(t) // hello
	s.push(t, assign("L1", g.URL+"/gate"))
	wantEvent(t, s.next(t), "L1")
	g.waitFirstHalf(t)
	clk.Advance(10 * time.Second)
	for {
		var m *pb.WorkRequest
		select {
		case m = <-s.recv: // s.next skips progress events
		case <-time.After(testWait):
			t.Fatal("no keep-alive progress")
		}
		ev := m.GetEvent()
		// A keep-alive repeats the last counts without a rate; a throttled progress event of
		// the first half has one (bytes over at least progressEvery).
		if p := ev.GetProgress(); ev == nil || p == nil || p.GetBytesPerSecond() != 0 || p.GetBodyReceived() {
			continue // a heartbeat, or progress of the first half
		}
		if ev.GetLeaseId() != "L1" {
			t.Fatalf("keep-alive for %q", ev.GetLeaseId())
		}
		break
	}
	g.open()
}

// signalHandler signals on ch for every record whose message starts with prefix.
type signalHandler struct {
	prefix string
	ch     chan struct{}
}

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.prefix) {
		h.ch <- struct{}{}
	}
	return nil
}
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h signalHandler) WithGroup(string) slog.Handler      { return h }

// After a long coordinator outage the reconnect delay stays capped at ReconnectMax (5s by
// default, below the coordinator's 15s --reconnect-grace): on the fake clock, every attempt
// comes within 5s of the previous one failing, so a fetcher is back within 5s of the
// coordinator's return.
func TestWorkReconnectBackoffCappedBelowGrace(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	retrying := make(chan struct{}, 1)
	h := newWorkHarness(t, func(c *Config) {
		c.Clock = clk
		c.ReconnectMin, c.ReconnectMax = DefaultReconnectMin, DefaultReconnectMax
		c.Logger = slog.New(signalHandler{prefix: "work stream to the coordinator ended", ch: retrying})
	})
	if DefaultReconnectMax >= 15*time.Second {
		t.Fatalf("DefaultReconnectMax %s is not below the coordinator's default --reconnect-grace", DefaultReconnectMax)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	for i := range 20 { // 20 failed attempts: well past where an uncapped backoff would be
		s := h.stream(t)
		s.next(t) // hello
		s.end <- status.Error(codes.Unavailable, "coordinator down")
		select {
		case <-retrying:
		case <-time.After(testWait):
			t.Fatalf("attempt %d: the fetcher did not schedule a reconnect", i)
		}
		// The sweeper's ticker and the reconnect timer.
		if err := clk.WaitForWaiters(ctx, 2); err != nil {
			t.Fatal(err)
		}
		clk.Advance(DefaultReconnectMax)
	}
	h.stream(t).next(t) // the coordinator is back: the 21st attempt came within 5s
}

// A refused id (ALREADY_EXISTS: another live process holds it) is retried slowly, after
// IDConflictBackoff, not at the reconnect pace: no ping-pong with the coordinator.
func TestWorkRefusedIDBacksOffSlowly(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	refusedLog := make(chan struct{}, 1)
	h := newWorkHarness(t, func(c *Config) {
		c.Clock = clk
		c.ReconnectMin, c.ReconnectMax = time.Second, time.Second
		c.Logger = slog.New(signalHandler{prefix: "the coordinator refused this fetcher's id", ch: refusedLog})
	})
	s := h.stream(t)
	s.next(t)
	s.end <- status.Error(codes.AlreadyExists, `fetcher id "test-fetcher" is in use`)
	select {
	case <-refusedLog:
	case <-time.After(testWait):
		t.Fatal("the refusal was not logged as such")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if err := clk.WaitForWaiters(ctx, 2); err != nil {
		t.Fatal(err)
	}
	clk.Advance(DefaultIDConflictBackoff/2 - time.Millisecond)
	if n := clk.Waiters(); n != 2 {
		t.Fatalf("the reconnect timer fired before half the conflict backoff (%d waiters)", n)
	}
	clk.Advance(DefaultIDConflictBackoff / 2)
	h.stream(t).next(t)
}

func TestDefaultIDIsUniquePerProcess(t *testing.T) {
	host, _ := os.Hostname()
	a, b := defaultID(), defaultID()
	if a == b || !strings.HasPrefix(a, host+"-") || validate.FetcherID("id", a) != nil {
		t.Fatalf("default ids %q and %q (host %q)", a, b, host)
	}
}

// A slot takes its next download as soon as its body is received: the body_received event
// and the slot's credit come before the commit ends, and the next Assign runs while the first
// body is still being made durable. With every place of the commit queue taken, a slot whose
// body is in waits (no credit) until a commit ends.
func TestWorkSlotFreedWhenBodyReceived(t *testing.T) {
	pdf1, pdf2 := pdfBody(50_000, 21), pdfBody(50_000, 22)
	mux := http.NewServeMux()
	mux.HandleFunc("/1", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(pdf1) })
	mux.HandleFunc("/2", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(pdf2) })
	origin := httptest.NewServer(mux)
	t.Cleanup(origin.Close)
	commits := make(chan chan struct{}, 4) // each commit waits until the test releases it
	h := newWorkHarness(t, func(c *Config) { c.Slots, c.PendingCommits = 1, 1 })
	h.tf.dl.beforeCommit = func() {
		release := make(chan struct{})
		commits <- release
		<-release
	}
	s := h.stream(t)
	if hello := s.next(t).GetHello(); hello.GetSlots() != 1 {
		t.Fatalf("hello %v", hello)
	}
	s.push(t, assign("L1", origin.URL+"/1"))
	wantEvent(t, s.next(t), "L1") // started
	s.nextReceived(t, "L1")
	wantCredits(t, s.next(t), 1) // before the commit is done
	var release1 chan struct{}
	select {
	case release1 = <-commits:
	case <-time.After(testWait):
		t.Fatal("the commit did not start")
	}

	// The freed slot downloads L2 while L1 is being committed; its body waits for the only
	// place of the commit queue, so its credit does not come back yet.
	s.push(t, assign("L2", origin.URL+"/2"))
	wantEvent(t, s.next(t), "L2") // started
	s.nextReceived(t, "L2")
	select {
	case m := <-s.recv:
		if m.GetHeartbeat() == nil {
			t.Fatalf("sent %v while both bodies wait for the commit queue", m)
		}
	case <-time.After(100 * time.Millisecond): // nothing may come: a bounded look, not a sync
	}

	close(release1)
	done1 := s.completedAndCredits(t, "L1", 1) // L1 durable; L2 took its place and freed its slot
	if done1.GetCompleted().GetSha256() != sha(pdf1) {
		t.Fatalf("completed %v", done1)
	}
	select {
	case release2 := <-commits:
		close(release2)
	case <-time.After(testWait):
		t.Fatal("the second commit did not start")
	}
	done2 := wantEvent(t, s.next(t), "L2")
	if done2.GetCompleted().GetSha256() != sha(pdf2) {
		t.Fatalf("completed %v", done2)
	}
	h.tf.assertStore(t, done1.GetCompleted().GetBlobKey(), done2.GetCompleted().GetBlobKey())
}

// A prefetched successor (Assign.after_lease_id) waits while its predecessor downloads, starts
// in the predecessor's slot as soon as the predecessor's body is in, and no credit is returned
// for that slot; the successor's own slot comes back as usual. A successor of a lease the
// fetcher does not run is handed back at once (failed ABORTED, never started).
func TestWorkPrefetchSuccessorTakesSlot(t *testing.T) {
	pdf := pdfBody(300_000, 31)
	g := newGatedOrigin(t, pdf)
	h := newWorkHarness(t, func(c *Config) { c.Slots, c.Prefetch = 1, 2 })
	s := h.stream(t)
	if hello := s.next(t).GetHello(); hello.GetSlots() != 1 || hello.GetPrefetch() != 2 {
		t.Fatalf("hello %v", hello)
	}
	s.startWithSuccessor(t, g)
	select {
	case m := <-s.recv:
		if m.GetHeartbeat() == nil && m.GetEvent().GetProgress() == nil {
			t.Fatalf("sent %v while the predecessor downloads", m)
		}
	case <-time.After(100 * time.Millisecond): // nothing may come: a bounded look, not a sync
	}
	g.open()
	var order []string
	// Until both completed and the credit of L2's slot came (it may follow L2's completed
	// event in one flush).
	for completed := 0; completed < 2 || !slices.Contains(order, "credits 1"); {
		var m *pb.WorkRequest
		select {
		case m = <-s.recv:
		case <-time.After(testWait):
			t.Fatalf("timed out; got %v", order)
		}
		ev := m.GetEvent()
		switch {
		case m.GetCredits() != nil:
			order = append(order, fmt.Sprintf("credits %d", m.GetCredits().GetCredits()))
		case ev.GetStarted() != nil:
			order = append(order, ev.GetLeaseId()+" started")
		case ev.GetProgress().GetBodyReceived():
			order = append(order, ev.GetLeaseId()+" received")
		case ev.GetCompleted() != nil:
			order = append(order, ev.GetLeaseId()+" completed")
			completed++
		case ev.GetFailed() != nil:
			t.Fatalf("failed: %v", ev)
		}
	}
	idx := func(what string) int {
		i := slices.Index(order, what)
		if i < 0 {
			t.Fatalf("no %q in %v", what, order)
		}
		return i
	}
	if idx("L1 received") > idx("L2 started") || idx("L2 received") > idx("credits 1") || strings.Count(strings.Join(order, ","), "credits") != 1 {
		t.Fatalf("order %v: want L2 started after L1's body, and one credit (L2's slot) after L2's body", order)
	}
	orphan := assign("L3", g.URL+"/pdf")
	orphan.GetAssign().AfterLeaseId = "L9"
	s.push(t, orphan)
	for {
		m := s.next(t)
		if m.GetCredits() != nil || m.GetHeartbeat() != nil || m.GetEvent().GetLeaseId() != "L3" {
			continue
		}
		if f := m.GetEvent().GetFailed(); f.GetReason() != pb.FailureReason_FAILURE_REASON_ABORTED || f.GetClass() != pb.FailureClass_FAILURE_CLASS_TRANSIENT {
			t.Fatalf("a successor of an unknown lease: %v, want handed back (failed ABORTED)", m)
		}
		break
	}
}

// A draining fetcher hands its waiting successors back at once (failed ABORTED, right after
// Draining), while its running download finishes; the successor never starts.
func TestWorkDrainHandsBackSuccessors(t *testing.T) {
	pdf := pdfBody(600_000, 32)
	g := newGatedOrigin(t, pdf)
	h := newWorkHarness(t, func(c *Config) { c.Slots, c.Prefetch = 1, 1 })
	s := h.stream(t)
	s.next(t)
	s.startWithSuccessor(t, g)
	drainErr := h.startDrain()
	if s.next(t).GetDraining() == nil {
		t.Fatal("want Draining")
	}
	if f := wantEvent(t, s.next(t), "L2").GetFailed(); f.GetReason() != pb.FailureReason_FAILURE_REASON_ABORTED {
		t.Fatalf("the waiting successor: %v, want handed back", f)
	}
	s.push(t, &pb.WorkResponse{Msg: &pb.WorkResponse_Cancel{Cancel: &pb.Cancel{LeaseId: "L2"}}})
	g.open()
	s.ackCompletedThenDrained(t, "L1", drainErr)
}

// The fetcher holds at most Prefetch waiting successors, whatever the coordinator assigns: one
// beyond them (here a successor of the waiting successor, with --prefetch 1) is handed back at
// once (failed ABORTED, never started).
func TestWorkPrefetchWindowBounded(t *testing.T) {
	g := newGatedOrigin(t, pdfBody(300_000, 33))
	reg := prometheus.NewRegistry()
	h := newWorkHarness(t, func(c *Config) { c.Slots, c.Prefetch, c.Registerer = 1, 1, reg })
	s := h.stream(t)
	s.next(t)
	s.startWithSuccessor(t, g)
	waiting := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "paperfetch_fetcher_prefetched_leases" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no paperfetch_fetcher_prefetched_leases")
		return 0
	}
	h.waitLeases(t, 2) // L1's start event may come before L2's Assign is handled
	if n := waiting(); n != 1 {
		t.Fatalf("prefetched_leases = %v, want 1 (L2)", n)
	}
	third := assign("L3", g.URL+"/pdf")
	third.GetAssign().AfterLeaseId = "L2"
	s.push(t, third)
	for deadline := time.Now().Add(testWait); ; {
		if time.Now().After(deadline) {
			t.Fatal("L3 was not handed back")
		}
		ev := s.next(t).GetEvent()
		switch {
		case ev.GetLeaseId() == "L3":
			if f := ev.GetFailed(); f.GetReason() != pb.FailureReason_FAILURE_REASON_ABORTED {
				t.Fatalf("a successor beyond the prefetch window: %v, want handed back", ev)
			}
		case ev.GetFailed() != nil || ev.GetCompleted() != nil:
			t.Fatalf("%v before L3 was handed back", ev)
		default:
			continue
		}
		break
	}
	if n := waiting(); n != 1 {
		t.Fatalf("prefetched_leases = %v after L3 was handed back, want 1 (L2)", n)
	}
	g.open()
}

// nextAny returns the next message the fetcher sent, skipping heartbeats and progress events
// other than body_received.
func (fs *fakeStream) nextAny(t *testing.T) *pb.WorkRequest {
	t.Helper()
	for {
		select {
		case m := <-fs.recv:
			if p := m.GetEvent().GetProgress(); m.GetHeartbeat() != nil || p != nil && !p.GetBodyReceived() {
				continue
			}
			return m
		case <-time.After(testWait):
			t.Fatal("timed out waiting for a message from the fetcher")
			return nil
		}
	}
}

// After the coordinator's Welcome, a small download costs two messages: body_received
// carrying the start and the slot's credit, then completed (the credit rides on completed
// when both go in one flush). A started event is held back until the hold is over (then sent
// on its own), and a failure carries the credit of its slot.
func TestWorkFoldsAfterWelcome(t *testing.T) {
	pdf := pdfBody(300_000, 41)
	g := newGatedOrigin(t, pdf)
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	h := newWorkHarness(t, func(c *Config) { c.Clock = clk })
	s := h.stream(t)
	if hello := s.next(t).GetHello(); !hello.GetFoldEvents() {
		t.Fatalf("hello %v does not ask to fold", hello)
	}
	s.push(t, &pb.WorkResponse{Msg: &pb.WorkResponse_Welcome{Welcome: &pb.Welcome{FoldEvents: true, StartHold: durationpb.New(time.Second)}}})

	s.push(t, assign("L1", g.URL+"/pdf"))
	m := s.nextAny(t)
	recvd := wantEvent(t, m, "L1")
	if !recvd.GetProgress().GetBodyReceived() || !recvd.GetFoldedStart() {
		t.Fatalf("got %v, want body_received with the start folded", m)
	}
	m2 := s.nextAny(t)
	done := wantEvent(t, m2, "L1")
	if done.GetCompleted() == nil || done.GetFoldedStart() || m.GetFoldedCredits()+m2.GetFoldedCredits() != 1 || done.GetSequence() <= recvd.GetSequence() {
		t.Fatalf("got %v then %v, want body_received then completed, with 1 credit", m, m2)
	}
	s.push(t, &pb.WorkResponse{Msg: &pb.WorkResponse_Ack{Ack: &pb.Ack{LeaseId: "L1", Sequence: done.GetSequence()}}})

	// L2 starts and waits for its second half: its started event is held. L3 fails at once
	// (its URL is refused before any request): its failure carries its slot's credit, and
	// nothing of L2 goes before it.
	s.push(t, assign("L2", g.URL+"/gate"))
	g.waitFirstHalf(t)
	s.push(t, assign("L3", "ftp://example.org/x.pdf"))
	m = s.nextAny(t)
	if f := wantEvent(t, m, "L3"); f.GetFailed() == nil || f.GetFoldedStart() || m.GetFoldedCredits() != 1 {
		t.Fatalf("got %v, want L3's failure with 1 credit (L2's start is held)", m)
	}
	clk.Advance(time.Second)
	m = s.nextAny(t)
	if st := wantEvent(t, m, "L2"); st.GetStarted() == nil || m.GetFoldedCredits() != 0 {
		t.Fatalf("got %v, want L2's held start on its own once the hold is over", m)
	}
	g.open()
	m, m2 = s.nextAny(t), s.nextAny(t)
	if r := wantEvent(t, m, "L2"); !r.GetProgress().GetBodyReceived() || r.GetFoldedStart() || m.GetFoldedCredits()+m2.GetFoldedCredits() != 1 {
		t.Fatalf("got %v then %v, want L2's body_received then completed, with 1 credit", m, m2)
	}
}

// A coordinator that does not answer with a Welcome (an older one) gets nothing folded: the
// started event and the Credits go on their own (TestWorkAssignEventsAckCancel too).
func TestWorkNoFoldWithoutWelcome(t *testing.T) {
	pdf := pdfBody(300_000, 42)
	g := newGatedOrigin(t, pdf)
	h := newWorkHarness(t, nil)
	s := h.stream(t)
	s.next(t)
	s.push(t, assign("L1", g.URL+"/pdf"))
	var got []string
	for len(got) < 4 {
		m := s.nextAny(t)
		if m.GetFoldedCredits() != 0 || m.GetEvent().GetFoldedStart() {
			t.Fatalf("folded without a Welcome: %v", m)
		}
		switch ev := m.GetEvent(); {
		case m.GetCredits() != nil:
			got = append(got, "credits")
		case ev.GetStarted() != nil:
			got = append(got, "started")
		case ev.GetProgress() != nil:
			got = append(got, "received")
		case ev.GetCompleted() != nil:
			got = append(got, "completed")
		}
	}
	if got[0] != "started" || got[1] != "received" || !slices.Contains(got, "credits") || !slices.Contains(got, "completed") {
		t.Fatalf("sent %v", got)
	}
}

// A draining fetcher sends the started events it holds back before its Draining: the
// coordinator re-queues every lease it does not know started when Draining arrives, so a
// running download whose start were still held (or sent after Draining) would be cancelled.
func TestWorkDrainSendsHeldStartsFirst(t *testing.T) {
	pdf := pdfBody(300_000, 43)
	g := newGatedOrigin(t, pdf)
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	h := newWorkHarness(t, func(c *Config) { c.Clock = clk })
	s := h.stream(t)
	s.next(t)
	s.push(t, &pb.WorkResponse{Msg: &pb.WorkResponse_Welcome{Welcome: &pb.Welcome{FoldEvents: true, StartHold: durationpb.New(time.Second)}}})
	s.push(t, assign("L1", g.URL+"/gate"))
	g.waitFirstHalf(t) // L1's started event is held (no time passes)
	drainErr := h.startDrain()
	m := s.nextAny(t)
	if st := wantEvent(t, m, "L1"); st.GetStarted() == nil {
		t.Fatalf("got %v, want L1's held start before Draining", m)
	}
	if m := s.nextAny(t); m.GetDraining() == nil {
		t.Fatalf("got %v, want Draining", m)
	}
	g.open()
	if r := wantEvent(t, s.nextAny(t), "L1"); !r.GetProgress().GetBodyReceived() || r.GetFoldedStart() {
		t.Fatalf("got %v, want L1's body_received (its start already sent)", r)
	}
	s.ackCompletedThenDrained(t, "L1", drainErr)
}

// TestWorkStallAndDeadlineFailLease: a lease's download runs under the lease's own context,
// which its watchdog cancels: a stalled body fails STALLED, an overall deadline TIMEOUT (as
// the Assign's limits say), each with its credit back.
func TestWorkStallAndDeadlineFailLease(t *testing.T) {
	g := newGatedOrigin(t, pdfBody(600_000, 12))
	h := newWorkHarness(t, nil)
	s := h.stream(t)
	s.next(t) // hello
	for _, tc := range []struct {
		lease  string
		limits *pb.DownloadLimits
		want   pb.FailureReason
	}{
		{"S1", &pb.DownloadLimits{StallTimeout: durationpb.New(100 * time.Millisecond)}, pb.FailureReason_FAILURE_REASON_STALLED},
		{"T1", &pb.DownloadLimits{Timeout: durationpb.New(100 * time.Millisecond)}, pb.FailureReason_FAILURE_REASON_TIMEOUT},
	} {
		a := assign(tc.lease, g.URL+"/gate")
		a.GetAssign().Limits = tc.limits
		s.push(t, a)
		m := s.next(t)
		for m.GetCredits() != nil { // the previous lease's credit
			m = s.next(t)
		}
		wantEvent(t, m, tc.lease) // started
		failed := wantEvent(t, s.next(t), tc.lease).GetFailed()
		if failed.GetReason() != tc.want || failed.GetClass() != pb.FailureClass_FAILURE_CLASS_TRANSIENT {
			t.Fatalf("%s: failed %v, want %v", tc.lease, failed, tc.want)
		}
	}
}

// Run is not reentrant: a second Run while one runs returns ErrAlreadyRunning at once and leaves
// the first alone; once the first returned, Run may be called again. Before, the second Run
// replaced the first's stopRunners channel (a data race), and both Runs closed that one channel
// when they ended: the second close panicked.
func TestRunTwiceAtOnce(t *testing.T) {
	h := newWorkHarness(t, nil)
	h.stream(t) // the first Run's Work stream is open
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.tf.Run(done, h.conn); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("a second Run at once = %v, want ErrAlreadyRunning", err)
	}
	h.cancel()
	select {
	case err := <-h.runErr:
		if err != nil {
			t.Fatalf("first Run: %v", err)
		}
	case <-time.After(testWait):
		t.Fatal("the first Run did not return")
	}
	if err := h.tf.Run(done, h.conn); err != nil {
		t.Fatalf("Run after the first returned = %v, want nil", err)
	}
	h.runErr <- nil // for the harness's clean-up
}
