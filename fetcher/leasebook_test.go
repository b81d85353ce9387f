package fetcher

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"pgregory.net/rapid"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

var bookT0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func bookAssign(id string) *pb.Assign {
	return &pb.Assign{LeaseId: id, Attempt: 1, BatchId: "b", PaperId: "p-" + id}
}

// bookAdd adds the lease of a, which starts at once.
func bookAdd(b *leaseBook, a *pb.Assign) *lease {
	l, _ := b.add(a, bookT0, false)
	return l
}

func completedKind(ev *pb.DownloadEvent) {
	ev.Kind = &pb.DownloadEvent_Completed{Completed: &pb.DownloadCompleted{Size: 1}}
}

func failedKind(ev *pb.DownloadEvent) {
	ev.Kind = &pb.DownloadEvent_Failed{Failed: &pb.DownloadFailed{Reason: pb.FailureReason_FAILURE_REASON_NOT_FOUND}}
}

// sentCredits sums the credits of msgs: Credits messages and credits folded into events.
func sentCredits(msgs []*pb.WorkRequest) int {
	n := 0
	for _, m := range msgs {
		n += int(m.GetCredits().GetCredits()) + int(m.GetFoldedCredits())
	}
	return n
}

// takeAll takes what a flush at bookT0 sends on stream sid, in order (without Draining).
func takeAll(b *leaseBook, sid uint64, draining bool) []*pb.WorkRequest {
	return takeAt(b, sid, draining, bookT0)
}

// takeAt is takeAll at now.
func takeAt(b *leaseBook, sid uint64, draining bool, now time.Time) []*pb.WorkRequest {
	head, tail, _ := b.take(sid, draining, now)
	return append(head, tail...)
}

// foldWelcome is a coordinator's Welcome accepting folded messages, with started events held
// up to hold.
func foldWelcome(hold time.Duration) *pb.Welcome {
	return &pb.Welcome{FoldEvents: true, StartHold: durationpb.New(hold)}
}

func startedKind(ev *pb.DownloadEvent) {
	ev.Kind = &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{Url: "https://x/p.pdf"}}
}

// kinds describes msgs for failure messages: one word per message.
func kinds(msgs []*pb.WorkRequest) string {
	var out []string
	for _, m := range msgs {
		ev := m.GetEvent()
		k := "credits"
		switch {
		case ev.GetStarted() != nil:
			k = "started"
		case ev.GetProgress().GetBodyReceived():
			k = "received"
		case ev.GetProgress() != nil:
			k = "progress"
		case ev.GetCompleted() != nil:
			k = "completed"
		case ev.GetFailed() != nil:
			k = "failed"
		}
		if ev.GetFoldedStart() {
			k += "+start"
		}
		if n := m.GetFoldedCredits(); n > 0 {
			k += fmt.Sprintf("+%dcredits", n)
		}
		if ev != nil {
			k = ev.GetLeaseId() + ":" + k
		}
		out = append(out, k)
	}
	return strings.Join(out, " ")
}

// After the coordinator's Welcome, a small download costs three messages instead of five:
// its started event waits and rides on its body_received event, together with the slot's
// credit; the completed event follows. Without the Welcome (an older coordinator) nothing is
// folded.
func TestLeaseBookFoldsStartAndCredit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		welcome *pb.Welcome
		want    string
	}{
		{"older coordinator", nil, "L1:started L1:received credits L1:completed"},
		{"welcome without folding", &pb.Welcome{}, "L1:started L1:received credits L1:completed"},
		{"welcome", foldWelcome(time.Second), "L1:received+start+1credits L1:completed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newLeaseBook(DefaultPrefetch)
			b.hello(2)
			if tc.welcome != nil {
				b.welcome(tc.welcome)
			}
			l := bookAdd(b, bookAssign("L1"))
			if !b.emit(l, bookT0, startedKind) {
				t.Fatal("started event not queued")
			}
			msgs := takeAll(b, 1, false) // a flush between the start and the body
			b.received(l, 100, bookT0)
			b.freeSlot(l, bookT0, false)
			msgs = append(msgs, takeAll(b, 1, false)...)
			b.finish(l, bookT0, false, completedKind)
			msgs = append(msgs, takeAll(b, 1, false)...)
			if got := kinds(msgs); got != tc.want {
				t.Fatalf("sent %s, want %s", got, tc.want)
			}
			// Sequence numbers still increase (the folded start's is skipped).
			for i := 1; i < len(msgs); i++ {
				if msgs[i].GetEvent() != nil && msgs[i-1].GetEvent() != nil && msgs[i].GetEvent().GetSequence() <= msgs[i-1].GetEvent().GetSequence() {
					t.Fatalf("sequence %d after %d", msgs[i].GetEvent().GetSequence(), msgs[i-1].GetEvent().GetSequence())
				}
			}
		})
	}
}

