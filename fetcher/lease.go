package fetcher

import (
	"context"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// lease is one Assign the fetcher holds, from Assign until Ack (or Cancel).
type lease struct {
	a        *pb.Assign
	seq      int64
	cancel   context.CancelCauseFunc
	running  bool
	terminal *pb.DownloadEvent // the completed/failed event, kept until acknowledged
	sentIn   uint64            // Work stream that last carried the terminal event
	credited bool              // its slot was returned (Credits sent, or covered by a Hello)
	forget   bool              // cancelled: drop once the terminal event is sent
}

// leaseReporter reports a lease's started and progress events.
type leaseReporter struct {
	f *Fetcher
	l *lease
}

func (r *leaseReporter) started(url string, resumeOffset int64) {
	r.f.emit(r.l, func(ev *pb.DownloadEvent) {
		ev.Kind = &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{Url: url, ResumeOffset: resumeOffset}}
	})
}

func (r *leaseReporter) progress(bytes, total int64, bps float64) {
	r.f.emit(r.l, func(ev *pb.DownloadEvent) {
		ev.Kind = &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: bytes, Total: total, BytesPerSecond: bps}}
	})
}
