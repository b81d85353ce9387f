package coordinator

import (
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Bounds of the operator views.
const (
	// maxListFetchers bounds the fetchers one ListFetchers reply lists.
	maxListFetchers = 1000
	// maxHostScan bounds the hosts one ListHosts call inspects (a busy_only listing of many
	// idle hosts returns a short page with a token instead of stalling the loop).
	maxHostScan = 1 << 18
)

// retryReq is RetryFailed.
type retryReq struct {
	id    string
	reply chan retryResult
}

type retryResult struct {
	batch   *pb.Batch
	retried int64
	err     error
}

func (r *retryReq) apply(e *engine, now time.Time) {
	var res retryResult
	b, err := e.batchByName(r.id)
	if err == nil {
		res.retried, err = e.retryFailed(b, now)
	}
	if err != nil {
		res.err = err
	} else {
		res.batch = e.batchProto(b)
	}
	e.replies = append(e.replies, func() { r.reply <- res })
}

// retryFailed re-queues every FAILED paper of b with a fresh attempt budget. It is the one
// way out of the FAILED state; a COMPLETED batch becomes RUNNING again.
func (e *engine) retryFailed(b *batch, now time.Time) (int64, error) {
	if b.state == pb.BatchState_BATCH_STATE_CANCELLED {
		return 0, precondition(preconditionBatchState, b.id, "batch %q is cancelled: its failed papers cannot be retried", b.id)
	}
	if b.counts[stateFailed] == 0 {
		return 0, nil
	}
	if b.state == pb.BatchState_BATCH_STATE_COMPLETED {
		b.state = pb.BatchState_BATCH_STATE_RUNNING
		b.finishedAt = time.Time{}
		e.markBatch(b)
	}
	var n int64
	for _, r := range b.ranges {
		for idx := r.first; idx < r.first+r.n; idx++ {
			p := &e.papers[idx]
			if p.state != stateFailed {
				continue
			}
			// Leave FAILED by hand (setState forbids leaving a terminal state) through
			// RETRY_WAIT, which enqueue turns into QUEUED on the paper's current host.
			b.failedBy[reasonIndex(p.reason)]--
			b.counts[stateFailed]--
			e.counts[stateFailed]--
			b.counts[stateRetryWait]++
			e.counts[stateRetryWait]++
			p.state = stateRetryWait
			p.failures, p.dead = 0, 0
			p.setNextAttempt(0)
			e.enqueue(idx, now)
			n++
		}
	}
	e.log.Info("failed papers retried", "batch", b.id, "papers", n)
	return n, nil
}

// hostsReq is ListHosts: it lists the hosts whose records are committed and replies at once.
type hostsReq struct {
	size     int
	token    string
	busyOnly bool
	reply    chan hostsResult
}

type hostsResult struct {
	hosts []*pb.Host
	next  string
	err   error
}

func (r *hostsReq) apply(e *engine, now time.Time) {
	var res hostsResult
	defer func() { r.reply <- res }()
	hosts := e.hosts[:e.hostsVisible]
	start := 0
	if r.token != "" {
		n, err := strconv.Atoi(r.token)
		if err != nil || n < 0 || n > len(hosts) {
			res.err = invalidField("page_token", "is not valid here; pass the next_page_token of a previous call")
			return
		}
		start = n
	}
	i := start
	for scanned := 0; i < len(hosts) && len(res.hosts) < r.size && scanned < maxHostScan; i++ {
		scanned++
		h := hosts[i]
		if h == nil {
			continue
		}
		paused := h.pausedUntil.After(now)
		if r.busyOnly && h.queued() == 0 && h.active == 0 && !paused && h.br.streak == 0 && !h.br.open {
			continue
		}
		res.hosts = append(res.hosts, hostProto(h, paused, now))
	}
	if i < len(hosts) {
		res.next = strconv.Itoa(i)
	}
}

func hostProto(h *host, paused bool, now time.Time) *pb.Host {
	out := &pb.Host{
		Name: h.name, Delay: durationpb.New(h.delay), MaxConcurrency: int32(h.maxLimit),
		AdaptiveLimit: int32(h.limit), Active: int32(h.active), Queued: int64(h.queued()),
		ConsecutiveFailures: int32(h.br.streak), Failures: h.failures, Successes: h.successes,
		LastFailureReason: pb.FailureReason(h.lastReason), Breaker: pb.BreakerState_BREAKER_STATE_CLOSED,
	}
	if paused {
		out.PausedUntil = timestamppb.New(h.pausedUntil)
		out.PauseReason = h.pauseCause
	}
	switch h.br.state(h.pausedUntil, now) {
	case breakerOpen, breakerGaveUp:
		out.Breaker = pb.BreakerState_BREAKER_STATE_OPEN
	case breakerHalfOpen:
		out.Breaker = pb.BreakerState_BREAKER_STATE_HALF_OPEN
	}
	return out
}

// fetchersReq is ListFetchers: connections, nothing durable; it replies at once.
type fetchersReq struct {
	reply chan *pb.ListFetchersResponse
}

func (r *fetchersReq) apply(e *engine, _ time.Time) {
	res := &pb.ListFetchersResponse{}
	for _, c := range e.conns {
		if c.closed {
			continue
		}
		res.Total++
		if len(res.Fetchers) >= maxListFetchers {
			continue
		}
		res.Fetchers = append(res.Fetchers, &pb.Fetcher{
			FetcherId: c.id, BootId: c.boot, Slots: int32(c.slots), InFlight: int32(len(c.leases)),
			Credits: int32(c.credits), Draining: c.draining,
			ConnectedAt: timestamppb.New(c.connected), LastHeardAt: timestamppb.New(c.lastMsg),
		})
	}
	r.reply <- res
}
