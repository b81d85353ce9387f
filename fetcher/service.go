package fetcher

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// fetchService implements FetcherService: one download run for the caller, its events streamed
// back.
type fetchService struct {
	pb.UnimplementedFetcherServiceServer
	f *Fetcher
	// calls holds one token per running Fetch call (capacity Config.MaxFetchCalls).
	calls chan struct{}
}

// Fetch downloads req.url exactly like an Assign and streams the events; it stores the PDF only
// when req.store is set. A caller can only lower the fetcher's limits: max_size_bytes above
// --max-size and a timeout above --timeout are INVALID_ARGUMENT. At most
// Config.MaxFetchCalls calls run at once; one more is RESOURCE_EXHAUSTED.
func (s *fetchService) Fetch(req *pb.FetchRequest, stream grpc.ServerStreamingServer[pb.FetchResponse]) error {
	f := s.f
	// The server's validation interceptor has normally checked req already; checking again
	// here (same rules, one implementation) keeps Fetch safe when the service is registered on
	// a server without that interceptor.
	if err := validate.Request(req); err != nil {
		return err
	}
	if err := f.checkFetchLimits(req); err != nil {
		return err
	}
	select {
	case s.calls <- struct{}{}:
		defer func() { <-s.calls }()
	default:
		return status.Errorf(codes.ResourceExhausted, "this fetcher already runs %d Fetch calls (--max-fetch-calls); try again when one has finished", cap(s.calls))
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

// checkFetchLimits refuses a FetchRequest asking for more than the fetcher's own limits.
func (f *Fetcher) checkFetchLimits(req *pb.FetchRequest) error {
	var vs []validate.Violation
	if n := req.GetMaxSizeBytes(); n > f.cfg.MaxSize {
		vs = append(vs, validate.Violation{Field: "max_size_bytes", Description: fmt.Sprintf("%d is above this fetcher's --max-size of %d bytes", n, f.cfg.MaxSize)})
	}
	if t := req.GetTimeout(); t != nil {
		switch d := t.AsDuration(); {
		case !t.IsValid() || d <= 0:
			vs = append(vs, validate.Violation{Field: "timeout", Description: "must be positive"})
		case d > f.cfg.Timeout:
			vs = append(vs, validate.Violation{Field: "timeout", Description: fmt.Sprintf("%s is above this fetcher's --timeout of %s", d, f.cfg.Timeout)})
		}
	}
	if len(vs) > 0 {
		return &validate.Error{Violations: vs}
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
