package coordinator

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// metrics are the coordinator's Prometheus metrics.
type metrics struct {
	papers            *prometheus.GaugeVec
	batches           *prometheus.GaugeVec
	bytesDownloaded   prometheus.Counter
	failures          *prometheus.CounterVec
	droppedEvents     *prometheus.CounterVec
	protocolErrors    prometheus.Counter
	verifications     *prometheus.CounterVec
	duplicateIDs      prometheus.Counter
	leaseReclaims     *prometheus.CounterVec
	successors        *prometheus.CounterVec
	throttled         prometheus.Counter
	hostPauses        *prometheus.CounterVec
	cacheHits         prometheus.Counter
	singleFlightWaits prometheus.Counter
	loopSeconds       prometheus.Histogram
	commitSeconds     prometheus.Histogram
	commitRecords     prometheus.Histogram
	fetchers          prometheus.Gauge
	freeCredits       prometheus.Gauge
	downloadSeconds   prometheus.Histogram
	downloadBytes     prometheus.Histogram
	batchesDeleted    prometheus.Counter
	blobsDeleted      prometheus.Counter
	damagedBlobs      prometheus.Counter

	// The series of the vectors above counted once or more per paper, looked up once
	// (WithLabelValues hashes its labels and takes the vector's lock on every call).
	verifiedOK, verifiedRefused             prometheus.Counter
	successorsAssigned, successorsSlotTaken prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, inboxDepth func() float64) (*metrics, error) {
	const ns, sub = "paperfetch", "coordinator"
	m := &metrics{
		papers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "papers",
			Help: "Papers tracked, by state."}, []string{"state"}),
		batches: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "batches",
			Help: "Batches, by state."}, []string{"state"}),
		bytesDownloaded: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "downloaded_bytes_total",
			Help: "Bytes received by fetchers, as reported in download events."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "attempt_failures_total",
			Help: "Failed download attempts, by reason."}, []string{"reason"}),
		droppedEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dropped_events_total",
			Help: "Download events dropped, by cause (stale lease or attempt, duplicate sequence, foreign: the lease is not the stream's)."}, []string{"cause"}),
		protocolErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "fetcher_protocol_errors_total",
			Help: "Work streams closed with INVALID_ARGUMENT because a message broke the protocol."}),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "completion_verifications_total",
			Help: "Completions checked against the blob store, by result (ok, refused)."}, []string{"result"}),
		duplicateIDs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "fetcher_id_conflicts_total",
			Help: "Work streams refused their fetcher id: another live fetcher process holds it, or their credential may not use it."}),
		leaseReclaims: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "lease_reclaims_total",
			Help: "Leases cancelled and re-queued by the coordinator, by cause (expired, not_started, deadline)."}, []string{"cause"}),
		successors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "prefetched_leases_total",
			Help: "Prefetched leases (successors, Assign.after_lease_id) by outcome: assigned; slot_taken (their predecessor's body came in); handed_back (re-queued unstarted: predecessor failed, fetcher draining or gone, host limit shrank, reclaimed); reclaimed (cancelled, waiting behind a download whose body was not in, so that a stream with idle credits gets them)."}, []string{"outcome"}),
		throttled: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "fetcher_throttled_total",
			Help: "Work stream messages delayed by the stream's rate or inbox share (a fetcher sending too much)."}),
		hostPauses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "host_pauses_total",
			Help: "Hosts paused, by cause (retry_after, retry_after_capped, circuit_breaker)."}, []string{"cause"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "cache_hits_total",
			Help: "Papers completed from an already stored blob without a download."}),
		singleFlightWaits: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "single_flight_waits_total",
			Help: "Queued papers that waited for a running download of the same paper id or URL instead of downloading it again."}),
		loopSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "loop_iteration_seconds",
			Help: "Duration of one owner-loop iteration (apply, schedule, commit, flush).", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "store_commit_seconds",
			Help: "Duration of one store commit (including fsync).", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		commitRecords: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "store_commit_records",
			Help: "Records written per store commit (group-commit size).", Buckets: prometheus.ExponentialBuckets(1, 4, 10)}),
		fetchers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "connected_fetchers",
			Help: "Fetchers with an open Work stream."}),
		freeCredits: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "free_credits",
			Help: "Download slots fetchers offered that are not in use."}),
		downloadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "download_duration_seconds",
			Help: "Duration of successful downloads, as reported by fetchers.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}),
		downloadBytes: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "download_size_bytes",
			Help: "Size of successfully downloaded PDFs.", Buckets: prometheus.ExponentialBuckets(16<<10, 2, 16)}),
		batchesDeleted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "batches_deleted_total",
			Help: "Batches deleted (DeleteBatch or --retention)."}),
		blobsDeleted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "blobs_deleted_total",
			Help: "Blobs removed from the blob store: after their last paper was deleted, or found damaged."}),
		damagedBlobs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "damaged_blobs_total",
			Help: "Blobs ReadPaper found missing or not matching their record (DATA_LOSS): no longer cache hits, removed so a new download repairs them."}),
	}
	m.verifiedOK, m.verifiedRefused = m.verifications.WithLabelValues("ok"), m.verifications.WithLabelValues("refused")
	m.successorsAssigned, m.successorsSlotTaken = m.successors.WithLabelValues("assigned"), m.successors.WithLabelValues("slot_taken")
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.papers, m.batches, m.bytesDownloaded, m.failures, m.droppedEvents, m.protocolErrors, m.verifications, m.duplicateIDs, m.leaseReclaims, m.successors, m.throttled, m.hostPauses,
		m.cacheHits, m.singleFlightWaits, m.loopSeconds, m.commitSeconds, m.commitRecords, m.fetchers, m.freeCredits, m.downloadSeconds, m.downloadBytes,
		m.batchesDeleted, m.blobsDeleted, m.damagedBlobs,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "inbox_depth",
			Help: "Messages waiting in the owner loop's inbox."}, inboxDepth),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// update refreshes the gauges from the engine (called by the loop once per iteration).
func (m *metrics) update(e *engine) {
	for s := stateQueued; s < numStates; s++ {
		m.papers.WithLabelValues(stateLabel(s)).Set(float64(e.counts[s]))
	}
	var bc [5]int
	for _, b := range e.batches {
		if b != nil && !b.deleting && int(b.state) < len(bc) {
			bc[b.state]++
		}
	}
	for s := 1; s < len(bc); s++ {
		m.batches.WithLabelValues(batchStateLabel(pb.BatchState(s))).Set(float64(bc[s]))
	}
	m.fetchers.Set(float64(len(e.conns)))
	m.freeCredits.Set(float64(e.credits))
}

// stateLabel is the metric label of a paper state: "succeeded", "retry_wait"...
func stateLabel(s uint8) string { return enumLabel(pb.PaperState(s).String(), "PAPER_STATE_") }

// batchStateLabel is the metric label of a batch state: "open", "completed"...
func batchStateLabel(s pb.BatchState) string { return enumLabel(s.String(), "BATCH_STATE_") }

// reasonLabel is the metric and log label of a failure reason: "not_found", "not_pdf"...
func reasonLabel(r pb.FailureReason) string { return enumLabel(r.String(), "FAILURE_REASON_") }

// enumLabel turns an enum value's name into a Prometheus-style label value: the type prefix
// dropped, lower case ("PAPER_STATE_SUCCEEDED" becomes "succeeded").
func enumLabel(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}
