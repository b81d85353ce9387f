package coordinator

import (
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/paperfetch/paperfetch/internal/clock"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// engHarness drives an engine one iteration at a time through the production iteration
// (loop.iterate), on a bbolt store in a temporary directory or, with newMemEngHarness, on an
// in-memory store (memKV).
type engHarness struct {
	t     testing.TB
	cfg   Config
	clk   *clock.Fake
	mem   *memKV // nil: bbolt in cfg.DataDir
	st    *store
	l     *loop
	e     *engine
	inbox chan message
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// newEngHarness drives an engine on testConfig(t, mutate), on a fake clock, without fsync,
// with a seeded random source.
func newEngHarness(t testing.TB, mutate func(*Config)) *engHarness {
	t.Helper()
	return newHarnessOn(t, testConfig(t, mutate), nil)
}

// newMemEngHarness is newEngHarness on an in-memory store.
func newMemEngHarness(t testing.TB, mutate func(*Config)) *engHarness {
	t.Helper()
	return newHarnessOn(t, configIn(t, "(in memory)", mutate), newMemKV())
}

func newHarnessOn(t testing.TB, cfg Config, mem *memKV) *engHarness {
	t.Helper()
	clk := clock.NewFake(t0)
	cfg.Clock = clk
	cfg.NoSync = true
	if cfg.Rand == nil {
		cfg.Rand = rand.NewPCG(1, 2)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := &engHarness{t: t, cfg: cfg.withDefaults(), clk: clk, mem: mem, inbox: make(chan message, harnessInbox)}
	h.open()
	t.Cleanup(h.close)
	return h
}

// close closes the store and drops the engine (a property test makes thousands of harnesses,
// each with a cleanup registered on the test).
func (h *engHarness) close() {
	if h.st != nil {
		h.l.stored.release()
		_ = h.st.close()
		h.st, h.l, h.e, h.mem = nil, nil, nil, nil
	}
}

func (h *engHarness) open() {
	h.t.Helper()
	var st *store
	if h.mem != nil {
		st = &store{kv: h.mem, id: "memstore0", leaseKey: make([]byte, 32)}
	} else {
		var err error
		if st, err = openStore(h.cfg.DataDir, time.Second, true); err != nil {
			h.t.Fatal(err)
		}
	}
	m, _ := newMetrics(nil, func() float64 { return 0 })
	h.st = st
	h.l = newLoop(h.cfg, st, m, h.inbox, nil)
	h.e = h.l.e
	if err := h.e.load(h.clk.Now()); err != nil {
		h.t.Fatal(err)
	}
	h.step()
}

// restart simulates a crash after the last commit: a new engine loads the store.
func (h *engHarness) restart() {
	h.t.Helper()
	h.l.stored.release()
	if err := h.st.close(); err != nil {
		h.t.Fatal(err)
	}
	h.open()
}

// step runs loop iterations, as Run does with nothing in its inboxes, until the engine has
// nothing left to commit or send.
func (h *engHarness) step() {
	h.t.Helper()
	now := h.clk.Now()
	for {
		if err := h.l.iterate(now); err != nil {
			h.t.Fatal(err)
		}
		if !h.e.pending() && len(h.l.held) == 0 {
			h.checkViews()
			return
		}
	}
}

// checkViews checks that, between iterations, reads see exactly the committed state: every
// batch's published view equals its state (a change that does not touch its batch would
// leave the view behind).
func (h *engHarness) checkViews() {
	h.t.Helper()
	for _, b := range h.e.batches {
		if b == nil {
			continue
		}
		if b.view == nil || b.view.stats != b.batchStats {
			h.t.Fatalf("batch %s: view %+v, state %+v", b.id, b.view, b.batchStats)
		}
		if v, ok := h.e.pub.get(b.id); b.deleting {
			if ok && v == b.view {
				h.t.Fatalf("batch %s: being deleted, still published", b.id)
			}
		} else if !ok || v != b.view {
			h.t.Fatalf("batch %s: published %+v, want %+v", b.id, v, b.view)
		}
	}
}

// harnessInbox is the capacity of the harness's inbox: applyAll posts at most this many
// messages for one iteration.
const harnessInbox = 64

// applyAll posts ms (at most harnessInbox) to the loop's inbox and runs iterations until they
// are applied: the first applies them all, as the loop does with the messages it finds waiting.
func (h *engHarness) applyAll(ms ...message) {
	for _, m := range ms {
		h.inbox <- m
	}
	h.step()
}

// apply posts m to the loop's inbox and runs the iteration that applies it.
func (h *engHarness) apply(m message) {
	h.inbox <- m
	h.step()
}

func (h *engHarness) advance(d time.Duration) {
	h.clk.Advance(d)
	h.step()
}

func (h *engHarness) submit(id string, papers []*pb.PaperSpec) submitResult {
	h.t.Helper()
	pp, sum, err := preparePapers("papers", papers)
	if err != nil {
		h.t.Fatal(err)
	}
	r := &submitReq{op: opSubmit, batchID: id, papers: pp, hash: sum, reply: make(chan submitResult, 1)}
	h.apply(r)
	return <-r.reply
}

func (h *engHarness) batch(id string) *batch {
	b, err := h.e.batchByName(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

func (h *engHarness) connect(id string, slots int, inFlight ...*pb.InFlightLease) *fetcherConn {
	h.t.Helper()
	return h.connectPrefetch(id, slots, 0, inFlight...)
}

// connectPrefetch is connect with a prefetch window.
func (h *engHarness) connectPrefetch(id string, slots, prefetch int, inFlight ...*pb.InFlightLease) *fetcherConn {
	h.t.Helper()
	return h.connectHello(&pb.Hello{FetcherId: id, BootId: "b", Slots: int32(slots), Prefetch: int32(prefetch), InFlight: inFlight})
}

// connectHello opens a stream with hello, which the engine must accept.
func (h *engHarness) connectHello(hello *pb.Hello) *fetcherConn {
	h.t.Helper()
	c := newFetcherConn(1 << 16)
	r := &helloMsg{c: c, hello: hello, reply: make(chan error, 1)}
	h.apply(r)
	if err := <-r.reply; err != nil {
		h.t.Fatal(err)
	}
	return c
}

// recv returns what the engine sent to c so far.
func recv(c *fetcherConn) (assigns []*pb.Assign, cancels []string, acks []string) {
	for {
		select {
		case m := <-c.out:
			switch x := m.GetMsg().(type) {
			case *pb.WorkResponse_Assign:
				assigns = append(assigns, x.Assign)
			case *pb.WorkResponse_Cancel:
				cancels = append(cancels, x.Cancel.GetLeaseId())
			case *pb.WorkResponse_Ack:
				acks = append(acks, x.Ack.GetLeaseId())
			}
		default:
			return
		}
	}
}

func (h *engHarness) send(c *fetcherConn, r *pb.WorkRequest) {
	h.apply(&streamMsg{c: c, req: r})
}

func eventReq(a *pb.Assign, seq int64, ev *pb.DownloadEvent) *pb.WorkRequest {
	ev.LeaseId, ev.Attempt, ev.Sequence, ev.BatchId, ev.PaperId = a.GetLeaseId(), a.GetAttempt(), seq, a.GetBatchId(), a.GetPaperId()
	return &pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: ev}}
}

func completedEv(a *pb.Assign) *pb.DownloadEvent {
	sha := fakeSHA(a.GetPaperId())
	return &pb.DownloadEvent{Kind: &pb.DownloadEvent_Completed{Completed: &pb.DownloadCompleted{
		Sha256: sha, Size: 1000, BlobKey: "sha256/" + sha[:2] + "/" + sha + ".pdf", FinalUrl: a.GetUrl()}}}
}

func failedEv(class pb.FailureClass, reason pb.FailureReason, status int32, retryAfter time.Duration) *pb.DownloadEvent {
	f := &pb.DownloadFailed{Class: class, Reason: reason, HttpStatus: status, Message: reason.String()}
	if retryAfter > 0 {
		f.RetryAfter = durationpb.New(retryAfter)
	}
	return &pb.DownloadEvent{Kind: &pb.DownloadEvent_Failed{Failed: f}}
}

func creditsReq(n int) *pb.WorkRequest {
	return &pb.WorkRequest{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: int32(n)}}}
}

func (h *engHarness) paperState(batchID, paperID string) pb.PaperState {
	b := h.batch(batchID)
	idx, ok := h.e.byBatch[batchKey(hashString(paperID), b.idx)]
	if !ok {
		h.t.Fatalf("paper %s/%s unknown", batchID, paperID)
	}
	return pb.PaperState(h.e.papers[idx].state)
}
