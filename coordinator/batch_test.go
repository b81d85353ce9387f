package coordinator

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// Batched messages (step 9 of the Work protocol): a batch of events is handled exactly as its
// events sent one message each; the stream's writer batches runs of Assigns and Acks.

// summary lists ms sorted (kind, lease, sequence or paper): what an engine sent. Sorted: the
// engine sends some runs in map order (the Cancels of leases that expire together).
func summary(ms []*pb.WorkResponse) []string {
	var out []string
	for _, m := range ms {
		switch x := m.GetMsg().(type) {
		case *pb.WorkResponse_Assign:
			out = append(out, fmt.Sprintf("assign %s %s after %q", x.Assign.GetLeaseId(), x.Assign.GetPaperId(), x.Assign.GetAfterLeaseId()))
		case *pb.WorkResponse_Ack:
			out = append(out, fmt.Sprintf("ack %s %d", x.Ack.GetLeaseId(), x.Ack.GetSequence()))
		case *pb.WorkResponse_Cancel:
			out = append(out, fmt.Sprintf("cancel %s", x.Cancel.GetLeaseId()))
		default:
			out = append(out, fmt.Sprintf("other %v", m))
		}
	}
	slices.Sort(out)
	return out
}

// Two engines fed the same runs of events, one message each on one (the messages waiting
// together in the inbox, as a stream's do when they arrive faster than the loop iterates) and
// batched (event plus more_events, the credits folded into the batch) on the other, end every
// run in the same state: the same papers' states, credits and messages sent.
func TestBatchedEventsHandledAsSeparateOnes(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		mk := func() *engHarness {
			return newMemEngHarness(t, func(c *Config) {
				c.PerHostDelay, c.PerHostConcurrency, c.MaxAttempts = 0, 8, 3
				// No lease expires while the test advances the clock (for the retries' backoff):
				// the engine expires leases in map order, which would make the two engines
				// re-queue papers in different orders whatever the batching.
				c.LeaseTTL, c.StartTimeout, c.DeadlineGrace = time.Hour, 30*time.Minute, time.Hour
			})
		}
		hs, hb := mk(), mk()
		defer hs.close()
		defer hb.close()
		papers := oneHost("p", rapid.IntRange(1, 10).Draw(rt, "papers"))
		hs.submit("b", papers)
		hb.submit("b", papers)
		slots, prefetch := rapid.IntRange(1, 4).Draw(rt, "slots"), rapid.IntRange(0, 2).Draw(rt, "prefetch")
		hello := &pb.Hello{FetcherId: "f", BootId: "b", Slots: int32(slots), Prefetch: int32(prefetch), FoldEvents: true, BatchEvents: true}
		cs, cb := hs.connectHello(hello), hb.connectHello(proto.Clone(hello).(*pb.Hello))
		assigned := map[string]*pb.Assign{} // by lease id: the same on both (same seed, same key)
		seqs := map[string]int64{}
		var ids []string // in the order assigned
		compare := func(what string) {
			ms, mb := drainAll(cs), drainAll(cb)
			for _, m := range ms {
				if a := m.GetAssign(); a != nil {
					assigned[a.GetLeaseId()] = a
					ids = append(ids, a.GetLeaseId())
				}
			}
			if s, b := summary(ms), summary(mb); !slices.Equal(s, b) {
				rt.Fatalf("%s: sent %v one by one, %v batched", what, s, b)
			}
			if cs.credits != cb.credits || hs.e.credits != hb.e.credits {
				rt.Fatalf("%s: credits %d/%d one by one, %d/%d batched", what, cs.credits, hs.e.credits, cb.credits, hb.e.credits)
			}
			for _, p := range papers {
				if s, b := hs.paperState("b", p.GetPaperId()), hb.paperState("b", p.GetPaperId()); s != b {
					rt.Fatalf("%s: paper %s %v one by one, %v batched", what, p.GetPaperId(), s, b)
				}
			}
		}
		compare("connect")
		for step := range rapid.IntRange(1, 12).Draw(rt, "steps") {
			var run []*pb.DownloadEvent
			for range rapid.IntRange(1, 6).Draw(rt, "events") {
				if len(ids) == 0 {
					break
				}
				id := rapid.SampledFrom(ids).Draw(rt, "lease")
				a := assigned[id]
				var ev *pb.DownloadEvent
				switch rapid.IntRange(0, 5).Draw(rt, "kind") {
				case 0:
					ev = startedEv(a)
				case 1:
					ev = &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 100, Total: 100, BodyReceived: true}}}
				case 2:
					ev = completedEv(a)
				case 3:
					ev = failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_TIMEOUT, 0, 0)
				case 4:
					ev = failedEv(pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_ABORTED, 0, 0)
				case 5:
					ev = failedEv(pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_NOT_FOUND, 404, 0)
				}
				ev.FoldedStart = ev.GetStarted() == nil && rapid.Bool().Draw(rt, "foldedStart")
				if dup := rapid.IntRange(0, 7).Draw(rt, "duplicate") == 0; !dup || seqs[id] == 0 {
					seqs[id]++
				}
				run = append(run, eventReq(a, seqs[id], ev).GetEvent())
			}
			if len(run) == 0 {
				break
			}
			credits := int32(rapid.IntRange(0, 2).Draw(rt, "credits"))
			var separate []message
			for i, ev := range run {
				r := &pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: proto.Clone(ev).(*pb.DownloadEvent)}}
				if i == len(run)-1 {
					r.FoldedCredits = credits
				}
				separate = append(separate, &streamMsg{c: cs, req: r})
			}
			hs.applyAll(separate...)
			batch := &pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: run[0]}, MoreEvents: run[1:], FoldedCredits: credits}
			if err := validate.WorkRequest(false, batch); err != nil {
				rt.Fatalf("the batch is invalid: %v", err)
			}
			hb.send(cb, batch)
			compare(fmt.Sprintf("run %d of %d events", step, len(run)))
			if rapid.Bool().Draw(rt, "advance") {
				hs.advance(time.Minute)
				hb.advance(time.Minute)
				compare(fmt.Sprintf("a minute after run %d", step))
			}
		}
	})
}