// A started event held back goes on its own once it has waited start_hold, or at once when
// the fetcher drains (so that the coordinator does not re-queue a running download); a hold
// of 0 folds only what is queued before the next flush. A held start also folds into a
// failure, and a reconnect drops it (the Hello re-announces the lease).
func TestLeaseBookStartHold(t *testing.T) {
	b := newLeaseBook(DefaultPrefetch)
	b.hello(4)
	b.welcome(foldWelcome(time.Hour)) // held at most validate.MaxStartHold
	l1, l2 := bookAdd(b, bookAssign("L1")), bookAdd(b, bookAssign("L2"))
	b.emit(l1, bookT0, startedKind)
	head, tail, due := b.take(1, false, bookT0)
	if len(head)+len(tail) != 0 || !due.Equal(bookT0.Add(validate.MaxStartHold)) {
		t.Fatalf("a started event was not held: %s, due %v", kinds(append(head, tail...)), due)
	}
	b.emit(l2, bookT0.Add(validate.MaxStartHold/2), startedKind)
	if got := kinds(takeAt(b, 1, false, bookT0.Add(validate.MaxStartHold-1))); got != "" {
		t.Fatalf("sent %s before the hold was over", got)
	}
	if got := kinds(takeAt(b, 1, false, bookT0.Add(validate.MaxStartHold))); got != "L1:started" {
		t.Fatalf("at the end of L1's hold: %s", got)
	}
	if got := kinds(takeAt(b, 1, true, bookT0.Add(validate.MaxStartHold))); got != "L2:started" {
		t.Fatalf("draining: %s, want L2's held start at once", got)
	}

	b.welcome(foldWelcome(0))
	l3 := bookAdd(b, bookAssign("L3"))
	b.emit(l3, bookT0, startedKind)
	b.finish(l3, bookT0, false, failedKind)
	if got := kinds(takeAll(b, 1, false)); got != "L3:failed+start+1credits" {
		t.Fatalf("a failure before the flush: %s", got)
	}
	b.ack("L3", l3.terminal.GetSequence())
	l4 := bookAdd(b, bookAssign("L4"))
	b.emit(l4, bookT0, startedKind)
	if got := kinds(takeAll(b, 1, false)); got != "L4:started" {
		t.Fatalf("hold 0: %s", got)
	}
	l5 := bookAdd(b, bookAssign("L5"))
	b.emit(l5, bookT0, startedKind)
	b.hello(4)
	if l5.held != nil || len(b.held) != 0 || b.fold {
		t.Fatal("a reconnect kept a held start, or folding")
	}
	b.received(l5, 1, bookT0)
	if got := kinds(takeAll(b, 2, false)); got != "L5:received" {
		t.Fatalf("after a reconnect: %s", got)
	}
}

// The credit of a slot freed after its body_received went out (the commit queue was full)
// rides on the next event taken, a terminal one included, and is sent once: the terminal
// event is re-sent on a new stream without it.
func TestLeaseBookFoldedCreditSentOnce(t *testing.T) {
	b := newLeaseBook(DefaultPrefetch)
	b.hello(2)
	b.welcome(foldWelcome(0))
	l1, l2 := bookAdd(b, bookAssign("L1")), bookAdd(b, bookAssign("L2"))
	b.received(l1, 1, bookT0)
	if got := kinds(takeAll(b, 1, false)); got != "L1:received" {
		t.Fatalf("body received, slot still held: %s", got)
	}
	b.freeSlot(l1, bookT0, false)
	b.finish(l2, bookT0, false, failedKind)
	msgs := takeAll(b, 1, false)
	if got := kinds(msgs); got != "L2:failed+2credits" {
		t.Fatalf("two slots freed with a failure: %s", got)
	}
	b.welcome(&pb.Welcome{}) // a new stream to an older coordinator
	b.hello(2)
	if msgs := takeAll(b, 2, false); sentCredits(msgs) != 0 || kinds(msgs) != "L2:failed" {
		t.Fatalf("re-sent on a new stream: %s", kinds(msgs))
	}
}

