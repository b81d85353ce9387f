package fetcher

import (
	"context"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// lease is one Assign the fetcher holds, from Assign until Ack (or Cancel); see leaseBook for
// its phases.
type lease struct {
	a      *pb.Assign
	seq    int64
	cancel context.CancelCauseFunc
	// running: no terminal event yet (downloading, or its received body being committed).
	running bool
	// slot: it holds one of the fetcher's download slots (from Assign until its body is
	// received and handed to the commit queue, or until it ends).
	slot bool
	// received: its body is in and its body_received event queued; only the commit is left.
	received bool
	// Prefetch: waiting, a successor (Assign.after_lease_id) not started yet, holding no
	// slot, that takes the slot of pred when pred frees it with its body received; succ is
	// the reverse link. ctx is the context it runs under once started (set by the Fetcher).
	waiting    bool
	pred, succ *lease
	ctx        context.Context
	terminal   *pb.DownloadEvent // the completed/failed event, kept until acknowledged
	sentIn     uint64            // Work stream that last carried the terminal event
	forget     bool              // cancelled: drop once the terminal event is sent
	// lastEvent is when the lease's last event was queued; bytes and total its last progress.
	// The coordinator renews a lease only on its own events, so a running lease quiet for a
	// heartbeat interval gets a keep-alive progress event (leaseBook.keepAlive).
	lastEvent    time.Time
	bytes, total int64
	// held is the lease's started event while it is held back, to be folded into the next
	// event (leaseBook.queue), since heldAt.
	held   *pb.DownloadEvent
	heldAt time.Time
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
		ev.Kind = progressOf(bytes, total, bps, false)
	})
}
