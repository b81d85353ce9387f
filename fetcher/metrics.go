package fetcher

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the fetcher's Prometheus metrics.
type metrics struct {
	active prometheus.Gauge
	// pendingCommits is the number of received bodies not yet durable.
	pendingCommits prometheus.Gauge
	bytes          prometheus.Counter
	results        *prometheus.CounterVec
	failures       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	// spoolRemoved counts spool files removed by a finished URL or by the sweep.
	spoolRemoved *prometheus.CounterVec

	// The children of results and duration, looked up once (WithLabelValues hashes its
	// values and takes a lock, twice per paper: 0.1% of get's CPU samples); the series exist,
	// at zero, from the start.
	completed, failed       prometheus.Counter
	completedDur, failedDur prometheus.Observer
}

// newMetrics creates the metrics and registers them on reg (when not nil).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "paperfetch", Subsystem: "fetcher", Name: "active_downloads",
			Help: "Downloads in progress (their HTTP exchange not over).",
		}),
		pendingCommits: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "paperfetch", Subsystem: "fetcher", Name: "pending_commits",
			Help: "Received bodies not yet durable: waiting for a place in the commit queue (their slot still taken) or being committed (at most --pending-commits, their slot freed).",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "paperfetch", Subsystem: "fetcher", Name: "downloaded_bytes_total",
			Help: "Body bytes received.",
		}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "paperfetch", Subsystem: "fetcher", Name: "downloads_total",
			Help: "Finished download attempts by result (completed, failed).",
		}, []string{"result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "paperfetch", Subsystem: "fetcher", Name: "failures_total",
			Help: "Failed download attempts by class and reason.",
		}, []string{"class", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "paperfetch", Subsystem: "fetcher", Name: "download_duration_seconds",
			Help:    "Duration of download attempts by result.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12),
		}, []string{"result"}),
		spoolRemoved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "paperfetch", Subsystem: "fetcher", Name: "spool_files_removed_total",
			Help: "Spool (partial and temporary) files removed, by cause: finished (the URL was stored or failed permanently, by any fetcher) or swept (not modified for the spool max age).",
		}, []string{"cause"}),
	}
	m.completed, m.failed = m.results.WithLabelValues("completed"), m.results.WithLabelValues("failed")
	m.completedDur, m.failedDur = m.duration.WithLabelValues("completed"), m.duration.WithLabelValues("failed")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.active, m.pendingCommits, m.bytes, m.results, m.failures, m.duration, m.spoolRemoved} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// registerLeaseGauges registers the gauges read from f's lease book at every scrape: the
// prefetched leases waiting for a slot, and the results (terminal events) not yet
// acknowledged by the coordinator.
func registerLeaseGauges(reg prometheus.Registerer, f *Fetcher) error {
	count := func(pred func(*lease) bool) func() float64 {
		return func() float64 {
			f.mu.Lock()
			defer f.mu.Unlock()
			n := 0
			for _, l := range f.book.leases {
				if pred(l) {
					n++
				}
			}
			return float64(n)
		}
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "paperfetch", Subsystem: "fetcher", Name: "prefetched_leases",
			Help: "Prefetched leases (successors) in the prefetch window: waiting for the slot of a running download whose body is not in yet (at most --prefetch: one more is handed back).",
		}, func() float64 {
			f.mu.Lock()
			defer f.mu.Unlock()
			return float64(f.book.waiting)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "paperfetch", Subsystem: "fetcher", Name: "unacknowledged_results",
			Help: "Finished leases whose result (completed or failed event) the coordinator has not acknowledged yet.",
		}, count(func(l *lease) bool { return l.terminal != nil })),
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}
