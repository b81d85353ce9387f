package originlib

// Stats is a snapshot of an origin's counters, as served by GET /stats.
type Stats struct {
	// Requests counts the /pdf requests received.
	Requests int64 `json:"requests"`
	// InFlight counts the /pdf requests being served now.
	InFlight int64 `json:"in_flight"`
	// InFlightByUA splits InFlight by User-Agent header (entries at zero are omitted).
	InFlightByUA map[string]int64 `json:"in_flight_by_user_agent"`
	// Status counts the responses per HTTP status sent ("200", "206", "503"...).
	Status map[string]int64 `json:"status"`
	// Resets counts responses cut by a TCP reset.
	Resets int64 `json:"resets"`
	// Truncated counts responses closed before their declared length.
	Truncated int64 `json:"truncated"`
	// CompleteBodies counts responses that delivered a file through its last byte (a full 200,
	// or a 206 whose range ends at the last byte).
	CompleteBodies int64 `json:"complete_bodies"`
	// DistinctComplete counts the papers that were delivered completely at least once.
	DistinctComplete int64 `json:"distinct_complete"`
	// BytesSent counts body bytes written to clients (all responses).
	BytesSent int64 `json:"bytes_sent"`

	// Timeline of the /pdf requests since the start (or the last reset), for splitting a
	// client's wall time into its start-up, steady state and tail.
	Timeline Timeline `json:"timeline"`
}

// Timeline is when the /pdf requests ran: the first and last, how many ran at once over time,
// and how long a connection stayed idle between the end of one response and its next request.
// Times are Unix nanoseconds of the origin's clock (0: no such event yet).
type Timeline struct {
	// FirstRequest is when the first request arrived.
	FirstRequest int64 `json:"first_request_unix_ns"`
	// LastRequest is when the latest request arrived.
	LastRequest int64 `json:"last_request_unix_ns"`
	// LastEnd is when the latest response of a request of this timeline ended (its handler
	// returned; a request that began before the last reset does not count).
	LastEnd int64 `json:"last_end_unix_ns"`
	// BusyNanos is the integral of InFlight over time (the sum of every request's duration):
	// BusyNanos / (LastEnd - FirstRequest) is the time-weighted average of requests in flight.
	BusyNanos int64 `json:"busy_ns"`
	// MaxInFlight is the most requests in flight at once; MaxInFlightAt when it was first reached.
	MaxInFlight   int64 `json:"max_in_flight"`
	MaxInFlightAt int64 `json:"max_in_flight_at_unix_ns"`
	// ConnGaps counts the requests that arrived on a connection that had served a response
	// before; ConnGapNanos sums, and ConnGapMaxNanos is the longest of, the idle times between
	// that earlier response's end and the request. Connections are told apart by their remote
	// address; at most maxTrackedConns idle connections are remembered (beyond, all are
	// forgotten and their next requests count as first ones).
	ConnGaps        int64 `json:"conn_gaps"`
	ConnGapNanos    int64 `json:"conn_gap_ns"`
	ConnGapMaxNanos int64 `json:"conn_gap_max_ns"`
}

// AvgInFlight is the time-weighted average of requests in flight between the first request and
// the last response's end (0 before any response ended).
func (t Timeline) AvgInFlight() float64 {
	if span := t.LastEnd - t.FirstRequest; span > 0 {
		return float64(t.BusyNanos) / float64(span)
	}
	return 0
}

// PaperStats is what an origin saw of one paper number.
type PaperStats struct {
	// Requests counts the requests for the paper.
	Requests int `json:"requests"`
	// Completes counts the responses that delivered it through its last byte.
	Completes int `json:"completes"`
	// Failures counts the injected failures (503, 500, reset, truncate).
	Failures int `json:"failures"`
	// Size is the size of the last complete delivery.
	Size int64 `json:"size"`
}
