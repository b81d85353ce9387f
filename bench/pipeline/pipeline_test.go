package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/paperfetch/paperfetch/bench/originlib"
	"github.com/paperfetch/paperfetch/coordinator"
	"github.com/paperfetch/paperfetch/fetcher"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// stack is one coordinator and its fetchers, running in this process.
type stack struct {
	client pb.CoordinatorServiceClient
	stop   func()
	msgs   *msgCounter
}

// msgCounter counts the Work stream's messages (a server stream interceptor), and what they
// carry by direction and kind (a batch, step 9 of the Work protocol, counts once as a message
// and once per item: in:progress counts every progress event, however batched), for the
// messages-per-paper figure.
type msgCounter struct {
	mu   sync.Mutex
	msgs int
	n    map[string]int
}

func (m *msgCounter) add(kinds ...string) {
	m.mu.Lock()
	m.msgs++
	for _, k := range kinds {
		m.n[k]++
	}
	m.mu.Unlock()
}

// total returns the count of every kind, and the number of messages.
func (m *msgCounter) total() (map[string]int, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for k, v := range m.n {
		out[k] = v
	}
	return out, m.msgs
}

type countingStream struct {
	grpc.ServerStream
	m *msgCounter
}

func eventKind(ev *pb.DownloadEvent) string {
	switch ev.GetKind().(type) {
	case *pb.DownloadEvent_Started:
		return "in:started"
	case *pb.DownloadEvent_Progress:
		return "in:progress"
	default:
		return "in:terminal"
	}
}

func (s *countingStream) RecvMsg(x any) error {
	err := s.ServerStream.RecvMsg(x)
	if r, ok := x.(*pb.WorkRequest); ok && err == nil {
		var kinds []string
		switch m := r.GetMsg().(type) {
		case *pb.WorkRequest_Credits:
			kinds = append(kinds, "in:credits")
		case *pb.WorkRequest_Event:
			kinds = append(kinds, eventKind(m.Event))
			for _, ev := range r.GetMoreEvents() {
				kinds = append(kinds, eventKind(ev))
			}
		default:
			kinds = append(kinds, "in:other")
		}
		s.m.add(kinds...)
	}
	return err
}

func (s *countingStream) SendMsg(x any) error {
	if r, ok := x.(*pb.WorkResponse); ok {
		var kinds []string
		switch r.GetMsg().(type) {
		case *pb.WorkResponse_Assign:
			for range 1 + len(r.GetMoreAssigns()) {
				kinds = append(kinds, "out:assign")
			}
		case *pb.WorkResponse_Ack:
			for range 1 + len(r.GetMoreAcks()) {
				kinds = append(kinds, "out:ack")
			}
		default:
			kinds = append(kinds, "out:other")
		}
		s.m.add(kinds...)
	}
	return s.ServerStream.SendMsg(x)
}

func startStack(b *testing.B, dir string, fetchers, slots, perHost int) *stack {
	b.Helper()
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	blobURL := "file://" + filepath.Join(dir, "blobs")
	bucket, err := blobstore.Open(ctx, blobURL)
	if err != nil {
		b.Fatal(err)
	}
	ccfg := coordinator.DefaultConfig()
	// BucketURL as cmd/coordinator and embedded set it: completions are verified with a stat(2)
	// of the blob's file, not through the blob store's API (about 37 allocations per paper).
	ccfg.DataDir, ccfg.Bucket, ccfg.BucketURL, ccfg.PerHostDelay, ccfg.PerHostConcurrency, ccfg.Logger = filepath.Join(dir, "data"), bucket, blobURL, 0, perHost, logger
	coord, err := coordinator.Open(ccfg)
	if err != nil {
		b.Fatal(err)
	}
	msgs := &msgCounter{n: map[string]int{}}
	srv := grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, &countingStream{ServerStream: ss, m: msgs})
	}))
	coord.Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(lis) })
	wg.Go(func() { _ = coord.Run(runCtx) })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	for i := range fetchers {
		fcfg := fetcher.DefaultConfig()
		fcfg.ID, fcfg.Slots, fcfg.Bucket, fcfg.BlobURL = fmt.Sprintf("bench-fetcher-%d", i), slots, bucket, blobURL
		fcfg.AllowPrivateNetworks, fcfg.Logger = true, logger
		if v := os.Getenv("PIPELINE_PREFETCH"); v != "" { // 0 turns prefetch off: every slot returns its credit
			if fcfg.Prefetch, err = strconv.Atoi(v); err != nil {
				b.Fatalf("PIPELINE_PREFETCH=%q: %v", v, err)
			}
		}
		f, err := fetcher.New(fcfg)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() { _ = f.Run(runCtx, conn) })
	}
	return &stack{
		msgs:   msgs,
		client: pb.NewCoordinatorServiceClient(conn),
		stop: func() {
			cancel()
			coord.CloseStreams()
			srv.Stop()
			wg.Wait()
			_ = conn.Close()
			_ = coord.Close()
			_ = bucket.Close()
		},
	}
}

// runBatch submits the papers and waits until the batch is COMPLETED.
func runBatch(b *testing.B, client pb.CoordinatorServiceClient, id string, urls []string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	req := &pb.SubmitBatchRequest{BatchId: id}
	for i, u := range urls {
		req.Papers = append(req.Papers, &pb.PaperSpec{PaperId: fmt.Sprintf("p%06d", i), Urls: []string{u}})
	}
	if _, err := client.SubmitBatch(ctx, req, grpc.WaitForReady(true)); err != nil {
		b.Fatalf("SubmitBatch: %v", err)
	}
	stream, err := client.WatchBatch(ctx, &pb.WatchBatchRequest{BatchId: id})
	if err != nil {
		b.Fatalf("WatchBatch: %v", err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			b.Fatalf("WatchBatch: %v", err)
		}
		if s := msg.GetBatch().GetState(); s == pb.BatchState_BATCH_STATE_COMPLETED || s == pb.BatchState_BATCH_STATE_CANCELLED {
			if c := msg.GetBatch().GetCounts(); c.GetSucceeded() != int64(len(urls)) {
				b.Fatalf("batch ended %v with counts %v", s, c)
			}
			return
		}
	}
}

func BenchmarkPipeline(b *testing.B) {
	papers := envInt(b, "PIPELINE_PAPERS", 2000)
	size := envInt(b, "PIPELINE_SIZE", 65536)
	slots := envInt(b, "PIPELINE_SLOTS", 8)
	base := os.Getenv("PAPERFETCH_BENCH_ORIGIN")
	if base == "" {
		o, err := originlib.New(originlib.Config{})
		if err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(o)
		defer srv.Close()
		base = srv.URL
	}
	urls := make([]string, papers)
	for i := range urls {
		urls[i] = fmt.Sprintf("%s/pdf/%d?size=%d", base, i, size)
	}
	b.ReportAllocs()
	b.SetBytes(int64(papers) * int64(size))
	msgs, byKind := 0, map[string]int{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := startStack(b, b.TempDir(), 2, slots, 2*slots)
		b.StartTimer()
		runBatch(b, s.client, fmt.Sprintf("bench-%d", i), urls)
		b.StopTimer()
		s.stop()
		kinds, n := s.msgs.total()
		msgs += n
		for k, v := range kinds {
			byKind[k] += v
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(papers)*float64(b.N)/b.Elapsed().Seconds(), "papers/s")
	// Work stream messages (both directions) per paper, and what they carry per kind.
	b.ReportMetric(float64(msgs)/float64(papers*b.N), "msgs/paper")
	for k, v := range byKind {
		b.ReportMetric(float64(v)/float64(papers*b.N), k+"/paper")
	}
}
