package progress

import "time"

// Snapshot is the progress of a batch at one moment, as every display shows it.
type Snapshot struct {
	// BatchID is the batch watched.
	BatchID string
	// State is the batch state name ("running", "completed"...).
	State string
	// Total is the number of papers expected (the input's count when known, else the batch's).
	Total int64
	// Done counts terminal papers: Succeeded + Failed + Cancelled.
	Done int64
	// Succeeded, Failed, Cancelled and Cached count papers; Cached is part of Succeeded.
	Succeeded, Failed, Cancelled, Cached int64
	// Queued, RetryWait and Downloading count live papers.
	Queued, RetryWait, Downloading int64
	// Bytes is the number of bytes downloaded so far.
	Bytes int64
	// Rate is the current download speed in bytes per second.
	Rate float64
	// Elapsed is the time since the display started.
	Elapsed time.Duration
	// ETA estimates the time left, or -1 when unknown.
	ETA time.Duration
	// Downloads are the running downloads (when the watch includes papers).
	Downloads []Download
	// Hosts are the hosts the batch waits on, most papers first (when the watch includes
	// papers).
	Hosts []Host
	// Now is when the snapshot was taken (for the hosts' pauses).
	Now time.Time
}

// SlowHosts returns the hosts that are not at full speed (paused, throttled, delay-bound).
func (s Snapshot) SlowHosts() []Host {
	var out []Host
	for _, h := range s.Hosts {
		if h.Condition(s.Now) != HostOK {
			out = append(out, h)
		}
	}
	return out
}

// Download is one running download.
type Download struct {
	// PaperID is the paper.
	PaperID string
	// URL is the URL being fetched.
	URL string
	// Bytes received so far, and Total expected (0 when unknown).
	Bytes, Total int64
	// Rate is its speed in bytes per second.
	Rate float64
	// Attempt is the attempt number.
	Attempt int32
}
