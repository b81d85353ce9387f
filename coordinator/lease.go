package coordinator

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
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
	id         string       // the lease id sent in the Assign ("" for an orphan not yet re-announced)
	conn       *fetcherConn // nil for an orphan (reloaded after a restart, not yet re-announced)
	assignedAt time.Time
	// readyAt is when the lease's start and hard deadlines start (deadline.go): the Assign,
	// or for a successor the end of its predecessor.
	readyAt   time.Time
	renewedAt time.Time // the lease's last event, Assign or adoption (deadline.go)
	lastSeq   int64
	started   bool
	// received: the fetcher reported the HTTP exchange over (a body_received progress event,
	// or body_received in its Hello): only the durable completed event is left.
	received bool
	// counted: the lease holds one of its host's concurrency slots (host.active): from the
	// Assign (from its predecessor's body_received for a successor) until its body is
	// received or it ends.
	counted bool
	// Prefetch (see prefetch.go). successor: the lease was sent with after_lease_id. pred is
	// the predecessor a successor follows, until the predecessor ends; succ the reverse link.
	successor  bool
	pred, succ *lease
	// reclaimed: a waiting successor the coordinator cancelled so that a stream with idle
	// credits gets its paper (reclaimForIdle); its ABORTED failure, even after it started,
	// is a hand-back.
	reclaimed  bool
	cancelSent bool
	url        string
	paperID    string
	resolve    *pb.ResolveStep // set for a resolution step of a DOI
	keys       [2]uint64       // cache keys held while it runs (inflight.go)
	bytes      int64
	total      int64
	bps        float64

	// A completion being verified against the blob store (see verify.go).
	verifying  bool
	completion *pb.DownloadCompleted
	ackSeq     int64
}

// name identifies the lease in logs.
func (l *lease) name() string {
	if l.id != "" {
		return l.id
	}
	return "orphan-" + strconv.FormatUint(uint64(l.idx), 36) + "-" + strconv.Itoa(int(l.attempt))
}

// leaseMACBytes is the length of a lease id's MAC (96 bits, 24 hex digits).
const leaseMACBytes = 12

// leaseIDs issues and checks lease ids: "<store id>-<paper index, base 36>-<attempt>-<mac>".
// The MAC is an HMAC-SHA256, under the store's secret lease key, of the paper index, the
// attempt and the id of the fetcher the lease is assigned to. Without the key nobody can make
// up a valid lease id, and an id only verifies for the fetcher it was issued to, which is how
// the coordinator recognises, even after a restart, the fetcher that may re-announce a lease.
//
// It keeps one HMAC and its input and output buffers, reused for every id (a new HMAC was a
// dozen allocations, three times per paper), so only the loop may use it.
type leaseIDs struct {
	storeID string
	key     []byte

	h   hash.Hash // HMAC-SHA256 under key, made on first use
	in  []byte    // the MAC's input (index, attempt, fetcher id)
	sum []byte    // the MAC's output
}

// mac returns the MAC of a lease id; the slice is valid until the next call.
func (s *leaseIDs) mac(idx uint32, attempt uint16, fetcherID string) []byte {
	if s.h == nil {
		s.h = hmac.New(sha256.New, s.key)
		s.sum = make([]byte, 0, sha256.Size)
	} else {
		s.h.Reset()
	}
	s.in = binary.BigEndian.AppendUint32(s.in[:0], idx)
	s.in = binary.BigEndian.AppendUint16(s.in, attempt)
	s.in = append(s.in, fetcherID...)
	s.h.Write(s.in)
	s.sum = s.h.Sum(s.sum[:0])
	return s.sum[:leaseMACBytes]
}