// A download's slot comes back (one credit) when its body is received and handed to the
// commit queue, before the completed event; the completed event returns no second credit.
func TestLeaseBookCreditWhenBodyReceived(t *testing.T) {
	b := newLeaseBook(DefaultPrefetch)
	if initial, inFlight := b.hello(2); initial != 2 || len(inFlight) != 0 {
		t.Fatalf("hello: %d, %v", initial, inFlight)
	}
	l := bookAdd(b, bookAssign("L1"))
	if dup, _ := b.add(bookAssign("L1"), bookT0, false); dup != nil {
		t.Fatal("a duplicate Assign was added")
	}
	b.received(l, 100, bookT0)
	msgs := takeAll(b, 1, false)
	if len(msgs) != 1 || !msgs[0].GetEvent().GetProgress().GetBodyReceived() || msgs[0].GetEvent().GetProgress().GetBytes() != 100 {
		t.Fatalf("after received: %v", msgs)
	}
	b.freeSlot(l, bookT0, false)
	b.freeSlot(l, bookT0, false) // once only
	if msgs := takeAll(b, 1, false); sentCredits(msgs) != 1 || len(msgs) != 1 {
		t.Fatalf("after the slot was freed: %v", msgs)
	}
	if _, inFlight := b.hello(2); len(inFlight) != 1 || !inFlight[0].GetBodyReceived() {
		t.Fatalf("a pending commit is announced with body_received: %v", inFlight)
	}
	b.finish(l, bookT0, false, completedKind)
	msgs = takeAll(b, 2, false)
	if len(msgs) != 1 || msgs[0].GetEvent().GetCompleted() == nil || sentCredits(msgs) != 0 {
		t.Fatalf("after finish: %v", msgs)
	}
	if msgs := takeAll(b, 2, false); len(msgs) != 0 {
		t.Fatalf("the terminal event was sent twice on one stream: %v", msgs)
	}
	if b.ack("L1", msgs[0].GetEvent().GetSequence()-1) {
		t.Fatal("an Ack of an older sequence forgot the lease")
	}
	if !b.ack("L1", l.terminal.GetSequence()) || b.len() != 0 {
		t.Fatal("the Ack did not forget the lease")
	}
}

// A failed download frees its slot with its terminal event.
func TestLeaseBookCreditOnFailure(t *testing.T) {
	b := newLeaseBook(DefaultPrefetch)
	b.hello(1)
	l := bookAdd(b, bookAssign("L1"))
	b.finish(l, bookT0, false, failedKind)
	msgs := takeAll(b, 1, false)
	if len(msgs) != 2 || msgs[0].GetEvent().GetFailed() == nil || sentCredits(msgs) != 1 {
		t.Fatalf("after a failure: %v", msgs)
	}
}

// After a reconnect, the Hello announces the free slots (at least one): downloads still
// running keep theirs, and the credit announced beyond the slots is withheld (debt) as they
// free up. Pending commits and unacknowledged results hold no slot, and credits owed on the
// old stream are covered by the Hello.
func TestLeaseBookHelloAfterReconnect(t *testing.T) {
	b := newLeaseBook(DefaultPrefetch)
	b.hello(3)
	l1, l2, l3 := bookAdd(b, bookAssign("L1")), bookAdd(b, bookAssign("L2")), bookAdd(b, bookAssign("L3"))
	b.received(l1, 10, bookT0)
	b.freeSlot(l1, bookT0, false) // owed, never sent: the stream breaks
	initial, inFlight := b.hello(3)
	if initial != 1 || b.debt != 0 || len(inFlight) != 3 {
		t.Fatalf("hello with 2 downloading, 1 committing of 3 slots: initial %d, debt %d, in flight %v", initial, b.debt, inFlight)
	}
	if msgs := takeAll(b, 2, false); sentCredits(msgs) != 0 {
		t.Fatalf("the old stream's owed credit was sent again: %v", msgs)
	}
	// L4 takes that credit: all 3 slots busy. The next Hello still announces 1 (a stream
	// without credit would be useless), and withholds it from the next freed slot.
	l4 := bookAdd(b, bookAssign("L4"))
	initial, _ = b.hello(3)
	if initial != 1 || b.debt != 1 {
		t.Fatalf("hello with 3 downloading of 3 slots: initial %d, debt %d", initial, b.debt)
	}
	b.finish(l2, bookT0, false, failedKind)
	if msgs := takeAll(b, 3, false); sentCredits(msgs) != 0 {
		t.Fatalf("credit sent while in debt: %v", msgs)
	}
	b.received(l4, 10, bookT0)
	b.freeSlot(l4, bookT0, false)
	b.finish(l3, bookT0, false, failedKind)
	if msgs := takeAll(b, 3, false); sentCredits(msgs) != 2 {
		t.Fatalf("after the debt: %v", msgs)
	}
}

// Terminal events go in the order their leases finished, once per stream; a new stream
// re-sends every one not yet acknowledged, and an acknowledged or cancelled one is not sent.
func TestLeaseBookTerminalsInFinishOrder(t *testing.T) {
	b := newLeaseBook(DefaultPrefetch)
	b.hello(5)
	var ls []*lease
	for _, id := range []string{"L5", "L1", "L4", "L2", "L3"} {
		ls = append(ls, bookAdd(b, bookAssign(id)))
	}
	ids := func(msgs []*pb.WorkRequest) string {
		var out []string
		for _, m := range msgs {
			if ev := m.GetEvent(); ev != nil {
				out = append(out, ev.GetLeaseId())
			}
		}
		return strings.Join(out, ",")
	}
	for _, i := range []int{2, 0, 4} { // L4, L5, L3
		b.finish(ls[i], bookT0, false, completedKind)
	}
	if got := ids(takeAll(b, 1, false)); got != "L4,L5,L3" {
		t.Fatalf("first take: %s, want L4,L5,L3", got)
	}
	if got := ids(takeAll(b, 1, false)); got != "" {
		t.Fatalf("terminal events sent twice on one stream: %s", got)
	}
	b.finish(ls[1], bookT0, false, completedKind) // L1
	if !b.ack("L5", ls[0].terminal.GetSequence()) {
		t.Fatal("ack of L5 refused")
	}
	if got, removed := b.cancel("L4", bookT0); got != nil || !removed {
		t.Fatalf("cancel of finished L4: %v, %v", got, removed)
	}
	b.hello(5)
	got := strings.Split(ids(takeAll(b, 2, false)), ",")
	slices.Sort(got)
	if strings.Join(got, ",") != "L1,L3" {
		t.Fatalf("after a reconnect: %v, want L1 and L3 (L5 acknowledged, L4 cancelled)", got)
	}
	b.finish(ls[3], bookT0, false, failedKind) // L2
	if got := ids(takeAll(b, 2, false)); got != "L2" {
		t.Fatalf("after L2 finished: %s", got)
	}
}

