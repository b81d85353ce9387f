package fetcher

import (
	"context"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// fetchService implements FetcherService: one download run for the caller, its events streamed
// back.
type fetchService struct {
	pb.UnimplementedFetcherServiceServer
	f *Fetcher
}

// Fetch downloads req.url exactly like an Assign and streams the events; it stores the PDF only
// when req.store is set.
func (s *fetchService) Fetch(req *pb.FetchRequest, stream grpc.ServerStreamingServer[pb.FetchResponse]) error {
	f := s.f
	// The server's validation interceptor has normally checked req already; checking again
	// here (same rules, one implementation) keeps Fetch safe when the service is registered on
	// a server without that interceptor.
	if err := validate.Request(req); err != nil {
		return err
	}
	j := job{
		url:         req.GetUrl(),
		expectedSHA: strings.ToLower(req.GetExpectedSha256()),
		maxSize:     f.cfg.MaxSize,
		timeout:     f.cfg.Timeout,
		stall:       f.cfg.StallTimeout,
		store:       req.GetStore(),
	}
	if req.GetMaxSizeBytes() > 0 {
		j.maxSize = req.GetMaxSizeBytes()
	}
	if t := req.GetTimeout(); t != nil {
		j.timeout = t.AsDuration()
	}

	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	rep := &streamReporter{f: f, stream: stream, cancel: cancel}
	start := f.clk.Now()
	f.m.active.Inc()
	out, fail := f.dl.download(ctx, j, rep)
	f.m.active.Dec()
	ev := rep.next()
	f.terminalKind(out, fail, start)(ev)
	if err := rep.send(ev); err != nil {
		return err
	}
	return nil
}

// streamReporter sends a Fetch call's events to its caller.
type streamReporter struct {
	f      *Fetcher
	stream grpc.ServerStreamingServer[pb.FetchResponse]
	cancel context.CancelCauseFunc

	mu  sync.Mutex
	seq int64
	err error
}

func (r *streamReporter) next() *pb.DownloadEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	return &pb.DownloadEvent{Sequence: r.seq, Time: timestamppb.New(r.f.clk.Now())}
}

// send sends ev; after a failed send the download is aborted and later sends are skipped.
func (r *streamReporter) send(ev *pb.DownloadEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	if err := r.stream.Send(&pb.FetchResponse{Event: ev}); err != nil {
		r.err = err
		r.cancel(&abortError{why: "caller went away"})
		return err
	}
	return nil
}

func (r *streamReporter) started(url string, resumeOffset int64) {
	ev := r.next()
	ev.Kind = &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{Url: url, ResumeOffset: resumeOffset}}
	_ = r.send(ev)
}

func (r *streamReporter) progress(bytes, total int64, bps float64) {
	ev := r.next()
	ev.Kind = &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: bytes, Total: total, BytesPerSecond: bps}}
	_ = r.send(ev)
}
