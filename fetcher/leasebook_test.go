package fetcher

import (
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
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

// sentCredits sums the Credits messages of msgs.
func sentCredits(msgs []*pb.WorkRequest) int {
	n := 0
	for _, m := range msgs {
		n += int(m.GetCredits().GetCredits())
	}
	return n
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
	msgs := b.take(1, false)
	if len(msgs) != 1 || !msgs[0].GetEvent().GetProgress().GetBodyReceived() || msgs[0].GetEvent().GetProgress().GetBytes() != 100 {
		t.Fatalf("after received: %v", msgs)
	}
	b.freeSlot(l, bookT0, false)
	b.freeSlot(l, bookT0, false) // once only
	if msgs := b.take(1, false); sentCredits(msgs) != 1 || len(msgs) != 1 {
		t.Fatalf("after the slot was freed: %v", msgs)
	}
	if _, inFlight := b.hello(2); len(inFlight) != 1 || !inFlight[0].GetBodyReceived() {
		t.Fatalf("a pending commit is announced with body_received: %v", inFlight)
	}
	b.finish(l, bookT0, false, completedKind)
	msgs = b.take(2, false)
	if len(msgs) != 1 || msgs[0].GetEvent().GetCompleted() == nil || sentCredits(msgs) != 0 {
		t.Fatalf("after finish: %v", msgs)
	}
	if msgs := b.take(2, false); len(msgs) != 0 {
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
	msgs := b.take(1, false)
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
	if msgs := b.take(2, false); sentCredits(msgs) != 0 {
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
	if msgs := b.take(3, false); sentCredits(msgs) != 0 {
		t.Fatalf("credit sent while in debt: %v", msgs)
	}
	b.received(l4, 10, bookT0)
	b.freeSlot(l4, bookT0, false)
	b.finish(l3, bookT0, false, failedKind)
	if msgs := b.take(3, false); sentCredits(msgs) != 2 {
		t.Fatalf("after the debt: %v", msgs)
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
	msgs := b.take(1, true)
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
	b.take(1, false)
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
				b.add(bookAssign(fmt.Sprintf("L%d", next)), now, false)
				next++
			},
			// A prefetched successor, of any lease the coordinator may still think running
			// (its view lags: the predecessor may have freed its slot, or ended).
			"successor": func(t *rapid.T) {
				after := fmt.Sprintf("L%d", rapid.IntRange(0, next).Draw(t, "after"))
				a := bookAssign(fmt.Sprintf("L%d", next))
				a.AfterLeaseId = after
				next++
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
				if got, _ := b.cancel(l.a.GetLeaseId(), now); got == l && l.waiting {
					t.Fatalf("a cancelled successor still waits")
				}
			},
			"received": func(t *rapid.T) {
				l := pick(t, func(l *lease) bool { return l.running && l.slot && !l.received })
				b.received(l, 1, now)
			},
			"commitQueued": func(t *rapid.T) {
				l := pick(t, func(l *lease) bool { return l.running && l.received })
				checkStarted(t, l, b.freeSlot(l, bookT0, draining))
			},
			"finish": func(t *rapid.T) {
				l := pick(t, func(l *lease) bool { return l.running && !l.waiting })
				checkStarted(t, l, b.finish(l, now, draining, completedKind))
			},
			"flush": func(t *rapid.T) {
				credit += sentCredits(b.take(sid, draining))
			},
			"ack": func(t *rapid.T) {
				l := pick(t, func(l *lease) bool { return l.terminal != nil && l.sentIn == sid })
				b.ack(l.a.GetLeaseId(), l.terminal.GetSequence())
			},
			"reconnect": func(t *rapid.T) {
				sid++
				credit, _ = b.hello(slots)
				for _, l := range b.leases {
					if l.waiting {
						t.Fatalf("waiting successor %s kept across a reconnect", l.a.GetLeaseId())
					}
				}
			},
			"": func(t *rapid.T) {
				busy, waiting := 0, 0
				for _, l := range b.leases {
					if l.slot {
						busy++
					}
					if l.waiting {
						waiting++
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
					t.Fatalf("%d successors wait, the book counts %d, the window is %d", waiting, b.waiting, prefetch)
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
