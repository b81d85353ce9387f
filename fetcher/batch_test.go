package fetcher

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"pgregory.net/rapid"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/clock"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// Batched messages (step 9 of the Work protocol).

// flatItems lists what msgs carry, in order: every event (its lease and sequence) and every
// other message, with the credits folded into a message after its last event.
func flatItems(msgs []*pb.WorkRequest) []string {
	var out []string
	for _, m := range msgs {
		if ev := m.GetEvent(); ev != nil {
			for _, e := range append([]*pb.DownloadEvent{ev}, m.GetMoreEvents()...) {
				out = append(out, fmt.Sprintf("event %s/%d", e.GetLeaseId(), e.GetSequence()))
			}
			if n := m.GetFoldedCredits(); n != 0 {
				out = append(out, fmt.Sprintf("credits %d", n))
			}
			continue
		}
		out = append(out, fmt.Sprintf("%T", m.GetMsg()))
	}
	return out
}

// batchEvents keeps everything a flush sends, in order, with the credits folded into a message
// still applied right after the event they followed (no event moves in front of them), at most
// validate.MaxWorkBatch events a message, and merges every run of events it can: two messages
// in a row carrying events are merged unless the first is full or carries credits.
func TestBatchEventsProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var in []*pb.WorkRequest
		seq := int64(0)
		for range rapid.IntRange(0, 3*validate.MaxWorkBatch).Draw(t, "messages") {
			switch rapid.IntRange(0, 9).Draw(t, "kind") {
			case 0:
				in = append(in, &pb.WorkRequest{Msg: &pb.WorkRequest_Draining{Draining: &pb.Draining{}}})
			case 1:
				in = append(in, &pb.WorkRequest{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: 1}}})
			case 2:
				in = append(in, &pb.WorkRequest{Msg: &pb.WorkRequest_Heartbeat{Heartbeat: &pb.Heartbeat{}}})
			default:
				seq++
				m := &pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: &pb.DownloadEvent{LeaseId: fmt.Sprintf("L%d", rapid.IntRange(0, 3).Draw(t, "lease")), Sequence: seq}}}
				if rapid.IntRange(0, 5).Draw(t, "credits") == 0 {
					m.FoldedCredits = int32(rapid.IntRange(1, 3).Draw(t, "n"))
				}
				in = append(in, m)
			}
		}
		want := flatItems(in)
		out := batchEvents(slices.Clone(in))
		if got := flatItems(out); !slices.Equal(got, want) {
			t.Fatalf("batched %v, want %v", got, want)
		}
		for i, m := range out {
			if n := 1 + len(m.GetMoreEvents()); n > validate.MaxWorkBatch {
				t.Fatalf("message %d carries %d events", i, n)
			}
			if m.GetEvent() == nil && len(m.GetMoreEvents()) > 0 {
				t.Fatalf("more events on %v", m)
			}
			if i > 0 && m.GetEvent() != nil {
				if p := out[i-1]; p.GetEvent() != nil && p.GetFoldedCredits() == 0 && len(p.GetMoreEvents()) < validate.MaxWorkBatch-1 {
					t.Fatalf("messages %d and %d not merged: %v, %v", i-1, i, p, m)
				}
			}
		}
	})
}

