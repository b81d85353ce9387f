package roguetest

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Attack 6 (and issue 13's livelock): a second process claiming the id of a live fetcher is
// refused with ALREADY_EXISTS naming the id; the first keeps its stream and its downloads. A
// restarted process (another boot id) takes the id over once the old stream has been silent
// for FetcherSilence (30s by default, on the fake clock).
func TestLiveFetcherIDCannotBeTaken(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.submit("b", 2, "h.example")
	victim := openStream(t, e.gw, hello("pod-1", 2))
	leases := victim.waitAssigns(2)

	imp := openStream(t, e.gw, &pb.WorkRequest{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{
		FetcherId: "pod-1", BootId: "another-process", Slots: 4}}})
	st := imp.waitEnd()
	wantCode(t, "impersonator", st, codes.AlreadyExists)
	if !strings.Contains(st.Message(), `"pod-1"`) || !strings.Contains(st.Message(), "--id") {
		t.Fatalf("the refusal does not name the id and the fix: %q", st.Message())
	}
	var named bool
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.ResourceInfo); ok && ri.GetResourceName() == "pod-1" {
			named = true
		}
	}
	if !named {
		t.Fatalf("no ResourceInfo naming the fetcher: %v", st.Details())
	}
	if victim.ended() {
		t.Fatalf("the victim's stream ended: %v", victim.waitEnd())
	}
	victim.event(leases[0], started(leases[0]))
	victim.event(leases[0], completed(e.storeBlob([]byte("%PDF-1.7 one"), "")))
	victim.waitUntil("the victim's ack", func() bool { return len(victim.acks) == 1 })

	// The victim's process dies without closing its connection: silent for 30s, its id is free.
	e.clk.Advance(31 * time.Second)
	next := openStream(t, e.gw, &pb.WorkRequest{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{
		FetcherId: "pod-1", BootId: "restarted", Slots: 4}}})
	next.waitAssigns(1) // the victim's unfinished paper, re-queued
	victim.waitEnd()
}
