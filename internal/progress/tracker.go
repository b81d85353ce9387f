package progress

import (
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
}

// NewTracker returns a Tracker whose elapsed time starts now.
func NewTracker(clk clock.Clock) *Tracker {
	if clk == nil {
		clk = clock.Real{}
	}
	now := clk.Now()
	return &Tracker{clk: clk, start: now, lastAt: now}
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
		if !resp.GetSnapshot() && dt > 0 {
			t.rate = smooth(t.rate, float64(max(bytes-t.lastBytes, 0))/dt)
			t.doneRate = smooth(t.doneRate, float64(max(done-t.lastDone, 0))/dt)
		}
		t.lastBytes, t.lastDone, t.lastAt = bytes, done, now
	}
	// Every update lists all running downloads (include_papers), so it replaces the list.
	t.downloads = t.downloads[:0]
	for _, a := range resp.GetActive() {
		t.downloads = append(t.downloads, Download{PaperID: a.GetPaperId(), URL: a.GetUrl(), Bytes: a.GetBytes(), Total: a.GetTotal(), Rate: a.GetBytesPerSecond(), Attempt: a.GetAttempt()})
	}
}

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
	s := Snapshot{Elapsed: t.clk.Now().Sub(t.start), ETA: -1, Total: t.total}
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
	if s.Rate <= 0 && s.Bytes > 0 && s.Elapsed > 0 {
		s.Rate = float64(s.Bytes) / s.Elapsed.Seconds() // too early for a recent rate
	}
	s.Done = s.Succeeded + s.Failed + s.Cancelled
	s.Total = max(s.Total, s.Done)
	if left := s.Total - s.Done; left == 0 {
		s.ETA = 0
	} else if t.doneRate > 0 {
		s.ETA = time.Duration(float64(left) / t.doneRate * float64(time.Second)).Round(time.Second)
	}
	s.Downloads = append([]Download(nil), t.downloads...)
	return s
}
