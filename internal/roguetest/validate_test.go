package roguetest

import (
	"math"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Attack 1: one Hello must not kill the coordinator. Impossible Hellos are refused with
// INVALID_ARGUMENT before anything is allocated for them, and the coordinator keeps serving.
func TestImpossibleHelloIsRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.submit("b", 1, "h.example")
	tooMany := make([]*pb.InFlightLease, validate.MaxInFlight+1)
	for i := range tooMany {
		tooMany[i] = &pb.InFlightLease{LeaseId: "x", Attempt: 1}
	}
	for name, first := range map[string]*pb.WorkRequest{
		"max int32 slots":   hello("x", math.MaxInt32),
		"1e6 slots":         hello("x", 1_000_000),
		"negative slots":    hello("x", -1),
		"no fetcher id":     hello("", 4),
		"huge fetcher id":   hello(strings.Repeat("x", 10_000), 4),
		"too many leases":   hello("x", 4, tooMany...),
		"credits first":     {Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: 5}}},
		"empty message":     {},
		"in-flight attempt": hello("x", 4, &pb.InFlightLease{LeaseId: "l", Attempt: -3}),
	} {
		r := openStream(t, e.gw, first)
		wantCode(t, name, r.waitEnd(), codes.InvalidArgument)
		if n := len(r.assigns); n != 0 {
			t.Fatalf("%s: got %d assigns", name, n)
		}
	}
	// The coordinator is alive and an honest fetcher gets the paper.
	if got := e.batch("b").GetTotalPapers(); got != 1 {
		t.Fatalf("batch has %d papers", got)
	}
	ok := openStream(t, e.gw, hello("honest", 1))
	ok.waitAssigns(1)
}

// Malformed events end the stream with INVALID_ARGUMENT; the stream's lease is re-queued and
// the paper never becomes SUCCEEDED from them.
func TestMalformedEventsCloseTheStream(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.submit("b", 1, "h.example")
	valid := e.storeBlob([]byte("%PDF-1.7 valid"), "")
	bad := map[string]func(a *pb.Assign) *pb.DownloadEvent{
		"sha256 not hex": func(*pb.Assign) *pb.DownloadEvent {
			return completed(&pb.DownloadCompleted{Sha256: "not-a-sha", Size: 5, BlobKey: "x"})
		},
		"negative size": func(*pb.Assign) *pb.DownloadEvent {
			c := proto.Clone(valid).(*pb.DownloadCompleted)
			c.Size = -5
			return completed(c)
		},
		"blob key of another sha": func(*pb.Assign) *pb.DownloadEvent {
			c := proto.Clone(valid).(*pb.DownloadCompleted)
			c.BlobKey = validate.ContentKey(strings.Repeat("a", 64))
			return completed(c)
		},
		"upper-case sha": func(*pb.Assign) *pb.DownloadEvent {
			c := proto.Clone(valid).(*pb.DownloadCompleted)
			c.Sha256 = strings.ToUpper(c.Sha256)
			return completed(c)
		},
		"no kind": func(*pb.Assign) *pb.DownloadEvent { return &pb.DownloadEvent{} },
		"huge message": func(*pb.Assign) *pb.DownloadEvent {
			return &pb.DownloadEvent{Kind: &pb.DownloadEvent_Failed{Failed: &pb.DownloadFailed{Message: strings.Repeat("m", 1<<20)}}}
		},
		"zero sequence": func(*pb.Assign) *pb.DownloadEvent {
			ev := started(nil)
			ev.Sequence = -1
			return ev
		},
	}
	for name, mk := range bad {
		r := openStream(t, e.gw, hello("rogue-"+strings.ReplaceAll(name, " ", "-"), 1))
		a := r.waitAssigns(1)[0]
		r.event(a, mk(a))
		wantCode(t, name, r.waitEnd(), codes.InvalidArgument)
		if s := e.paper("b", "b-0").GetState(); s == pb.PaperState_PAPER_STATE_SUCCEEDED {
			t.Fatalf("%s: paper SUCCEEDED", name)
		}
	}
}