// While draining nothing is owed, and cancelled leases are forgotten once their terminal
// event is sent.
func TestLeaseBookDrainingAndCancel(t *testing.T) {
	b := newLeaseBook(DefaultPrefetch)
	b.hello(2)
	l1, l2 := bookAdd(b, bookAssign("L1")), bookAdd(b, bookAssign("L2"))
	if got, removed := b.cancel("L1", bookT0); got != l1 || removed {
		t.Fatalf("cancel of a running lease: %v, %v", got, removed)
	}
	b.finish(l1, bookT0, true, failedKind)
	b.finish(l2, bookT0, true, failedKind)
	msgs := takeAll(b, 1, true)
	if len(msgs) != 2 || sentCredits(msgs) != 0 {
		t.Fatalf("draining: %v", msgs)
	}
	if b.len() != 1 || b.leases["L2"] == nil {
		t.Fatalf("the cancelled lease was kept, or the other dropped: %v", b.leases)
	}
	if got, removed := b.cancel("L2", bookT0); got != nil || !removed || b.len() != 0 {
		t.Fatalf("cancel of a finished lease: %v, %v", got, removed)
	}
	if !b.settled(1, true) {
		t.Fatal("not settled")
	}
}

// Keep-alives go to every running lease (downloads and pending commits) quiet since before
// the cut, and not to finished ones.
func TestLeaseBookKeepAlive(t *testing.T) {
	b := newLeaseBook(DefaultPrefetch)
	b.hello(3)
	l1, l2, l3 := bookAdd(b, bookAssign("L1")), bookAdd(b, bookAssign("L2")), bookAdd(b, bookAssign("L3"))
	b.received(l2, 5, bookT0)
	b.finish(l3, bookT0, false, failedKind)
	takeAll(b, 1, false)
	later := bookT0.Add(time.Minute)
	if n := b.keepAlive(later.Add(-time.Second), later); n != 2 {
		t.Fatalf("%d keep-alives, want 2", n)
	}
	if n := b.keepAlive(later.Add(-time.Second), later); n != 0 {
		t.Fatalf("%d keep-alives right after, want 0", n)
	}
	_ = l1
}

// checkStarted checks that next, the lease freeSlot or finish started in l's slot, is l's
// successor, now holding the slot.
func checkStarted(t *rapid.T, l, next *lease) {
	if next != nil && (!next.slot || next.waiting || !l.received || l.succ != nil || next.pred != nil) {
		t.Fatalf("lease %s handed its slot to %s (slot %v, waiting %v)", l.a.GetLeaseId(), next.a.GetLeaseId(), next.slot, next.waiting)
	}
}

