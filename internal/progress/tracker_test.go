package progress

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/clock"
)

// The ETA is never below what a paused or delay-bound host needs; when nothing moves, the rate
// decays to 0 and the ETA becomes unknown instead of a frozen number.
func TestTrackerPausesAndFrozenRate(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	tr := NewTracker(clk)
	var bytes, done int64
	step := func(hosts ...*pb.HostState) {
		clk.Advance(time.Second)
		tr.Observe(&pb.WatchBatchResponse{Batch: batch(100, done, 0, 0, 2, bytes), Hosts: hosts})
	}
	for range 5 { // 1 paper and 1 MiB a second
		bytes += 1 << 20
		done++
		step()
	}
	s := tr.Snapshot()
	if s.Rate < 0.9*(1<<20) || s.ETA < 90*time.Second || s.ETA > 100*time.Second {
		t.Fatalf("steady: rate %.0f ETA %v, want about 1 MiB/s and 95s", s.Rate, s.ETA)
	}
	// A host paused for 10 minutes holds 50 of the papers back: the ETA is at least the pause.
	pause := &pb.HostState{Host: "h.example", Remaining: 50, ConcurrencyLimit: 1, MaxConcurrency: 2,
		PausedUntil: timestamppb.New(clk.Now().Add(10 * time.Minute)), PauseCause: "retry_after"}
	bytes += 1 << 20
	done++
	step(pause)
	if s = tr.Snapshot(); s.ETA < 9*time.Minute {
		t.Errorf("ETA %v during a 10-minute pause", s.ETA)
	}
	// A delay-bound host: 60 papers at 2s each need at least 2 minutes.
	delay := &pb.HostState{Host: "d.example", Remaining: 60, ConcurrencyLimit: 2, MaxConcurrency: 2, Delay: durationpb.New(2 * time.Second)}
	bytes += 1 << 20
	done++
	step(delay)
	if s = tr.Snapshot(); s.ETA < 2*time.Minute {
		t.Errorf("ETA %v with 60 papers 2s apart", s.ETA)
	}
	// Nothing moves any more: the rate decays, then the ETA is unknown.
	rates := []float64{tr.Snapshot().Rate}
	for range 10 {
		step(delay)
		rates = append(rates, tr.Snapshot().Rate)
	}
	for i := 4; i < len(rates); i++ {
		if rates[i] >= rates[i-1] && rates[i-1] > 0 {
			t.Errorf("the rate does not decay while nothing moves: %v", rates)
			break
		}
	}
	if s = tr.Snapshot(); s.ETA != -1 {
		t.Errorf("ETA %v after 10s without progress, want unknown", s.ETA)
	}
	for range 30 {
		step(delay)
	}
	if s = tr.Snapshot(); s.Rate != 0 {
		t.Errorf("rate %.0f after 40s without progress, want 0", s.Rate)
	}
}
