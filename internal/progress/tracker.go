package progress

import (
	"math"
	"sync"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/clock"
)

// Tracker folds WatchBatch updates into Snapshots. It is safe for concurrent use.
type Tracker struct {
	clk   clock.Clock
	start time.Time

	mu        sync.Mutex
	total     int64 // from SetTotal; 0 = use the batch's
	batch     *pb.Batch
	downloads []Download
	rate      float64 // smoothed bytes/s computed from bytes_downloaded
	lastBytes int64
	lastAt    time.Time
	doneRate  float64 // smoothed papers/s, for the ETA
	lastDone  int64
	lastMove  time.Time // when bytes or the done count last changed (a frozen rate decays)
	hosts     []Host
}

// NewTracker returns a Tracker whose elapsed time starts now.
func NewTracker(clk clock.Clock) *Tracker {
	if clk == nil {
		clk = clock.Real{}
	}
	now := clk.Now()
	return &Tracker{clk: clk, start: now, lastAt: now, lastMove: now}
}

// SetTotal sets the number of papers expected, when the caller knows it before the batch does
// (papers are appended in chunks).
func (t *Tracker) SetTotal(n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total = n
}

// Observe records one WatchBatch update.
func (t *Tracker) Observe(resp *pb.WatchBatchResponse) {
	if resp.GetBatch() == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.batch = resp.GetBatch()
	now := t.clk.Now()
	if dt := now.Sub(t.lastAt).Seconds(); dt >= 0.5 || resp.GetSnapshot() {
		bytes := t.batch.GetBytesDownloaded()
		c := t.batch.GetCounts()
		done := c.GetSucceeded() + c.GetFailed() + c.GetCancelled()
		if bytes != t.lastBytes || done != t.lastDone {
			t.lastMove = now
		}
		if !resp.GetSnapshot() && dt > 0 {
			t.rate = smooth(t.rate, float64(max(bytes-t.lastBytes, 0))/dt)
			t.doneRate = smooth(t.doneRate, float64(max(done-t.lastDone, 0))/dt)
		}
		t.lastBytes, t.lastDone, t.lastAt = bytes, done, now
	}
	t.hosts = t.hosts[:0]
	for _, h := range resp.GetHosts() {
		t.hosts = append(t.hosts, hostFromProto(h))
	}
	// Every update lists all running downloads (include_papers), so it replaces the list.
	t.downloads = t.downloads[:0]
	for _, a := range resp.GetActive() {
		t.downloads = append(t.downloads, Download{PaperID: a.GetPaperId(), URL: a.GetUrl(), Bytes: a.GetBytes(), Total: a.GetTotal(), Rate: a.GetBytesPerSecond(), Attempt: a.GetAttempt()})
	}
}

// rateHalfLife is how long a rate holds once nothing moves, and then its half-life.
const rateHalfLife = 3 * time.Second

// smooth is an exponentially weighted moving average.
func smooth(prev, sample float64) float64 {
	if prev == 0 {
		return sample
	}
	return 0.7*prev + 0.3*sample
}

// Snapshot returns the current progress.
func (t *Tracker) Snapshot() Snapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clk.Now()
	s := Snapshot{Elapsed: now.Sub(t.start), ETA: -1, Total: t.total, Now: now}
	if b := t.batch; b != nil {
		c := b.GetCounts()
		s.BatchID, s.State = b.GetBatchId(), BatchStateName(b.GetState())
		s.Succeeded, s.Failed, s.Cancelled, s.Cached = c.GetSucceeded(), c.GetFailed(), c.GetCancelled(), c.GetCached()
		s.Queued, s.RetryWait, s.Downloading = c.GetQueued(), c.GetRetryWait(), c.GetDownloading()
		s.Bytes = b.GetBytesDownloaded()
		s.Rate = b.GetBytesPerSecond()
		if s.Total == 0 || b.GetState() != pb.BatchState_BATCH_STATE_OPEN {
			s.Total = max(b.GetTotalPapers(), s.Total)
		}
	}
	if s.Rate <= 0 {
		s.Rate = t.rate
	}
	if s.Rate <= 0 && s.Bytes > 0 && s.Elapsed > 0 && now.Sub(t.lastMove) < rateHalfLife {
		s.Rate = float64(s.Bytes) / s.Elapsed.Seconds() // too early for a recent rate
	}
	// Rates measured while bytes flowed decay once nothing moves (a stalled host, a pause), so
	// that a frozen rate and ETA never pretend progress.
	idle := now.Sub(t.lastMove)
	decay := 1.0
	if idle > rateHalfLife {
		decay = math.Pow(0.5, float64(idle-rateHalfLife)/float64(rateHalfLife))
	}
	s.Rate *= decay
	if s.Rate < 1 {
		s.Rate = 0
	}
	s.Done = s.Succeeded + s.Failed + s.Cancelled
	s.Total = max(s.Total, s.Done)
	s.Hosts = append([]Host(nil), t.hosts...)
	if left := s.Total - s.Done; left == 0 {
		s.ETA = 0
	} else if doneRate := t.doneRate * decay; doneRate > 1e-3 {
		s.ETA = time.Duration(float64(left) / doneRate * float64(time.Second)).Round(time.Second)
		// No faster than the slowest host can go: a pause, or a per-host delay per paper.
		for _, h := range s.Hosts {
			s.ETA = max(s.ETA, h.MinTimeLeft(now).Round(time.Second))
		}
		if idle > 2*rateHalfLife {
			s.ETA = -1 // nothing has moved for a while: unknown, not a made-up number
		}
	}
	s.Downloads = append([]Download(nil), t.downloads...)
	return s
}
