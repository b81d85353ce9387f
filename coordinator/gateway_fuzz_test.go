package coordinator

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// FuzzGatewayMessage feeds one arbitrary message from a rogue stream to the gateway's path:
// validation, then the engine. Lease ids "$0" and "$1" are replaced by the rogue's own leases,
// "$2" and "$3" by an honest fetcher's. Whatever the message, the engine must not panic, the
// honest fetcher's leases must stay its own and running, and the counts must add up. CI runs
// the seeds; fuzz with go test -fuzz FuzzGatewayMessage ./coordinator/.
func FuzzGatewayMessage(f *testing.F) {
	sha := strings.Repeat("ab", 32)
	ev := func(lease string, k *pb.DownloadEvent) *pb.WorkRequest {
		k.LeaseId, k.Attempt, k.Sequence = lease, 1, 5
		return &pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: k}}
	}
	done := &pb.DownloadEvent{Kind: &pb.DownloadEvent_Completed{Completed: &pb.DownloadCompleted{Sha256: sha, Size: 9, BlobKey: validate.ContentKey(sha)}}}
	seeds := []*pb.WorkRequest{
		ev("$0", proto.Clone(done).(*pb.DownloadEvent)),
		ev("$2", proto.Clone(done).(*pb.DownloadEvent)),
		ev("$3", &pb.DownloadEvent{Kind: &pb.DownloadEvent_Failed{Failed: &pb.DownloadFailed{Class: 2, Reason: 7}}}),
		ev("$1", &pb.DownloadEvent{Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 10}}}),
		{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: "honest", Slots: 3, InFlight: []*pb.InFlightLease{{LeaseId: "$2", Attempt: 1}}}}},
		{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: 10_000}}},
		{Msg: &pb.WorkRequest_Draining{}},
		// Folded messages (step 8): credits on another stream's event, huge or negative ones,
		// a folded start on the honest fetcher's lease or on a credit-less heartbeat.
		folded(ev("$2", &pb.DownloadEvent{FoldedStart: true, Kind: &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 1, Total: 1, BodyReceived: true}}}), 10_000),
		folded(ev("$0", &pb.DownloadEvent{FoldedStart: true, Kind: &pb.DownloadEvent_Failed{Failed: &pb.DownloadFailed{Class: 2, Reason: 14}}}), 2),
		folded(ev("$1", proto.Clone(done).(*pb.DownloadEvent)), -1),
		folded(&pb.WorkRequest{Msg: &pb.WorkRequest_Heartbeat{Heartbeat: &pb.Heartbeat{}}}, 5),
		{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: "rogue", Slots: 1, FoldEvents: true}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := &pb.WorkRequest{}
		if proto.Unmarshal(data, m) != nil {
			return
		}
		h := newEngHarness(t, func(c *Config) {
			c.PerHostConcurrency = 10
		})
		h.submit("b", specs("p", 4, 1))
		rogue := h.connect("rogue", 2)
		honest := h.connect("honest", 2)
		ra, _, _ := recv(rogue)
		ha, _, _ := recv(honest)
		if len(ra) != 2 || len(ha) != 2 {
			t.Fatalf("assigns: rogue %d honest %d", len(ra), len(ha))
		}
		ids := map[string]string{"$0": ra[0].GetLeaseId(), "$1": ra[1].GetLeaseId(), "$2": ha[0].GetLeaseId(), "$3": ha[1].GetLeaseId()}
		if e := m.GetEvent(); e != nil {
			if id, ok := ids[e.GetLeaseId()]; ok {
				e.LeaseId = id
			}
		}
		for _, fl := range m.GetHello().GetInFlight() {
			if id, ok := ids[fl.GetLeaseId()]; ok {
				fl.LeaseId = id
			}
		}
		first := m.GetHello() != nil
		if validate.WorkRequest(first, m) != nil {
			return // the gateway closes the stream
		}
		if first {
			c := newFetcherConn(1 << 10)
			r := &helloMsg{c: c, hello: m.GetHello(), reply: make(chan error, 1)}
			h.apply(r)
		} else {
			h.send(rogue, m)
		}
		for _, a := range ha {
			l := h.e.leases[uint32FromLease(t, h, a, "honest")]
			if l == nil || l.conn != honest || h.paperState("b", a.GetPaperId()) != pb.PaperState_PAPER_STATE_DOWNLOADING {
				t.Fatalf("the honest fetcher lost lease %s", a.GetLeaseId())
			}
		}
		// Credits (sent or folded) are the sender's, within maxCredits, and the engine's sum
		// is the streams' (the honest fetcher spent its 2).
		sum := 0
		for _, c := range h.e.conns {
			if c.credits < 0 || c.credits > maxCredits {
				t.Fatalf("fetcher %s holds %d credits", c.id, c.credits)
			}
			if h.e.eligibleConn(c) {
				sum += c.credits
			}
		}
		if honest.credits != 0 || sum != h.e.credits {
			t.Fatalf("honest credits %d; engine %d, streams %d", honest.credits, h.e.credits, sum)
		}
		var n int64
		for _, c := range h.e.counts {
			n += c
		}
		if n != 4 {
			t.Fatalf("counts add up to %d", n)
		}
	})
}

// folded sets r's folded credits.
func folded(r *pb.WorkRequest, n int32) *pb.WorkRequest {
	r.FoldedCredits = n
	return r
}

// uint32FromLease returns the paper index of a lease issued to fetcher.
func uint32FromLease(t *testing.T, h *engHarness, a *pb.Assign, fetcher string) uint32 {
	t.Helper()
	idx, _, ok := h.e.ids.check(a.GetLeaseId(), fetcher)
	if !ok {
		t.Fatalf("lease %s does not verify", a.GetLeaseId())
	}
	return idx
}
