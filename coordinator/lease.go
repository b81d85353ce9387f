package coordinator

import (
	"strconv"
	"strings"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// lease is one running attempt of one paper on one fetcher. Only the loop touches it.
type lease struct {
	idx        uint32
	attempt    uint16
	batch      uint32
	conn       *fetcherConn // nil for an orphan (reloaded after a restart, not yet re-announced)
	assignedAt time.Time
	lastSeq    int64
	started    bool
	cancelSent bool
	url        string
	paperID    string
	resolve    *pb.ResolveStep // set for a resolution step of a DOI
	bytes      int64
	total      int64
	bps        float64
}

// leaseID formats the id of a lease: the store id (so ids of another store never match),
// the paper index and the attempt number.
func leaseID(storeID string, idx uint32, attempt uint16) string {
	var b strings.Builder
	b.Grow(len(storeID) + 16)
	b.WriteString(storeID)
	b.WriteByte('-')
	b.WriteString(strconv.FormatUint(uint64(idx), 36))
	b.WriteByte('-')
	b.WriteString(strconv.FormatUint(uint64(attempt), 10))
	return b.String()
}

// parseLeaseID is the inverse of leaseID; ok is false for ids this store did not issue.
func parseLeaseID(storeID, id string) (idx uint32, attempt uint16, ok bool) {
	rest, found := strings.CutPrefix(id, storeID)
	if !found || len(rest) < 4 || rest[0] != '-' {
		return 0, 0, false
	}
	a, b, found := strings.Cut(rest[1:], "-")
	if !found {
		return 0, 0, false
	}
	i, err := strconv.ParseUint(a, 36, 32)
	if err != nil {
		return 0, 0, false
	}
	n, err := strconv.ParseUint(b, 10, 16)
	if err != nil {
		return 0, 0, false
	}
	return uint32(i), uint16(n), true
}