// issue returns the id of attempt of paper idx leased to fetcherID.
func (s *leaseIDs) issue(idx uint32, attempt uint16, fetcherID string) string {
	var num [20]byte
	var mac [2 * leaseMACBytes]byte
	hex.Encode(mac[:], s.mac(idx, attempt, fetcherID))
	var b strings.Builder
	b.Grow(len(s.storeID) + 16 + len(mac))
	b.WriteString(s.storeID)
	b.WriteByte('-')
	b.Write(strconv.AppendUint(num[:0], uint64(idx), 36))
	b.WriteByte('-')
	b.Write(strconv.AppendUint(num[:0], uint64(attempt), 10))
	b.WriteByte('-')
	b.Write(mac[:])
	return b.String()
}

// check parses id and verifies that it was issued to fetcherID by this store; ok is false
// otherwise.
func (s *leaseIDs) check(id, fetcherID string) (idx uint32, attempt uint16, ok bool) {
	idx, attempt, macHex, ok := s.parse(id)
	if !ok {
		return 0, 0, false
	}
	// A '-' in macHex (an id of more than four parts) is not a hex digit: Decode refuses it.
	var mac [leaseMACBytes]byte
	if len(macHex) != 2*leaseMACBytes {
		return 0, 0, false
	}
	if _, err := hex.Decode(mac[:], []byte(macHex)); err != nil {
		return 0, 0, false
	}
	if !hmac.Equal(mac[:], s.mac(idx, attempt, fetcherID)) {
		return 0, 0, false
	}
	return idx, attempt, true
}

// parse splits id into its paper index, attempt and MAC (hex), without verifying the MAC.
func (s *leaseIDs) parse(id string) (idx uint32, attempt uint16, macHex string, ok bool) {
	rest, found := strings.CutPrefix(id, s.storeID)
	if !found || len(rest) < 6 || rest[0] != '-' {
		return 0, 0, "", false
	}
	is, rest, _ := strings.Cut(rest[1:], "-")
	ns, macHex, _ := strings.Cut(rest, "-")
	i, err := strconv.ParseUint(is, 36, 32)
	if err != nil {
		return 0, 0, "", false
	}
	n, err := strconv.ParseUint(ns, 10, 16)
	if err != nil {
		return 0, 0, "", false
	}
	return uint32(i), uint16(n), macHex, true
}

// checkEvent is check of the lease id of an event on c. An id equal to the one of the live
// lease it names, held by c, was issued to (or re-announced and checked for) c's fetcher: its
// MAC is not computed again (two HMAC-SHA256 per paper, one per event, before).
func (e *engine) checkEvent(id string, c *fetcherConn) (idx uint32, attempt uint16, ok bool) {
	if idx, attempt, _, ok := e.ids.parse(id); ok {
		if l := e.leases[idx]; l != nil && l.conn == c && l.attempt == attempt && l.id == id {
			return idx, attempt, true
		}
	}
	return e.ids.check(id, c.id)
}

// waiting reports whether l is a successor that has not started: it is not a running
// download (prefetch.go).
func (l *lease) waiting() bool { return l.successor && !l.started }

// endLease forgets a lease and frees its host slot (unless its HTTP exchange ended before).
// Its successor, if any, is released (prefetch.go).
func (e *engine) endLease(l *lease, now time.Time) {
	delete(e.leases, l.idx)
	delete(e.orphans, l.idx)
	if l.conn != nil {
		delete(l.conn.leases, l.idx)
	}
	e.dropKeys(l)
	e.unlinkPred(l)
	h := e.hosts[e.papers[l.idx].host]
	if l.counted {
		l.counted = false
		h.active--
	}
	if l.reclaimed {
		l.reclaimed = false
		e.reclaiming--
		h.reclaiming--
	}
	if s := l.succ; s != nil {
		e.predecessorEnded(l, s, now)
	}
	e.refreshHost(h, now)
}