// drainAll empties c's queue and returns what it held.
func drainAll(c *fetcherConn) []*pb.WorkResponse {
	var out []*pb.WorkResponse
	for len(c.out) > 0 {
		out = append(out, <-c.out)
	}
	return out
}

// recordingSender records what a workWriter sends.
type recordingSender struct{ sent []*pb.WorkResponse }

func (r *recordingSender) Send(m *pb.WorkResponse) error {
	r.sent = append(r.sent, m)
	return nil
}

// The writer of a stream that takes batches sends each run of Assigns (Acks) it finds queued
// as one message, at most validate.MaxWorkBatch, in the loop's order; any other message ends a
// run and goes on its own. For a fetcher that did not ask, every message goes on its own.
func TestWorkWriterBatchesRuns(t *testing.T) {
	assign := func(i int) *pb.WorkResponse {
		return &pb.WorkResponse{Msg: &pb.WorkResponse_Assign{Assign: &pb.Assign{LeaseId: fmt.Sprintf("a%d", i)}}}
	}
	ack := func(i int) *pb.WorkResponse {
		return &pb.WorkResponse{Msg: &pb.WorkResponse_Ack{Ack: &pb.Ack{LeaseId: fmt.Sprintf("k%d", i), Sequence: 2}}}
	}
	var queue []*pb.WorkResponse
	queue = append(queue, ack(0), ack(1), ack(2), assign(0), assign(1), cancelMsg("a0", "x"), ack(3))
	for i := range validate.MaxWorkBatch + 3 {
		queue = append(queue, assign(10+i))
	}
	queue = append(queue, &pb.WorkResponse{Msg: &pb.WorkResponse_Welcome{Welcome: &pb.Welcome{}}}, ack(4))
	flat := func(ms []*pb.WorkResponse) []string {
		var out []string
		for _, m := range ms {
			switch {
			case m.GetAssign() != nil:
				for _, a := range append([]*pb.Assign{m.GetAssign()}, m.GetMoreAssigns()...) {
					out = append(out, "assign "+a.GetLeaseId())
				}
			case m.GetAck() != nil:
				for _, a := range append([]*pb.Ack{m.GetAck()}, m.GetMoreAcks()...) {
					out = append(out, "ack "+a.GetLeaseId())
				}
			default:
				out = append(out, fmt.Sprintf("%T", m.GetMsg()))
			}
		}
		return out
	}
	for _, batch := range []bool{true, false} {
		out := make(chan *pb.WorkResponse, len(queue))
		for _, m := range queue {
			out <- m
		}
		rs := &recordingSender{}
		w := &workWriter{stream: rs, out: out, batch: batch}
		for len(out) > 0 { // as the stream's handler does
			if err := w.send(<-out); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := flat(rs.sent), flat(queue); !slices.Equal(got, want) {
			t.Fatalf("batch %v: sent in the order %v, want %v", batch, got, want)
		}
		var sizes []int
		for _, m := range rs.sent {
			sizes = append(sizes, 1+len(m.GetMoreAssigns())+len(m.GetMoreAcks()))
		}
		want := []int{3, 2, 1, 1, validate.MaxWorkBatch, 3, 1, 1}
		if !batch {
			want = slices.Repeat([]int{1}, len(queue))
		}
		if !slices.Equal(sizes, want) {
			t.Fatalf("batch %v: messages of %v, want %v", batch, sizes, want)
		}
		for _, m := range rs.sent {
			if m.GetAssign() == nil && len(m.GetMoreAssigns()) > 0 || m.GetAck() == nil && len(m.GetMoreAcks()) > 0 {
				t.Fatalf("a batch of one kind on a message of another: %v", m)
			}
		}
	}
	// The loop's messages are not changed (a batch is a new message).
	for _, m := range queue {
		if len(m.GetMoreAssigns())+len(m.GetMoreAcks()) > 0 {
			t.Fatalf("queued message changed: %v", m)
		}
	}
}

// Over gRPC: a fetcher that asks gets a Welcome accepting batches, its batched events are
// handled (acknowledged together), and the Acks come back batched; a fetcher that did not
// ask loses its stream (INVALID_ARGUMENT) when it sends one.
func TestWorkBatchesOverGRPC(t *testing.T) {
	for _, asked := range []bool{true, false} {
		t.Run(fmt.Sprintf("asked=%v", asked), func(t *testing.T) {
			h := startHarness(t, func(c *Config) { c.PerHostConcurrency = 3 })
			if _, err := h.api.SubmitBatch(ctxT(t), &pb.SubmitBatchRequest{BatchId: "b", Papers: oneHost("p", 3)}); err != nil {
				t.Fatal(err)
			}
			stream, err := h.gw.Work(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			hello := &pb.Hello{FetcherId: "f", BootId: "b", Slots: 3, FoldEvents: true, BatchEvents: asked}
			if err := stream.Send(&pb.WorkRequest{Msg: &pb.WorkRequest_Hello{Hello: hello}}); err != nil {
				t.Fatal(err)
			}
			first, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if w := first.GetWelcome(); w == nil || w.GetBatchEvents() != asked {
				t.Fatalf("first message %v, want a Welcome with batch_events %v", first, asked)
			}
			var as []*pb.Assign
			for len(as) < 3 {
				m, err := stream.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if len(m.GetMoreAssigns()) > 0 && !asked {
					t.Fatalf("batched Assigns for a fetcher that did not ask: %v", m)
				}
				if m.GetAssign() != nil {
					as = append(as, m.GetAssign())
					as = append(as, m.GetMoreAssigns()...)
				}
			}
			var run []*pb.DownloadEvent
			for _, a := range as {
				ev := completedEv(a)
				ev.FoldedStart = true
				run = append(run, eventReq(a, 1, ev).GetEvent())
			}
			if err := stream.Send(&pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: run[0]}, MoreEvents: run[1:], FoldedCredits: 3}); err != nil {
				t.Fatal(err)
			}
			if !asked {
				_, err := stream.Recv()
				for err == nil {
					_, err = stream.Recv()
				}
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "batch_events") {
					t.Fatalf("stream ended with %v, want INVALID_ARGUMENT naming batch_events", err)
				}
				return
			}
			acked := map[string]bool{}
			for len(acked) < 3 {
				m, err := stream.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if m.GetAck() != nil {
					for _, a := range append([]*pb.Ack{m.GetAck()}, m.GetMoreAcks()...) {
						acked[a.GetLeaseId()] = true
					}
				}
			}
			for _, a := range as {
				if !acked[a.GetLeaseId()] {
					t.Fatalf("lease %s not acknowledged", a.GetLeaseId())
				}
			}
			b := watchToEnd(t, h, "b")
			if got := b.GetCounts().GetSucceeded(); got != 3 {
				t.Fatalf("%d papers succeeded, want 3", got)
			}
		})
	}
}