// Every credit is accounted for, whatever happens: on each stream, the coordinator's credit
// (the Hello's initial credit plus the Credits sent, minus the Assigns it made without
// after_lease_id) plus the slots in use minus the debt is the fetcher's slots (while not
// draining). Successors wait only for a predecessor holding (or waiting for) a slot, take
// its slot when its body is in, and never survive a reconnect or a drain; at most the
// prefetch window of them wait, and the book counts them (the prefetched_leases gauge reads
// that count).
//
// With folding (after a Welcome; credits folded into events count like Credits): the events
// a stream carries for a lease have increasing sequence numbers, its start comes first (a
// started event, or folded into its first event) and once, a successor's start comes after
// its predecessor's body_received, a started event is never held longer than the hold (nor
// past a drain), and nothing is folded on a stream without a Welcome.
func TestLeaseBookCreditsProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		slots := rapid.IntRange(1, 4).Draw(rt, "slots")
		prefetch := rapid.IntRange(0, 3).Draw(rt, "prefetch")
		b := newLeaseBook(prefetch)
		sid := uint64(1)
		credit, _ := b.hello(slots)
		next := 0
		now := bookT0
		draining := false
		// The stream as the coordinator sees it.
		type seen struct {
			seq     int64
			started bool
			// announced: re-announced in the Hello (running; a start not yet queued then may
			// still follow)
			announced bool
		}
		welcomed := false
		stream := map[string]*seen{}
		emitted := map[*lease]time.Time{} // leases whose started event was emitted, when
		predOf := map[*lease]*lease{}     // successors started in their predecessor's slot
		// bodyKnown: the coordinator knows the body is in, by lease id (a lease the coordinator
		// cancelled leaves the book in the take that sends its body_received).
		bodyKnown := map[string]bool{}
		// The coordinator's view of the current stream, which decides the successors it sends
		// (coordinator.mayPrecede): it names as a predecessor only a lease it assigned on this
		// stream (or that was re-announced) whose body_received and end it has not seen, without
		// a successor of its own. It links P <- S when it sends S, and unlinks them only when S
		// ends (its terminal event: a hand-back, or after S ran) or when it cancels S (the
		// Cancel goes before any later Assign naming P): so while the book links P to a waiting
		// S, the coordinator does too, and never names P again. Its view lags the book's: a
		// lease whose body is in, whose slot is freed or that ended may still be named until a
		// flush tells it. Naming any lease (as the generator did) let a second successor of P
		// start at once (add: P's body is in) in a second slot while P still held its own.
		type coordLease struct{ body, ended bool }
		coord := map[string]*coordLease{}
		coordSucc := map[string]string{} // predecessor -> successor, as the coordinator links them
		coordPred := map[string]string{} // successor -> predecessor
		coordUnlink := func(id string) {
			if p, ok := coordPred[id]; ok {
				if coordSucc[p] == id {
					delete(coordSucc, p)
				}
				delete(coordPred, id)
			}
		}
		send := func(t *rapid.T, msgs []*pb.WorkRequest) {
			for _, m := range msgs {
				if m.GetFoldedCredits() != 0 && !welcomed {
					t.Fatalf("credits folded on a stream without Welcome: %v", m)
				}
				ev := m.GetEvent()
				if ev == nil {
					continue
				}
				id := ev.GetLeaseId()
				st := stream[id]
				if st == nil {
					st = &seen{}
					stream[id] = st
				}
				if ev.GetSequence() <= st.seq {
					t.Fatalf("lease %s: sequence %d after %d", id, ev.GetSequence(), st.seq)
				}
				st.seq = ev.GetSequence()
				start := ev.GetStarted() != nil || ev.GetFoldedStart()
				terminal := ev.GetCompleted() != nil || ev.GetFailed() != nil
				if !st.announced && (ev.GetStarted() != nil && st.started || ev.GetFoldedStart() && st.started && !terminal) {
					t.Fatalf("lease %s started twice on stream %d", id, sid)
				}
				if ev.GetFoldedStart() && !welcomed && !terminal { // a terminal event keeps its fold when re-sent
					t.Fatalf("lease %s: a start folded on a stream without Welcome", id)
				}
				if l := b.leases[id]; start && l != nil {
					if p := predOf[l]; p != nil && !bodyKnown[p.a.GetLeaseId()] {
						t.Fatalf("successor %s started before its predecessor %s's body_received", id, p.a.GetLeaseId())
					}
				}
				st.started = st.started || start
				if ev.GetProgress().GetBodyReceived() {
					bodyKnown[id] = true
				}
				if c := coord[id]; c != nil {
					c.body = c.body || ev.GetProgress().GetBodyReceived()
					if terminal && !c.ended {
						// A waiting successor of it is void on both sides (predecessorEnded).
						if s, ok := coordSucc[id]; ok && !c.body {
							coord[s].ended = true
						}
						c.ended = true
						coordUnlink(id)
					}
				}
			}
			for l, at := range emitted {
				if l.held != nil && (draining || now.Sub(at) >= b.hold) {
					t.Fatalf("lease %s: started event still held after %v (hold %v, draining %v)", l.a.GetLeaseId(), now.Sub(at), b.hold, draining)
				}
			}
		}
		pick := func(t *rapid.T, cond func(*lease) bool) *lease {
			var ls []*lease
			for i := range next {
				if l := b.leases[fmt.Sprintf("L%d", i)]; l != nil && cond(l) {
					ls = append(ls, l)
				}
			}
			if len(ls) == 0 {
				t.Skip("none")
			}
			return rapid.SampledFrom(ls).Draw(t, "lease")
		}
		rt.Repeat(map[string]func(*rapid.T){
			"assign": func(t *rapid.T) {
				if credit < 1 {
					t.Skip("no credit")
				}
				credit--
				id := fmt.Sprintf("L%d", next)
				b.add(bookAssign(id), now, false)
				coord[id] = &coordLease{}
				next++
			},
			// A prefetched successor of a lease the coordinator may name (see coord: its view
			// lags, the predecessor may have freed its slot, or ended), or of a lease the
			// fetcher does not hold.
			"successor": func(t *rapid.T) {
				names := []string{"unknown"}
				for i := range next {
					id := fmt.Sprintf("L%d", i)
					if c := coord[id]; c != nil && !c.body && !c.ended && coordSucc[id] == "" {
						names = append(names, id)
					}
				}
				after := rapid.SampledFrom(names).Draw(t, "after")
				id := fmt.Sprintf("L%d", next)
				a := bookAssign(id)
				a.AfterLeaseId = after
				next++
				coord[id] = &coordLease{}
				if after != "unknown" {
					coordSucc[after], coordPred[id] = id, after
				}
				p := b.leases[after]
				l, start := b.add(a, now, draining)
				switch {
				case draining && l.running:
					t.Fatalf("successor taken while draining")
				case p != nil && p.running && (p.slot || p.waiting) && p.succ == l && !draining:
					if !l.waiting || start {
						t.Fatalf("successor of a running lease does not wait")
					}
				case start != (l.running && l.slot):
					t.Fatalf("start %v for %+v", start, l)
				}
			},
			"drain": func(t *rapid.T) {
				draining = true
				b.handBackWaiting(now)
			},
			"cancel": func(t *rapid.T) {
				l := pick(t, func(l *lease) bool { return l.running })
				// The coordinator ends it, and a successor of it that waits (predecessorEnded).
				if c := coord[l.a.GetLeaseId()]; c != nil {
					if s, ok := coordSucc[l.a.GetLeaseId()]; ok && !c.body {
						coord[s].ended = true
					}
					c.ended = true
					coordUnlink(l.a.GetLeaseId())
				}
				if got, _ := b.cancel(l.a.GetLeaseId(), now); got == l && l.waiting {
					t.Fatalf("a cancelled successor still waits")
				}
			},
			"received": func(t *rapid.T) {
				l := pick(t, func(l *lease) bool { return l.running && l.slot && !l.received })
				b.received(l, 1, now)
			},
			// The coordinator accepts folding on this stream, holding started events for 0
			// or 500 ms.
			"welcome": func(t *rapid.T) {
				welcomed = true
				b.welcome(foldWelcome(time.Duration(rapid.IntRange(0, 1).Draw(t, "hold")) * 500 * time.Millisecond))
			},
			"start": func(t *rapid.T) {
				l := pick(t, func(l *lease) bool { _, ok := emitted[l]; return l.running && l.slot && !l.received && !ok })
				if b.emit(l, now, startedKind) {
					emitted[l] = now
				}
			},
			"progress": func(t *rapid.T) {
				l := pick(t, func(l *lease) bool { _, ok := emitted[l]; return l.running && l.slot && !l.received && ok })
				b.emit(l, now, func(ev *pb.DownloadEvent) {
					ev.Kind = &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 1}}
				})
			},
			"advance": func(t *rapid.T) {
				now = now.Add(time.Duration(rapid.IntRange(1, 1500).Draw(t, "ms")) * time.Millisecond)
			},
			"commitQueued": func(t *rapid.T) {
				l := pick(t, func(l *lease) bool { return l.running && l.received })
				next := b.freeSlot(l, bookT0, draining)
				checkStarted(t, l, next)
				if next != nil {
					predOf[next] = l
				}
			},
			"finish": func(t *rapid.T) {
				l := pick(t, func(l *lease) bool { return l.running && !l.waiting })
				next := b.finish(l, now, draining, completedKind)
				checkStarted(t, l, next)
				if next != nil {
					predOf[next] = l
				}
			},
			"flush": func(t *rapid.T) {
				msgs := takeAt(b, sid, draining, now)
				send(t, msgs)
				credit += sentCredits(msgs)
			},
			"ack": func(t *rapid.T) {
				l := pick(t, func(l *lease) bool { return l.terminal != nil && l.sentIn == sid })
				b.ack(l.a.GetLeaseId(), l.terminal.GetSequence())
			},
			"reconnect": func(t *rapid.T) {
				sid++
				var inFlight []*pb.InFlightLease
				credit, inFlight = b.hello(slots)
				welcomed, stream = false, map[string]*seen{}
				clear(coord)
				clear(coordSucc)
				clear(coordPred)
				for _, fl := range inFlight {
					stream[fl.GetLeaseId()] = &seen{announced: true}
					coord[fl.GetLeaseId()] = &coordLease{body: fl.GetBodyReceived()}
					if fl.GetBodyReceived() {
						bodyKnown[fl.GetLeaseId()] = true
					}
				}
				for _, l := range b.leases {
					if l.waiting {
						t.Fatalf("waiting successor %s kept across a reconnect", l.a.GetLeaseId())
					}
				}
			},
			"": func(t *rapid.T) {
				busy, waiting, held, bodyIn := 0, 0, 0, 0
				for _, l := range b.leases {
					if l.slot {
						busy++
					}
					if l.slot && l.received {
						bodyIn++
					}
					if inWindow(l) {
						waiting++
					}
					if l.waiting {
						held++
					}
					if l.slot && (l.waiting || !l.running) || l.waiting && (!l.running || draining) {
						t.Fatalf("lease %s: slot %v, waiting %v, running %v", l.a.GetLeaseId(), l.slot, l.waiting, l.running)
					}
					if p := l.pred; l.waiting && (p == nil || p.succ != l || !p.running || !p.slot && !p.waiting || b.leases[p.a.GetLeaseId()] != p) {
						t.Fatalf("waiting successor %s: broken link", l.a.GetLeaseId())
					}
					if s := l.succ; s != nil && (s.pred != l || !s.waiting) {
						t.Fatalf("lease %s: broken successor link", l.a.GetLeaseId())
					}
				}
				if waiting != b.waiting || waiting > prefetch {
					t.Fatalf("%d successors wait in the window, the book counts %d, the window is %d", waiting, b.waiting, prefetch)
				}
				// Beyond the window: at most one successor per slot whose body is in; so at most
				// prefetch + slots wait, plus the slots the debt of a reconnect covers (a Hello
				// announces at least one credit, even with every slot busy: busy <= slots + debt
				// below).
				if held-waiting > bodyIn || held > prefetch+slots+b.debt {
					t.Fatalf("%d successors wait, %d beyond the window, %d slots with their body in; window %d, slots %d, debt %d", held, held-waiting, bodyIn, prefetch, slots, b.debt)
				}
				if draining {
					return // credits are not returned while draining
				}
				if credit+b.owed+busy-b.debt != slots {
					t.Fatalf("credit %d + owed %d + busy %d - debt %d != %d slots", credit, b.owed, busy, b.debt, slots)
				}
				if b.debt < 0 || b.owed < 0 || credit < 0 {
					t.Fatalf("negative: debt %d, owed %d, credit %d", b.debt, b.owed, credit)
				}
			},
		})
	})
}