// After a Welcome accepting batches: the fetcher takes a batch of Assigns (three downloads),
// sends the three started events it held back as one message when the hold is over, and a
// batch of Acks makes it forget all three.
func TestWorkBatchesAfterWelcome(t *testing.T) {
	pdf := pdfBody(300_000, 43)
	g := newGatedOrigin(t, pdf)
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	h := newWorkHarness(t, func(c *Config) { c.Clock, c.Slots = clk, 4 })
	s := h.stream(t)
	if hello := s.next(t).GetHello(); !hello.GetBatchEvents() {
		t.Fatalf("hello %v does not ask for batches", hello)
	}
	s.push(t, &pb.WorkResponse{Msg: &pb.WorkResponse_Welcome{Welcome: &pb.Welcome{FoldEvents: true, BatchEvents: true, StartHold: durationpb.New(time.Second)}}})
	batch := assign("L1", g.URL+"/gate")
	for _, id := range []string{"L2", "L3"} {
		batch.MoreAssigns = append(batch.MoreAssigns, assign(id, g.URL+"/gate").GetAssign())
	}
	s.push(t, batch)
	for range 3 {
		g.waitFirstHalf(t)
	}
	h.waitHeld(t, 3)
	clk.Advance(time.Second)
	m := s.nextAny(t)
	var started []string
	for _, ev := range append([]*pb.DownloadEvent{wantEvent(t, m, m.GetEvent().GetLeaseId())}, m.GetMoreEvents()...) {
		if ev.GetStarted() == nil || ev.GetFoldedStart() {
			t.Fatalf("got %v, want the three started events", m)
		}
		started = append(started, ev.GetLeaseId())
	}
	slices.Sort(started)
	if !slices.Equal(started, []string{"L1", "L2", "L3"}) || m.GetFoldedCredits() != 0 {
		t.Fatalf("got %v, want the started events of L1, L2, L3 in one message, no credits", m)
	}

	g.open()
	seqs := map[string]int64{}
	credits := int32(0)
	for len(seqs) < 3 || credits < 3 {
		// Every message: a batch led by a plain progress event may carry the rest.
		var m *pb.WorkRequest
		select {
		case m = <-s.recv:
		case <-time.After(testWait):
			t.Fatalf("timed out: completed %v, %d credits", seqs, credits)
		}
		if len(m.GetMoreEvents()) > validate.MaxWorkBatch-1 {
			t.Fatalf("%d events in a message", 1+len(m.GetMoreEvents()))
		}
		credits += m.GetFoldedCredits() + m.GetCredits().GetCredits()
		if m.GetEvent() == nil {
			continue
		}
		for _, ev := range append([]*pb.DownloadEvent{wantEvent(t, m, m.GetEvent().GetLeaseId())}, m.GetMoreEvents()...) {
			if ev.GetCompleted() != nil {
				seqs[ev.GetLeaseId()] = ev.GetSequence()
			}
		}
	}
	if credits != 3 {
		t.Fatalf("%d credits returned, want 3", credits)
	}
	acks := &pb.WorkResponse{Msg: &pb.WorkResponse_Ack{Ack: &pb.Ack{LeaseId: "L1", Sequence: seqs["L1"]}}}
	for _, id := range []string{"L2", "L3"} {
		acks.MoreAcks = append(acks.MoreAcks, &pb.Ack{LeaseId: id, Sequence: seqs[id]})
	}
	s.push(t, acks)
	h.waitLeases(t, 0)
}

// Without a Welcome accepting batches (an older coordinator, or one that accepts folding
// only), nothing is batched, however much is queued.
func TestWorkNoBatchWithoutWelcome(t *testing.T) {
	pdf := pdfBody(300_000, 44)
	g := newGatedOrigin(t, pdf)
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	h := newWorkHarness(t, func(c *Config) { c.Clock, c.Slots = clk, 4 })
	s := h.stream(t)
	s.next(t)
	s.push(t, &pb.WorkResponse{Msg: &pb.WorkResponse_Welcome{Welcome: &pb.Welcome{FoldEvents: true, StartHold: durationpb.New(time.Second)}}})
	for _, id := range []string{"L1", "L2", "L3"} {
		s.push(t, assign(id, g.URL+"/gate"))
	}
	for range 3 {
		g.waitFirstHalf(t)
	}
	h.waitHeld(t, 3)
	clk.Advance(time.Second)
	for range 3 {
		if m := s.nextAny(t); m.GetEvent().GetStarted() == nil || len(m.GetMoreEvents()) > 0 {
			t.Fatalf("got %v, want a started event on its own", m)
		}
	}
}

// waitHeld waits until the fetcher holds n started events. It polls (the downloads run on
// their own goroutines and a held start wakes no waitFor caller): the sleep paces the polling,
// it does not synchronise.
func (h *workHarness) waitHeld(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for {
		h.tf.mu.Lock()
		held := len(h.tf.book.held)
		h.tf.mu.Unlock()
		if held == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d started events held, want %d", held, n)
		}
		time.Sleep(time.Millisecond)
	}
}
