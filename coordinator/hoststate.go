package coordinator

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Host states in watch updates (WatchBatchResponse.hosts).
const (
	// maxHostStates bounds the hosts of one watch update (the contract's bound).
	maxHostStates = 32
	// hostStatesInterval is how often a watched batch's hosts are recomputed: it takes a scan
	// of the batch's papers (about 1 ms per million), so it is not done on every publish.
	hostStatesInterval = time.Second
)

// batchHosts is the cached part of hostStates for one batch: which hosts, in which order, with
// how many of the batch's papers (a scan of the batch). The hosts' own state is read afresh.
type batchHosts struct {
	at      time.Time
	order   []hostCount
	omitted int32
}

// hostCount is a host and the batch's live papers on it.
type hostCount struct {
	idx uint32
	n   int64
}

// hostStates returns the politeness state of the hosts that batch b's live papers (queued,
// waiting to retry, downloading) are on: the hosts with the most of them first, at most
// maxHostStates, and how many were left out. The hosts and their paper counts are recomputed
// at most every hostStatesInterval; the hosts' state (pauses, limits) is current. The protos
// are shared by every watcher of one publish and never modified.
func (e *engine) hostStates(b *batch, now time.Time) ([]*pb.HostState, int32) {
	if b.hosts == nil || now.Sub(b.hosts.at) >= hostStatesInterval {
		b.hosts = &batchHosts{at: now}
		b.hosts.order, b.hosts.omitted = e.batchHostCounts(b)
	}
	states := make([]*pb.HostState, 0, len(b.hosts.order))
	for _, hc := range b.hosts.order {
		if int(hc.idx) >= len(e.hosts) || e.hosts[hc.idx] == nil {
			continue
		}
		states = append(states, e.hostState(e.hosts[hc.idx], hc.n, now))
	}
	return states, b.hosts.omitted
}

// batchHostCounts scans batch b's papers: the hosts of its live papers, most papers first (at
// most maxHostStates), and how many hosts were left out.
func (e *engine) batchHostCounts(b *batch) ([]hostCount, int32) {
	if b.live() == 0 {
		return nil, 0
	}
	remaining := map[uint32]int64{}
	for _, r := range b.ranges {
		for idx := r.first; idx < r.first+r.n; idx++ {
			if p := &e.papers[idx]; !terminal(p.state) {
				remaining[p.host]++
			}
		}
	}
	order := make([]hostCount, 0, len(remaining))
	for idx, n := range remaining {
		order = append(order, hostCount{idx, n})
	}
	slices.SortFunc(order, func(a, b hostCount) int {
		if c := cmp.Compare(b.n, a.n); c != 0 {
			return c
		}
		return cmp.Compare(a.idx, b.idx)
	})
	var omitted int32
	if len(order) > maxHostStates {
		omitted = int32(len(order) - maxHostStates)
		order = order[:maxHostStates]
	}
	return order, omitted
}

// hostState is the wire form of a host's politeness state; remaining is the watched batch's
// live papers on it.
func (e *engine) hostState(h *host, remaining int64, now time.Time) *pb.HostState {
	s := &pb.HostState{
		Host: h.name, Remaining: remaining, Queued: int64(h.queued()), Active: int32(h.active),
		ConcurrencyLimit: int32(h.limit), MaxConcurrency: int32(h.maxLimit),
	}
	if h.delay > 0 {
		s.Delay = durationpb.New(h.delay)
	}
	if next := h.readyAt(); next.After(now) {
		s.NextStartAt = timestamppb.New(next)
	}
	if h.pausedUntil.After(now) {
		s.PausedUntil = timestamppb.New(h.pausedUntil)
		s.PauseCause = h.pauseCause
	}
	return s
}

// dropHostStates forgets a batch's cached host states (its watchers are gone).
func (b *batch) dropHostStates() { b.hosts = nil }
