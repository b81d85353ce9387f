package coordinator

import (
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/paperfetch/paperfetch/internal/clock"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// engHarness drives an engine directly, one iteration at a time, like the loop does.
type engHarness struct {
	t   testing.TB
	cfg Config
	clk *clock.Fake
	st  *store
	e   *engine
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// newEngHarness drives an engine on testConfig(t, mutate), on a fake clock, without fsync,
// with a seeded random source.
func newEngHarness(t testing.TB, mutate func(*Config)) *engHarness {
	t.Helper()
	cfg := testConfig(t, mutate)
	clk := clock.NewFake(t0)
	cfg.Clock = clk
	cfg.NoSync = true
	if cfg.Rand == nil {
		cfg.Rand = rand.NewPCG(1, 2)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h := &engHarness{t: t, cfg: cfg.withDefaults(), clk: clk}
	h.open()
	t.Cleanup(h.close)
	return h
}

func (h *engHarness) close() {
	if h.st != nil {
		h.e.endReads()
		_ = h.st.close()
		h.st = nil
	}
}

func (h *engHarness) open() {
	h.t.Helper()
	st, err := openStore(h.cfg.DataDir, time.Second, true)
	if err != nil {
		h.t.Fatal(err)
	}
	m, _ := newMetrics(nil, func() float64 { return 0 })
	h.st = st
	h.e = newEngine(h.cfg, st, m)
	if err := h.e.load(h.clk.Now()); err != nil {
		h.t.Fatal(err)
	}
	h.step()
}

// restart simulates a crash after the last commit: a new engine loads the store.
func (h *engHarness) restart() {
	h.t.Helper()
	h.e.endReads()
	if err := h.st.close(); err != nil {
		h.t.Fatal(err)
	}
	h.open()
}

// step runs the rest of a loop iteration: timers, scheduling, commit, flush.
func (h *engHarness) step() {
	h.t.Helper()
	now := h.clk.Now()
	h.e.advance(now)
	h.e.schedule(now)
	if err := h.e.commit(); err != nil {
		h.t.Fatal(err)
	}
	h.e.flush(now)
	for h.e.pending() {
		if err := h.e.commit(); err != nil {
			h.t.Fatal(err)
		}
		h.e.flush(now)
	}
}

func (h *engHarness) apply(m message) {
	h.e.replies = h.e.replies[:0]
	m.apply(h.e, h.clk.Now())
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
	c := newFetcherConn(1 << 16)
	r := &helloMsg{c: c, hello: &pb.Hello{FetcherId: id, BootId: "b", Slots: int32(slots), InFlight: inFlight}, reply: make(chan error, 1)}
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