// A successor whose predecessor's body is in leaves the prefetch window, as on the
// coordinator (which counts it against its host from the predecessor's body_received), even
// while the predecessor's slot waits for a place in the commit queue: the next successor the
// coordinator sends is taken, not handed back as beyond the window. Before, every successor
// sent while commits were backed up was handed back (an Assign, a failure and an Ack each).
func TestLeaseBookWindowFreedAtBodyReceived(t *testing.T) {
	b := newLeaseBook(1)
	b.hello(2)
	p1, p2 := bookAdd(b, bookAssign("P1")), bookAdd(b, bookAssign("P2"))
	s1 := bookAssign("S1")
	s1.AfterLeaseId = "P1"
	if l, start := b.add(s1, bookT0, false); start || !l.waiting || b.waiting != 1 {
		t.Fatalf("S1: start %v, waiting %v, window %d", start, l.waiting, b.waiting)
	}
	b.received(p1, 1, bookT0) // its slot waits for a commit place
	if b.waiting != 0 {
		t.Fatalf("window %d after P1's body came in, want 0", b.waiting)
	}
	s2 := bookAssign("S2")
	s2.AfterLeaseId = "P2"
	if l, _ := b.add(s2, bookT0, false); !l.waiting || l.terminal != nil || b.waiting != 1 {
		t.Fatalf("S2 was handed back (%v) or not counted (window %d)", l.terminal, b.waiting)
	}
	// A successor of P1 after its body came in waits for the slot without counting.
	if next := b.freeSlot(p1, bookT0, false); next == nil || next.a.GetLeaseId() != "S1" || b.waiting != 1 {
		t.Fatalf("P1's slot went to %v, window %d", next, b.waiting)
	}
	b.received(p2, 1, bookT0)
	s3 := bookAssign("S3")
	s3.AfterLeaseId = "S1"
	if l, _ := b.add(s3, bookT0, false); !l.waiting || b.waiting != 1 {
		t.Fatalf("S3: waiting %v, window %d", l.waiting, b.waiting)
	}
	b.finish(p2, bookT0, false, failedKind) // S2 takes P2's slot: its body was in
	if b.waiting != 1 || b.leases["S2"].slot != true {
		t.Fatalf("window %d, S2 slot %v", b.waiting, b.leases["S2"].slot)
	}
}

