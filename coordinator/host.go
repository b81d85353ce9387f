package coordinator

import (
	"container/heap"
	"time"
)

// host is the politeness state of one origin host (host[:port] of a URL). Only the loop
// touches it.
type host struct {
	idx  uint32
	name string

	queue []uint32 // QUEUED papers (FIFO; entries may be stale and are skipped)
	head  int

	active      int           // running leases on this host
	reclaiming  int           // its leases cancelled by reclaimForIdle, not yet ended (prefetch.go)
	limit       int           // current concurrency limit (AIMD), 1..maxLimit
	maxLimit    int           // configured concurrency
	delay       time.Duration // minimum time between request starts
	lastStart   time.Time
	pausedUntil time.Time
	br          breaker
	okStreak    int   // successes since the last limit change (AIMD)
	failures    int64 // failed attempts since the start (for ListHosts)
	successes   int64 // successful downloads since the start (for ListHosts)
	lastReason  uint8 // the last failure's pb.FailureReason

	inReady bool
	inSleep bool
	wakeAt  time.Time
	sleepIx int

	pauseCause string // why pausedUntil was set: "retry_after", "circuit_breaker"...
}

func (h *host) push(idx uint32) { h.queue = append(h.queue, idx) }

func (h *host) queued() int { return len(h.queue) - h.head }

// pop removes the oldest entry that is still a QUEUED paper of this host.
func (h *host) pop(papers []memPaper) (uint32, bool) {
	for h.head < len(h.queue) {
		idx := h.queue[h.head]
		h.head++
		p := &papers[idx]
		if p.state == stateQueued && p.host == h.idx {
			h.compact()
			return idx, true
		}
	}
	h.compact()
	return 0, false
}

func (h *host) compact() {
	if h.head == len(h.queue) {
		h.queue = h.queue[:0]
		h.head = 0
		return
	}
	if h.head > 1024 && h.head*2 > len(h.queue) {
		n := copy(h.queue, h.queue[h.head:])
		h.queue = h.queue[:n]
		h.head = 0
	}
}

// Breaker states, as shown in logs and to operators.
const (
	breakerClosed   = "closed"    // downloads run normally
	breakerOpen     = "open"      // paused after failures of many different papers
	breakerHalfOpen = "half_open" // the pause is over: one probe at a time until a success
	breakerGaveUp   = "gave_up"   // open for longer than BreakerGiveUp: queued papers fail at once
)

// breaker is a host's circuit breaker (policy in docs/operations.md, "Host circuit breaker").
// Closed, it counts consecutive transient failures of the host (connection, timeout, 5xx,
// 429) that are the FIRST failure of their paper: retries of the same few papers never trip
// it, failures of many different papers in a row do. Any success (or any answer that is not
// a host failure, like a 404) resets the count and closes it. Tripped, the host pauses for
// BreakerCooldown; the pause doubles per trip only for a host that does not answer at all
// (connect refused, timeouts, DNS), up to BreakerMaxCooldown, and stays BreakerCooldown for
// one answering HTTP errors. After the pause the host is half-open: one download at a time,
// whose failure trips it again. Open for longer than BreakerGiveUp without a success, it
// gives up: the host's queued papers fail at once (HOST_PAUSED, moving on to their next URL)
// while a probe per cooldown keeps watching for its return.
type breaker struct {
	streak      int       // closed: consecutive first failures of distinct papers
	open        bool      // tripped, and no success since
	trips       int       // trips since the last success
	unreachable bool      // the last trip was for failures without an HTTP answer
	openSince   time.Time // the first trip since the last success
	giveUpAt    time.Time // openSince + BreakerGiveUp
	lastError   string    // the failure that last tripped it
}

// state names the breaker's state at now.
func (b *breaker) state(pausedUntil, now time.Time) string {
	switch {
	case !b.open:
		return breakerClosed
	case !b.giveUpAt.After(now):
		return breakerGaveUp
	case pausedUntil.After(now):
		return breakerOpen
	default:
		return breakerHalfOpen
	}
}

// success closes the breaker.
func (b *breaker) success() { *b = breaker{} }

// gaveUp reports whether the breaker is open and has given up on the host at now.
func (b *breaker) gaveUp(now time.Time) bool { return b.open && !b.giveUpAt.After(now) }

// readyAt is when the host may start its next request, ignoring concurrency. A host whose
// breaker gave up is ready at once: its queued papers fail without a request.
func (h *host) readyAt() time.Time {
	t := h.pausedUntil
	if h.br.open && h.br.giveUpAt.Before(t) {
		t = h.br.giveUpAt
	}
	if h.delay > 0 && !h.lastStart.IsZero() {
		if s := h.lastStart.Add(h.delay); s.After(t) {
			t = s
		}
	}
	return t
}

// hostRing is a FIFO of hosts that may start a request now.
type hostRing struct {
	items []*host
	head  int
}

func (r *hostRing) push(h *host) { r.items = append(r.items, h) }

func (r *hostRing) pop() *host {
	if r.head == len(r.items) {
		return nil
	}
	h := r.items[r.head]
	r.items[r.head] = nil
	r.head++
	if r.head == len(r.items) {
		r.items = r.items[:0]
		r.head = 0
	} else if r.head > 1024 && r.head*2 > len(r.items) {
		n := copy(r.items, r.items[r.head:])
		r.items = r.items[:n]
		r.head = 0
	}
	return h
}

// hostHeap orders sleeping hosts by wake time.
type hostHeap []*host

func (q hostHeap) Len() int           { return len(q) }
func (q hostHeap) Less(i, j int) bool { return q[i].wakeAt.Before(q[j].wakeAt) }
func (q hostHeap) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].sleepIx, q[j].sleepIx = i, j
}
func (q *hostHeap) Push(x any) {
	h := x.(*host)
	h.sleepIx = len(*q)
	*q = append(*q, h)
}
func (q *hostHeap) Pop() any {
	old := *q
	h := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return h
}

// retryItem is a paper waiting in RETRY_WAIT until at (unix nanoseconds).
type retryItem struct {
	at  int64
	idx uint32
}

// retryHeap orders RETRY_WAIT papers by their next attempt time.
type retryHeap []retryItem

func (q retryHeap) Len() int           { return len(q) }
func (q retryHeap) Less(i, j int) bool { return q[i].at < q[j].at }
func (q retryHeap) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *retryHeap) Push(x any)        { *q = append(*q, x.(retryItem)) }
func (q *retryHeap) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

var (
	_ heap.Interface = (*hostHeap)(nil)
	_ heap.Interface = (*retryHeap)(nil)
)
