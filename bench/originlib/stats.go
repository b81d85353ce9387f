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