// A full outbox (the coordinator reads slowly) drops progress events, never a started event:
// there is one per lease, and without it the coordinator would reclaim the running download
// for want of a start (and close the stream). Folded or not, the start reaches the stream.
func TestLeaseBookStartedNotDroppedWhenOutboxFull(t *testing.T) {
	for _, fold := range []bool{false, true} {
		b := newLeaseBook(DefaultPrefetch)
		b.hello(2)
		if fold {
			b.welcome(foldWelcome(time.Second))
		}
		l1, l2 := bookAdd(b, bookAssign("L1")), bookAdd(b, bookAssign("L2"))
		progress := func(ev *pb.DownloadEvent) {
			ev.Kind = &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 1}}
		}
		for range maxOutbox {
			if !b.emit(l1, bookT0, progress) {
				t.Fatal("progress dropped before the outbox was full")
			}
		}
		if b.emit(l1, bookT0, progress) {
			t.Fatal("progress queued beyond maxOutbox")
		}
		if !b.emit(l2, bookT0, startedKind) {
			t.Fatalf("fold %v: L2's started event dropped with the outbox full", fold)
		}
		b.received(l2, 1, bookT0)
		msgs := takeAll(b, 1, false)
		want := "L1:progress L2:started L2:received"
		if fold {
			want = "L1:progress L2:received+start"
		}
		if got := kinds(msgs[len(msgs)-len(strings.Fields(want)):]); got != want {
			t.Fatalf("fold %v: the stream ends with %s, want %s", fold, got, want)
		}
		if seq := msgs[len(msgs)-1].GetEvent().GetSequence(); seq != 2 {
			t.Fatalf("fold %v: L2's body_received has sequence %d, want 2", fold, seq)
		}
	}
}

