package roguetest

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

	"github.com/prometheus/client_golang/prometheus"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/paperfetch/paperfetch/coordinator"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/auth"
	"github.com/paperfetch/paperfetch/internal/clock"
	"github.com/paperfetch/paperfetch/internal/grpcserver"
	"github.com/paperfetch/paperfetch/internal/validate"
)

var epoch = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// env is one coordinator served on 127.0.0.1 through the production server chain.
type env struct {
	t      *testing.T
	clk    *clock.Fake
	bucket *blob.Bucket
	c      *coordinator.Coordinator
	srv    *grpcserver.Server
	conn   *grpc.ClientConn
	api    pb.CoordinatorServiceClient
	gw     pb.FetcherGatewayServiceClient
	addr   string
	reg    *prometheus.Registry
}

type envOpts struct {
	cfg   func(*coordinator.Config) // changes coordinator.DefaultConfig (PerHostDelay 0), when not nil
	guard *auth.Guard
	// logs, when set, receives the coordinator's and the server's logs (JSON, debug level).
	logs io.Writer
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	e := &env{t: t, clk: clock.NewFake(epoch), reg: prometheus.NewRegistry()}
	var err error
	e.bucket, err = fileblob.OpenBucket(t.TempDir(), &fileblob.Options{Metadata: fileblob.MetadataDontWrite})
	if err != nil {
		t.Fatal(err)
	}
	cfg := coordinator.DefaultConfig()
	cfg.PerHostDelay = 0
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	cfg.DataDir = t.TempDir()
	cfg.Bucket = e.bucket
	cfg.Clock = e.clk
	cfg.CommitWindow = 0 // the fake clock does not advance by itself: a commit window would never end
	cfg.NoSync = true
	cfg.Registerer = e.reg
	logger := slog.New(slog.DiscardHandler)
	switch {
	case o.logs != nil:
		logger = slog.New(slog.NewJSONHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	case os.Getenv("ROGUE_TEST_LOG") != "":
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg.Logger = logger
	e.c, err = coordinator.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = grpcserver.New(grpcserver.Config{Logger: logger, Auth: o.guard, Validate: validate.Request})
	e.c.Register(e.srv.GRPC)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = lis.Addr().String()
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		_ = e.srv.GRPC.Serve(lis)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- e.c.Run(ctx) }()
	e.conn = e.dial(nil)
	e.api = pb.NewCoordinatorServiceClient(e.conn)
	e.gw = pb.NewFetcherGatewayServiceClient(e.conn)
	t.Cleanup(func() {
		e.c.CloseStreams()
		_ = e.conn.Close()
		e.srv.GRPC.Stop()
		<-serveDone
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := e.c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		_ = e.bucket.Close()
	})
	return e
}

// dial opens another connection to the coordinator (a separate peer).
func (e *env) dial(creds credentials.PerRPCCredentials) *grpc.ClientConn {
	e.t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if creds != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(creds))
	}
	conn, err := grpc.NewClient("passthrough:///"+e.addr, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return conn
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// submit submits a batch of n papers on one host and returns its id.
func (e *env) submit(id string, n int, host string) {
	e.t.Helper()
	papers := make([]*pb.PaperSpec, n)
	for i := range papers {
		papers[i] = &pb.PaperSpec{PaperId: fmt.Sprintf("%s-%d", id, i), Urls: []string{fmt.Sprintf("https://%s/%s/%d.pdf", host, id, i)}}
	}
	e.submitPapers(id, papers)
}

func (e *env) submitPapers(id string, papers []*pb.PaperSpec) {
	e.t.Helper()
	if _, err := e.api.SubmitBatch(ctxT(e.t), &pb.SubmitBatchRequest{BatchId: id, Papers: papers}); err != nil {
		e.t.Fatalf("SubmitBatch: %v", err)
	}
}

func (e *env) paper(batch, id string) *pb.Paper {
	e.t.Helper()
	r, err := e.api.GetPaper(ctxT(e.t), &pb.GetPaperRequest{BatchId: batch, PaperId: id})
	if err != nil {
		e.t.Fatalf("GetPaper %s/%s: %v", batch, id, err)
	}
	return r.GetPaper()
}

func (e *env) batch(id string) *pb.Batch {
	e.t.Helper()
	r, err := e.api.GetBatch(ctxT(e.t), &pb.GetBatchRequest{BatchId: id})
	if err != nil {
		e.t.Fatalf("GetBatch %s: %v", id, err)
	}
	return r.GetBatch()
}

// storeBlob writes content into the blob store under its content-addressed key, as an honest
// fetcher would, and returns its completion.
func (e *env) storeBlob(content []byte, finalURL string) *pb.DownloadCompleted {
	e.t.Helper()
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	if err := e.bucket.WriteAll(ctxT(e.t), validate.ContentKey(sha), content, nil); err != nil {
		e.t.Fatal(err)
	}
	return &pb.DownloadCompleted{Sha256: sha, Size: int64(len(content)), BlobKey: validate.ContentKey(sha), FinalUrl: finalURL, ContentType: "application/pdf"}
}

// rogue is a hand-written Work stream.
type rogue struct {
	t      *testing.T
	id     string
	stream pb.FetcherGatewayService_WorkClient
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	assigns []*pb.Assign
	cancels []*pb.Cancel
	acks    []*pb.Ack
	seq     map[string]int64
	err     error // the stream's end
	changed chan struct{}
}

// open opens a Work stream on gw and sends hello (which may be invalid).
func openStream(t *testing.T, gw pb.FetcherGatewayServiceClient, first *pb.WorkRequest) *rogue {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := gw.Work(ctx)
	if err != nil {
		cancel()
		t.Fatalf("Work: %v", err)
	}
	r := &rogue{t: t, stream: stream, cancel: cancel, done: make(chan struct{}), seq: map[string]int64{}, changed: make(chan struct{})}
	if h := first.GetHello(); h != nil {
		r.id = h.GetFetcherId()
	}
	if err := stream.Send(first); err != nil && !errors.Is(err, io.EOF) {
		cancel()
		t.Fatalf("send first message: %v", err)
	}
	go r.recvLoop()
	t.Cleanup(r.close)
	return r
}

func hello(id string, slots int32, inFlight ...*pb.InFlightLease) *pb.WorkRequest {
	return &pb.WorkRequest{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: id, BootId: "boot-" + id, Slots: slots, InFlight: inFlight}}}
}

