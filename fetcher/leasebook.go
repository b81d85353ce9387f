package fetcher

import (
	"sort"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// maxOutbox bounds the queue of non-terminal events; when it is full (the coordinator is slow
// or unreachable) further progress events are dropped. Started events, keep-alives and
// body_received events are not subject to it: there is at most one of each per lease at a
// time (and a lost started event would make the coordinator reclaim a running download).
const maxOutbox = 8192

// leaseBook is the fetcher's bookkeeping of the leases it holds (from Assign until Ack or
// Cancel) and of the credit it owes the coordinator. It does no I/O and reads no clock (the
// caller passes the time), so its accounting is tested without a stream; it is not safe for
// concurrent use (the Fetcher calls it with f.mu held).
//
// A lease goes through three phases:
//
//   - waiting (a prefetched successor only): it waits, holding no slot, for its predecessor
//     to free its slot with its body received, and then takes that slot (no credit owed);
//   - downloading: it holds one of the fetcher's slots (slot);
//   - received: the body is in, hashed and validated (a body_received progress event is
//     queued, which frees the host's concurrency slot on the coordinator); the slot is freed
//     (its credit owed) once a place in the bounded queue of pending commits is taken;
//   - finished: the terminal event is kept, and re-sent on every new stream, until its Ack.
//
// Credits: a freed slot owes one credit, paid with the next Credits message, except that it
// first pays off the debt of a reconnect (see hello) or of a successor that started at once
// (see add), that nothing is owed while draining, and that a slot passed on to a successor
// owes nothing.
//
// A successor is void (finished ABORTED before it started, handing it back to the
// coordinator) when its predecessor ends without its body received, when the fetcher drains,
// or when the coordinator cancels it; it is dropped without a word when the stream breaks (the
// coordinator re-queues it).
//
// Prefetch: a successor waits (no slot) for its predecessor to free its slot with its body
// received, and then takes that slot: no credit is returned for it.
//
// Folding (step 8 of the Work protocol), once the coordinator's Welcome accepted it on the
// current stream (fold): a started event is held back (at most one per running lease, in
// held) for up to hold, and the next event of its lease queued meanwhile carries it instead
// (folded_start); a started event held that long is sent on its own. The owed credit rides on
// the last event taken with it (WorkRequest.folded_credits) instead of a Credits message.
type leaseBook struct {
	leases map[string]*lease
	outbox []*pb.WorkRequest // non-terminal events not yet sent
	// unsent: the finished leases whose terminal event is not yet sent on the current stream,
	// in the order they finished (take sends them without scanning every lease held); at most
	// one entry per lease held.
	unsent []*lease
	owed   int // freed slots whose credit is not yet sent
	debt   int // credits to withhold after a reconnect (see hello)
	// fold: the coordinator accepted folded messages on the current stream (its Welcome);
	// hold: how long a started event may wait for a later one (0 to validate.MaxStartHold); held: the
	// leases whose started event waits (lease.held; an entry whose event was folded meanwhile
	// stays until the next take), in the order they were held.
	fold bool
	hold time.Duration
	held []*lease
	// batch: the coordinator accepted batched events on the current stream (its Welcome; step 9
	// of the Work protocol): the Fetcher's flush sends a run of events as one message.
	batch bool
	// waiting counts the waiting successors in the prefetch window: those whose predecessor's
	// body is not in yet (inWindow). At most prefetch (Config.Prefetch) are, a successor beyond
	// them is void. A successor whose predecessor's body is in, but whose slot waits for a
	// place in the commit queue, has left the window, as on the coordinator (which counts it
	// against its host from the predecessor's body_received): at most one per slot whose body
	// is in (the slots in use exceed Config.Slots by the debt of a reconnect at most).
	waiting, prefetch int
}

// inWindow reports whether l is a waiting successor counted in the prefetch window (its
// predecessor's body is not in yet).
func inWindow(l *lease) bool {
	return l.waiting && (l.pred == nil || !l.pred.received)
}

// newLeaseBook returns an empty book holding at most prefetch waiting successors.
func newLeaseBook(prefetch int) *leaseBook {
	return &leaseBook{leases: map[string]*lease{}, prefetch: prefetch}
}

// add registers the lease of Assign a; it returns nil for a duplicate. A lease starts at
// once (start) holding a slot, except a successor (Assign.after_lease_id), which waits while
// its predecessor holds (or waits for) a slot, starts at once when its predecessor's body was
// received and its slot freed already (taking an owed credit, or else withholding the next
// one: debt), and is void otherwise (its predecessor failed, is unknown or has a successor
// already) or when draining.
func (b *leaseBook) add(a *pb.Assign, now time.Time, draining bool) (l *lease, start bool) {
	id := a.GetLeaseId()
	if _, dup := b.leases[id]; dup {
		return nil, false
	}
	l = &lease{a: a, running: true, lastEvent: now}
	b.leases[id] = l
	after := a.GetAfterLeaseId()
	if after == "" {
		l.slot = true
		return l, true
	}
	p := b.leases[after]
	switch {
	case draining:
		b.void(l, now, "fetcher draining")
	case p != nil && p.succ != nil:
		// A coordinator names a lease once (it keeps the link until the successor ends or it
		// cancels it); a second successor would otherwise start at once below (p's body in)
		// in a slot beyond Config.Slots, and wait for it beyond the documented bound.
		b.void(l, now, "its predecessor has a successor already")
	case p != nil && p.running && (p.slot || p.waiting) && p.succ == nil && !p.received && b.waiting >= b.prefetch:
		b.void(l, now, "the prefetch window is full")
	case p != nil && p.running && (p.slot || p.waiting) && p.succ == nil:
		l.waiting, l.pred, p.succ = true, p, l
		if inWindow(l) {
			b.waiting++
		}
	case p != nil && p.received:
		l.slot = true
		if b.owed > 0 {
			b.owed--
		} else {
			b.debt++
		}
		return l, true
	default:
		b.void(l, now, "its predecessor ended without its body received")
	}
	return l, false
}

// void finishes a successor that never started (and its own successor) with an ABORTED
// failure: the coordinator re-queues it without counting a failure.
func (b *leaseBook) void(l *lease, now time.Time, why string) {
	if !l.running || l.slot {
		return
	}
	b.unlinkPred(l)
	ev := b.newEvent(l, now)
	ev.Kind = &pb.DownloadEvent_Failed{Failed: &pb.DownloadFailed{
		Class: pb.FailureClass_FAILURE_CLASS_TRANSIENT, Reason: pb.FailureReason_FAILURE_REASON_ABORTED,
		Message: "prefetched lease handed back: " + why, Url: l.a.GetUrl(),
	}}
	l.terminal = ev
	b.unsent = append(b.unsent, l)
	if s := l.succ; s != nil {
		b.void(s, now, why)
	}
}

// unlinkPred ends the wait of successor l: it no longer follows its predecessor and never
// runs.
func (b *leaseBook) unlinkPred(l *lease) {
	if inWindow(l) {
		b.waiting--
	}
	if p := l.pred; p != nil {
		p.succ, l.pred = nil, nil
	}
	l.waiting, l.running = false, false
	if l.cancel != nil {
		l.cancel(nil)
	}
}

// handBackWaiting voids every waiting successor (a draining fetcher hands them back at once).
func (b *leaseBook) handBackWaiting(now time.Time) int {
	n := 0
	for _, l := range b.leases {
		if l.waiting {
			b.void(l, now, "fetcher draining")
			n++
		}
	}
	return n
}

// len is the number of leases held.
func (b *leaseBook) len() int { return len(b.leases) }

// newEvent returns the next event of l.
func (b *leaseBook) newEvent(l *lease, now time.Time) *pb.DownloadEvent {
	ev := new(pb.DownloadEvent)
	b.stamp(l, ev, now)
	return ev
}

// stamp makes ev (its kind set, or to be set) the next event of l, at now. A Work stream event
// names its lease only (lease id, attempt, sequence): the batch and paper ids and the time,
// which the coordinator never read, are left out (DownloadEvent in paper.proto), a third of
// what a small paper's two events weighed and six of their decoded fields.
func (b *leaseBook) stamp(l *lease, ev *pb.DownloadEvent, now time.Time) {
	l.seq++
	l.lastEvent = now
	ev.LeaseId, ev.Attempt, ev.Sequence = l.a.GetLeaseId(), l.a.GetAttempt(), l.seq
}

// eventRequest is a WorkRequest carrying an event, in one allocation (eventMsg).
type eventRequest struct {
	req pb.WorkRequest
	msg pb.WorkRequest_Event
}

// eventMsg returns a WorkRequest carrying ev.
func eventMsg(ev *pb.DownloadEvent) *pb.WorkRequest {
	r := &eventRequest{msg: pb.WorkRequest_Event{Event: ev}}
	r.req.Msg = &r.msg
	return &r.req
}

// progressKind is a progress event's kind and body in one allocation (progressOf).
type progressKind struct {
	kind pb.DownloadEvent_Progress
	p    pb.DownloadProgress
}

// progressOf returns the kind of a progress event: p's fields with BodyReceived as given.
func progressOf(bytes, total int64, bps float64, bodyReceived bool) *pb.DownloadEvent_Progress {
	k := &progressKind{p: pb.DownloadProgress{Bytes: bytes, Total: total, BytesPerSecond: bps, BodyReceived: bodyReceived}}
	k.kind.Progress = &k.p
	return &k.kind
}

// welcome applies the coordinator's Welcome of the current stream: whether it accepts folded
// messages, and how long a started event may be held (bounded by validate.MaxStartHold).
func (b *leaseBook) welcome(w *pb.Welcome) {
	b.fold = w.GetFoldEvents()
	b.batch = w.GetBatchEvents()
	b.hold = 0
	if d := w.GetStartHold(); b.fold && d.IsValid() && d.AsDuration() > 0 {
		b.hold = min(d.AsDuration(), validate.MaxStartHold)
	}
}

// queue queues ev, a non-terminal event of l. A started event of l held back is folded into
// it; a started event is held back when folding is on.
func (b *leaseBook) queue(l *lease, ev *pb.DownloadEvent) {
	switch {
	case l.held != nil:
		ev.FoldedStart = true
		l.held = nil
	case b.fold && ev.GetStarted() != nil:
		l.held, l.heldAt = ev, l.lastEvent
		b.held = append(b.held, l)
		return
	}
	b.outbox = append(b.outbox, eventMsg(ev))
}

// emit queues a non-terminal event of a lease still running (set fills in its kind); it
// reports whether it did (not a progress event when the outbox is full: see maxOutbox).
func (b *leaseBook) emit(l *lease, now time.Time, set func(*pb.DownloadEvent)) bool {
	if !l.running {
		return false
	}
	ev := new(pb.DownloadEvent)
	set(ev)
	if len(b.outbox) >= maxOutbox && ev.GetStarted() == nil {
		return false
	}
	b.stamp(l, ev, now)
	b.queue(l, ev)
	return true
}

// received records that the body of l (size bytes) is in: it queues the body_received
// progress event. The slot stays taken until freeSlot.
func (b *leaseBook) received(l *lease, size int64, now time.Time) {
	if !l.running || l.received {
		return
	}
	if s := l.succ; s != nil && inWindow(s) {
		b.waiting-- // it leaves the window (see waiting)
	}
	l.received = true
	l.bytes, l.total = size, size
	ev := b.newEvent(l, now)
	ev.Kind = progressOf(size, size, 0, true)
	b.queue(l, ev)
}

// freeSlot frees the slot l holds (once): it passes to l's successor when l's body was
// received (next, for the caller to start), else its credit is owed, or pays off debt. A
// successor that cannot take it is void.
func (b *leaseBook) freeSlot(l *lease, now time.Time, draining bool) (next *lease) {
	if !l.slot {
		return nil
	}
	l.slot = false
	if s := l.succ; s != nil {
		if l.received && !draining {
			// s left the window when l's body came in (received).
			l.succ, s.pred = nil, nil
			s.waiting, s.slot = false, true
			return s
		}
		b.void(s, now, "its predecessor ended without its body received")
	}
	switch {
	case b.debt > 0:
		b.debt--
	case !draining:
		b.owed++
	}
	return nil
}

// finish records the terminal event of l (set fills in its kind) and frees its slot if it
// still held one; next is a successor that took the slot, for the caller to start. A started
// event of l held back is folded into the terminal event.
func (b *leaseBook) finish(l *lease, now time.Time, draining bool, set func(*pb.DownloadEvent)) (next *lease) {
	l.running = false
	ev := b.newEvent(l, now)
	set(ev)
	if l.held != nil {
		ev.FoldedStart = true
		l.held = nil
	}
	l.terminal = ev
	b.unsent = append(b.unsent, l)
	return b.freeSlot(l, now, draining)
}

// hello starts the bookkeeping of a new stream and returns its Hello's initial credit and
// in-flight leases. Hello.slots is the coordinator's initial credit. Downloads still running
// from before a reconnect occupy slots, so the fetcher announces slots minus the slots in
// use (at least 1) and withholds the credits of any excess (debt) as those slots free up.
// Leases holding no slot (received bodies being committed, results not yet acknowledged) are
// covered by the Hello, and so are the credits owed but not sent on the old stream.
//
// Waiting successors are dropped: the coordinator re-queued them when the old stream ended.
func (b *leaseBook) hello(slots int) (initial int, inFlight []*pb.InFlightLease) {
	b.outbox = nil
	for _, l := range b.held {
		l.held = nil // the lease is re-announced: running, as far as the coordinator is concerned
	}
	b.held = nil
	b.fold, b.hold, b.batch = false, 0, false // until the new stream's Welcome
	b.owed = 0
	clear(b.unsent)
	b.unsent = b.unsent[:0]
	busy := 0
	for id, l := range b.leases {
		if l.waiting {
			b.unlinkPred(l)
			delete(b.leases, id)
			continue
		}
		if l.slot {
			busy++
		}
		if l.terminal != nil { // every result not yet acknowledged goes again on the new stream
			b.unsent = append(b.unsent, l)
		}
	}
	initial = max(1, slots-busy)
	b.debt = initial + busy - slots
	return initial, b.inFlight()
}

// inFlight lists the leases to announce in a Hello, sorted by id.
func (b *leaseBook) inFlight() []*pb.InFlightLease {
	out := make([]*pb.InFlightLease, 0, len(b.leases))
	for _, l := range b.leases {
		out = append(out, &pb.InFlightLease{
			LeaseId: l.a.GetLeaseId(), Attempt: l.a.GetAttempt(), BatchId: l.a.GetBatchId(), PaperId: l.a.GetPaperId(),
			BodyReceived: l.received,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LeaseId < out[j].LeaseId })
	return out
}

// take returns what to send on stream sid at now: in head the queued events, then the
// started events held back for hold already (all of them while draining); in tail the
// terminal events not yet sent on it, and a Credits message for the owed credit (dropped
// while draining), or that credit folded into the last event when the coordinator accepts
// folding. due is when the next started event held back is due (zero: none). Leases
// cancelled by the coordinator are forgotten once their terminal event is taken.
func (b *leaseBook) take(sid uint64, draining bool, now time.Time) (head, tail []*pb.WorkRequest, due time.Time) {
	head = b.outbox
	b.outbox = nil
	// A started event goes after the events queued before it: a successor's after its
	// predecessor's body_received.
	keep := b.held[:0]
	for _, l := range b.held {
		switch {
		case l.held == nil: // folded meanwhile
		case draining || now.Sub(l.heldAt) >= b.hold:
			head = append(head, eventMsg(l.held))
			l.held = nil
		default:
			keep = append(keep, l)
		}
	}
	clear(b.held[len(keep):])
	b.held = keep
	if len(keep) > 0 {
		due = keep[0].heldAt.Add(b.hold)
	}
	for _, l := range b.unsent {
		id := l.a.GetLeaseId()
		if b.leases[id] != l || l.terminal == nil || l.sentIn == sid {
			continue // forgotten (an Ack, a Cancel) since it finished
		}
		l.sentIn = sid
		tail = append(tail, eventMsg(l.terminal))
		if l.forget {
			delete(b.leases, id)
		}
	}
	clear(b.unsent)
	b.unsent = b.unsent[:0]
	if draining {
		b.owed = 0
	}
	if b.owed > 0 {
		// Every message taken is an event sent once (a terminal event gets a new message on
		// every take): the credit is applied after all of them, as a Credits message would be.
		switch {
		case b.fold && len(tail) > 0:
			tail[len(tail)-1].FoldedCredits = int32(b.owed)
		case b.fold && len(head) > 0:
			head[len(head)-1].FoldedCredits = int32(b.owed)
		default:
			tail = append(tail, &pb.WorkRequest{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: int32(b.owed)}}})
		}
		b.owed = 0
	}
	return head, tail, due
}