// exchangeEnded records that the HTTP exchange of l is over (its body is received; the
// fetcher is making it durable): the host's concurrency slot is free for the next request
// (or passes to l's successor), while the paper stays DOWNLOADING until the completed event.
func (e *engine) exchangeEnded(l *lease, now time.Time) {
	if l.received {
		return
	}
	l.received = true
	l.started = true
	if l.pred != nil { // a successor whose fetcher skipped ahead: it runs on its own
		e.unlinkPred(l)
		l.readyAt = now
		e.noteLeaseDue(l)
	}
	h := e.hosts[e.papers[l.idx].host]
	if l.counted {
		l.counted = false
		h.active--
	}
	if s := l.succ; s != nil {
		e.passSlot(l, s, h, now)
	}
	e.refreshHost(h, now)
}

// maxLeasesPerPaper bounds the leases of a paper (its attempt counter is 16-bit and lease ids
// are never reused): successors handed back before they started count no failure and escape
// the lost-lease cap, but a paper whose successors are handed back again and again (a broken
// fetcher) fails once it had this many leases.
const maxLeasesPerPaper = 1 << 15

// leasesExhausted fails the paper of l, whose lease was lost, when it may not be leased again:
// after 4×MaxAttempts leases, or maxLeasesPerPaper for a lease that never started
// (unstarted). It reports whether it did.
func (e *engine) leasesExhausted(l *lease, unstarted bool, why string, now time.Time) bool {
	p := &e.papers[l.idx]
	limit := 4 * e.cfg.MaxAttempts
	if unstarted {
		limit = maxLeasesPerPaper
	}
	if int(p.attempts) < limit || e.batches[l.batch].state == pb.BatchState_BATCH_STATE_CANCELLED {
		return false
	}
	p.reason = uint8(pb.FailureReason_FAILURE_REASON_ATTEMPTS_EXHAUSTED)
	e.setError(l.idx, fmt.Sprintf("gave up after %d attempts; the last lease was lost: %s", p.attempts, why))
	e.setState(l.idx, stateFailed, now)
	return true
}

// requeue puts a DOWNLOADING paper whose lease was lost back in its host queue. A lost lease
// is usually not the paper's fault and does not count against MaxAttempts; but a paper that
// loses lease after lease (one that crashes its fetchers, say) fails after 4×MaxAttempts
// attempts in all.
func (e *engine) requeue(l *lease, why string, now time.Time) {
	e.endLease(l, now)
	// A successor that never started cannot be what breaks its fetchers: no cap but the
	// attempt counter's.
	unstarted := l.waiting()
	if unstarted {
		e.m.successors.WithLabelValues("handed_back").Inc()
	}
	if e.leasesExhausted(l, unstarted, why, now) {
		return
	}
	if e.debug() {
		e.log.Debug("lease re-queued", "batch", e.batches[l.batch].id, "paper", l.paperID,
			"lease", l.name(), "reason", why)
	}
	e.enqueue(l.idx, now)
}

func (e *engine) sendCancel(c *fetcherConn, l *lease, reason string) {
	if c == nil || c.closed {
		return
	}
	l.cancelSent = true
	e.out = append(e.out, outMsg{c: c, m: &pb.WorkResponse{Msg: &pb.WorkResponse_Cancel{Cancel: &pb.Cancel{
		LeaseId: l.id, Reason: reason,
	}}}})
}

func (e *engine) ack(c *fetcherConn, leaseID string, seq int64) {
	if c == nil {
		return
	}
	m := &ackMsg{ack: pb.Ack{LeaseId: leaseID, Sequence: seq}}
	m.kind.Ack = &m.ack
	m.resp.Msg = &m.kind
	e.out = append(e.out, outMsg{c: c, m: &m.resp})
}

// ackMsg is an Ack message in one allocation instead of three.
type ackMsg struct {
	resp pb.WorkResponse
	kind pb.WorkResponse_Ack
	ack  pb.Ack
}

func mapValues(m map[uint32]*lease) []*lease {
	out := make([]*lease, 0, len(m))
	for _, l := range m {
		out = append(out, l)
	}
	return out
}