// The sequence rapid reported once for TestLeaseBookCreditsProperty ("2 successors wait,
// window 0, slots 1"), replayed: one slot, no window; L0 starts and its body comes in; L1 and
// then L2 both name L0 as their predecessor; L2's body comes in and L3 names L2. L1 waits for
// L0's slot (outside the window: L0's body is in). L2 used to start at once (add's case of a
// predecessor whose body is in and slot freed, though L0 still held its slot), in a second
// slot of a one-slot fetcher, and L3 then waited for it: two successors waited, beyond
// Prefetch + Slots.
//
// A coordinator that follows the Work protocol never sends L2: it names a lease as a
// predecessor only while, as it sees the stream, that lease holds a host slot or waits for one
// and has no successor (coordinator.mayPrecede: l.succ == nil), and it keeps the link L0 <- L1
// until L1 ends or it cancels L1 (the Cancel goes before any later Assign on the stream); with
// prefetch 0 it sends no successor at all (noteCandidate). So the property test's generator,
// which named any lease, now names only one the coordinator could (see coord there), and the
// book hands a second successor back (ABORTED) instead of running it beyond Config.Slots.
func TestLeaseBookReplaySecondSuccessorOfOnePredecessor(t *testing.T) {
	b := newLeaseBook(0)
	b.hello(1)
	succ := func(id, after string) (*lease, bool) {
		a := bookAssign(id)
		a.AfterLeaseId = after
		return b.add(a, bookT0, false)
	}
	l0 := bookAdd(b, bookAssign("L0"))
	b.received(l0, 1, bookT0)
	if l1, start := succ("L1", "L0"); start || !l1.waiting {
		t.Fatalf("L1 after L0 (body in, slot held): start %v, waiting %v", start, l1.waiting)
	}
	l2, start := succ("L2", "L0") // a second successor of L0: a protocol violation
	if start || l2.running || l2.terminal.GetFailed().GetReason() != pb.FailureReason_FAILURE_REASON_ABORTED {
		t.Fatalf("a second successor of L0: start %v, running %v, slot %v, terminal %v", start, l2.running, l2.slot, l2.terminal)
	}
	succ("L3", "L2")
	held := 0
	for _, l := range b.leases {
		if l.waiting {
			held++
		}
	}
	if held > 0+1 || b.debt != 0 {
		t.Fatalf("%d successors wait, window 0, slots 1; debt %d", held, b.debt)
	}
	if got := kinds(takeAll(b, 1, false)); got != "L0:received L2:failed L3:failed" {
		t.Fatalf("sent %s", got)
	}
}

// After a reconnect that found every slot busy, the Hello still announces one credit (a stream
// without credit is useless) and withholds it from the next freed slot (debt): Slots + 1
// downloads run for a while, and a coordinator that follows the protocol may then make the
// fetcher hold Prefetch + Slots + 1 successors: one per download whose body is in, and the
// window's. Config.Prefetch documents that bound; the property test checks it.
func TestLeaseBookSuccessorsAfterReconnectWithEverySlotBusy(t *testing.T) {
	b := newLeaseBook(1)
	b.hello(1)
	succ := func(id, after string) *lease {
		a := bookAssign(id)
		a.AfterLeaseId = after
		l, _ := b.add(a, bookT0, false)
		return l
	}
	l0 := bookAdd(b, bookAssign("L0"))
	if initial, _ := b.hello(1); initial != 1 || b.debt != 1 {
		t.Fatalf("reconnect with the slot busy: initial %d, debt %d", initial, b.debt)
	}
	l1 := bookAdd(b, bookAssign("L1")) // the Hello's credit
	s0 := succ("S0", "L0")             // L0 was re-announced without its body: a candidate
	b.received(l0, 1, bookT0)
	s1 := succ("S1", "L1") // S0 left the window with L0's body
	b.received(l1, 1, bookT0)
	s2 := succ("S2", "S1") // a chain, in the window
	for _, l := range []*lease{s0, s1, s2} {
		if !l.waiting {
			t.Fatalf("%s does not wait (terminal %v)", l.a.GetLeaseId(), l.terminal)
		}
	}
	if b.waiting != 1 {
		t.Fatalf("window %d, want 1", b.waiting)
	}
}
