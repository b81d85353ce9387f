package roguetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/auth"
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

// bearer is a per-RPC bearer token over a plaintext loopback connection (tests only).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// Attack 6 with tokens: a fetcher token names the ids it may use. A fetcher holding another
// token cannot use the victim's id (PERMISSION_DENIED), whether the victim is connected or
// not; the victim's own token works; a plain token may use any id that is not live.
func TestFetcherIDBoundToToken(t *testing.T) {
	tokens, err := auth.ParseTokens(strings.NewReader("tok-a fetcher-ids=pod-a\ntok-b fetcher-ids=pod-b-*\ntok-plain\n"))
	if err != nil {
		t.Fatal(err)
	}
	guard := &auth.Guard{Services: map[string]auth.Requirement{
		pb.FetcherGatewayService_ServiceDesc.ServiceName: {Tokens: tokens},
		pb.CoordinatorService_ServiceDesc.ServiceName:    {},
	}}
	e := newEnv(t, envOpts{guard: guard})
	e.submit("b", 1, "h.example")
	gwAs := func(token string) pb.FetcherGatewayServiceClient {
		conn := e.dial(bearer(token))
		t.Cleanup(func() { _ = conn.Close() })
		return pb.NewFetcherGatewayServiceClient(conn)
	}
	// Before the victim connects, and while it is connected.
	for _, connected := range []bool{false, true} {
		r := openStream(t, gwAs("tok-b"), hello("pod-a", 4))
		st := r.waitEnd()
		wantCode(t, "tok-b as pod-a", st, codes.PermissionDenied)
		if !strings.Contains(st.Message(), `"pod-a"`) {
			t.Fatalf("the refusal does not name the id: %q", st.Message())
		}
		if !connected {
			victim := openStream(t, gwAs("tok-a"), hello("pod-a", 1))
			victim.waitAssigns(1)
			defer func() {
				if victim.ended() {
					t.Errorf("the victim's stream ended: %v", victim.waitEnd())
				}
			}()
		}
	}
	ok := openStream(t, gwAs("tok-b"), hello("pod-b-7f3a", 1))
	ok.send(heartbeat())
	plain := openStream(t, gwAs("tok-plain"), hello("pod-a", 1)) // live: the first keeps it
	wantCode(t, "plain token as live pod-a", plain.waitEnd(), codes.AlreadyExists)
	if ok.ended() {
		t.Fatalf("tok-b as pod-b-7f3a refused: %v", ok.waitEnd())
	}
}