// ack forgets a lease whose terminal event (of sequence seq or earlier) is acknowledged; it
// reports whether it did.
func (b *leaseBook) ack(id string, seq int64) bool {
	l := b.leases[id]
	if l == nil || l.terminal == nil || seq < l.terminal.GetSequence() {
		return false
	}
	delete(b.leases, id)
	return true
}

// cancel applies the coordinator's Cancel of lease id: a running lease is marked to be
// forgotten once its terminal event is sent, and returned so that the caller aborts it (a
// waiting successor is void at once); a finished one is forgotten at once (removed reports
// that).
func (b *leaseBook) cancel(id string, now time.Time) (running *lease, removed bool) {
	l := b.leases[id]
	switch {
	case l == nil:
		return nil, false
	case l.waiting:
		l.forget = true
		b.void(l, now, "cancelled by the coordinator")
		return l, false
	case l.running:
		l.forget = true
		return l, false
	default:
		delete(b.leases, id)
		return nil, true
	}
}

// keepAlive queues a progress event (the last known counts) for every running lease (a
// download or a pending commit) that has been quiet since before quiet, so that the
// coordinator keeps renewing it. It returns how many it queued.
func (b *leaseBook) keepAlive(quiet, now time.Time) int {
	n := 0
	for _, l := range b.leases {
		if !l.running || l.waiting || l.lastEvent.After(quiet) {
			continue
		}
		ev := b.newEvent(l, now)
		ev.Kind = &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: l.bytes, Total: l.total}}
		b.queue(l, ev)
		n++
	}
	return n
}

// running returns the leases still running (downloading or committing).
func (b *leaseBook) running() []*lease {
	var out []*lease
	for _, l := range b.leases {
		if l.running {
			out = append(out, l)
		}
	}
	return out
}

// settled reports whether nothing runs and every terminal event was sent on stream sid.
func (b *leaseBook) settled(sid uint64, connected bool) bool {
	for _, l := range b.leases {
		if l.running || (l.terminal != nil && (!connected || l.sentIn != sid)) {
			return false
		}
	}
	return true
}