func (r *rogue) recvLoop() {
	defer close(r.done)
	for {
		m, err := r.stream.Recv()
		r.mu.Lock()
		if err != nil {
			r.err = err
			r.notifyLocked()
			r.mu.Unlock()
			return
		}
		switch x := m.GetMsg().(type) {
		case *pb.WorkResponse_Assign:
			r.assigns = append(r.assigns, x.Assign)
		case *pb.WorkResponse_Cancel:
			r.cancels = append(r.cancels, x.Cancel)
		case *pb.WorkResponse_Ack:
			r.acks = append(r.acks, x.Ack)
		}
		r.notifyLocked()
		r.mu.Unlock()
	}
}

func (r *rogue) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// waitUntil blocks until cond (called with r.mu held) holds, failing after 20 s.
func (r *rogue) waitUntil(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		ch := r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			r.t.Fatalf("%s: timed out waiting for %s", r.id, what)
		}
	}
}

// waitAssigns waits for n Assigns in all and returns them.
func (r *rogue) waitAssigns(n int) []*pb.Assign {
	r.t.Helper()
	r.waitUntil(fmt.Sprintf("%d assigns", n), func() bool { return len(r.assigns) >= n })
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*pb.Assign(nil), r.assigns...)
}

// waitEnd waits for the stream to end and returns its status.
func (r *rogue) waitEnd() *status.Status {
	r.t.Helper()
	r.waitUntil("the end of the stream", func() bool { return r.err != nil })
	r.mu.Lock()
	defer r.mu.Unlock()
	return status.Convert(r.err)
}

func (r *rogue) ended() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err != nil
}

func (r *rogue) send(m *pb.WorkRequest) {
	_ = r.stream.Send(m)
}

// event sends ev for lease a with the next sequence number of that lease (or the values
// already set in ev when they are non-zero).
func (r *rogue) event(a *pb.Assign, ev *pb.DownloadEvent) {
	r.mu.Lock()
	r.seq[a.GetLeaseId()]++
	if ev.Sequence == 0 {
		ev.Sequence = r.seq[a.GetLeaseId()]
	}
	r.mu.Unlock()
	if ev.LeaseId == "" {
		ev.LeaseId = a.GetLeaseId()
	}
	if ev.Attempt == 0 {
		ev.Attempt = a.GetAttempt()
	}
	ev.BatchId, ev.PaperId = a.GetBatchId(), a.GetPaperId()
	r.send(&pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: ev}})
}

func started(a *pb.Assign) *pb.DownloadEvent {
	return &pb.DownloadEvent{Kind: &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{Url: a.GetUrl()}}}
}

func completed(c *pb.DownloadCompleted) *pb.DownloadEvent {
	return &pb.DownloadEvent{Kind: &pb.DownloadEvent_Completed{Completed: c}}
}

func heartbeat() *pb.WorkRequest {
	return &pb.WorkRequest{Msg: &pb.WorkRequest_Heartbeat{Heartbeat: &pb.Heartbeat{}}}
}

func (r *rogue) close() {
	r.cancel()
	<-r.done
}

// wantCode fails unless st has code c.
func wantCode(t *testing.T, what string, st *status.Status, c codes.Code) {
	t.Helper()
	if st.Code() != c {
		t.Fatalf("%s: got %s (%q), want %s", what, st.Code(), st.Message(), c)
	}
}

// counter returns the value of the coordinator counter name{label=value} ("" label: no labels).
func (e *env) counter(name, label, value string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if match {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// waitFor polls cond until it holds (the system under test runs on its own goroutines; this
// waits for an outcome, it does not sleep to order events).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// progressBarrier sends a progress event of n bytes for lease a on r and waits until the
// coordinator applied it (GetPaper shows n bytes): every message r sent before is applied too.
func (e *env) progressBarrier(r *rogue, a *pb.Assign, n int64) {
	e.t.Helper()
	r.event(a, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: n}}})
	waitFor(e.t, "the coordinator to apply the stream's events", func() bool {
		return e.paper(a.GetBatchId(), a.GetPaperId()).GetBytesDownloaded() == n
	})
}

// cancelCount returns how many Cancels r received.
func (r *rogue) cancelCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cancels)
}
