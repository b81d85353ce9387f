package fetcher

import (
	"context"
	"time"

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
	// lastEvent is when the lease's last event was queued; bytes and total its last progress.
	// The coordinator renews a lease only on its own events, so a running lease quiet for a
	// heartbeat interval gets a keep-alive progress event (keepAliveLocked).
	lastEvent    time.Time
	bytes, total int64
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
		r.l.bytes, r.l.total = bytes, total
		ev.Kind = &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: bytes, Total: total, BytesPerSecond: bps}}
	})
}

// keepAliveLocked queues a progress event (the last known counts) for every running lease
// that has been quiet since before quiet, so that the coordinator keeps renewing it; f.mu
// must be held. It returns how many it queued. The keep-alives are not subject to maxOutbox:
// there is at most one per running lease.
func (f *Fetcher) keepAliveLocked(quiet time.Time) int {
	n := 0
	for _, l := range f.leases {
		if !l.running || l.lastEvent.After(quiet) {
			continue
		}
		ev := f.newEventLocked(l)
		ev.Kind = &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: l.bytes, Total: l.total}}
		f.outbox = append(f.outbox, &pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: ev}})
		n++
	}
	return n
}
