package validate

import (
	"net/url"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func goodCompletion() *pb.DownloadCompleted {
	sha := strings.Repeat("ab", 32)
	return &pb.DownloadCompleted{Sha256: sha, Size: 10, BlobKey: ContentKey(sha), FinalUrl: "https://o.example/x.pdf", ContentType: "application/pdf"}
}

func ev(kind func(*pb.DownloadEvent)) *pb.WorkRequest {
	e := &pb.DownloadEvent{LeaseId: "l", Attempt: 1, Sequence: 1}
	kind(e)
	return &pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: e}}
}

// moreEvents appends n copies of m's event (each its own message, sequence numbers
// following it) to m.more_events.
func moreEvents(n int, m *pb.WorkRequest) *pb.WorkRequest {
	for i := range n {
		e := proto.Clone(m.GetEvent()).(*pb.DownloadEvent)
		if e == nil {
			e = &pb.DownloadEvent{LeaseId: "l", Attempt: 1, Kind: &pb.DownloadEvent_Completed{Completed: goodCompletion()}}
		}
		e.Sequence += int64(i + 1)
		m.MoreEvents = append(m.MoreEvents, e)
	}
	return m
}

// foldedCredits sets WorkRequest.folded_credits on m.
func foldedCredits(n int32, m *pb.WorkRequest) *pb.WorkRequest {
	m.FoldedCredits = n
	return m
}

func TestWorkRequest(t *testing.T) {
	hello := func(h *pb.Hello) *pb.WorkRequest { return &pb.WorkRequest{Msg: &pb.WorkRequest_Hello{Hello: h}} }
	tests := []struct {
		name  string
		first bool
		m     *pb.WorkRequest
		field string // "" means valid
	}{
		{"hello", true, hello(&pb.Hello{FetcherId: "f-1", BootId: "b", Slots: 16}), ""},
		{"hello max slots", true, hello(&pb.Hello{FetcherId: "f", Slots: MaxFetcherSlots}), ""},
		{"hello slots too many", true, hello(&pb.Hello{FetcherId: "f", Slots: MaxFetcherSlots + 1}), "hello.slots"},
		{"hello max prefetch", true, hello(&pb.Hello{FetcherId: "f", Slots: 1, Prefetch: MaxFetcherPrefetch}), ""},
		{"hello prefetch too many", true, hello(&pb.Hello{FetcherId: "f", Slots: 1, Prefetch: MaxFetcherPrefetch + 1}), "hello.prefetch"},
		{"hello negative prefetch", true, hello(&pb.Hello{FetcherId: "f", Slots: 1, Prefetch: -1}), "hello.prefetch"},
		{"hello id with space", true, hello(&pb.Hello{FetcherId: "a b", Slots: 1}), "hello.fetcher_id"},
		{"hello boot too long", true, hello(&pb.Hello{FetcherId: "f", Slots: 1, BootId: strings.Repeat("b", 65)}), "hello.boot_id"},
		{"hello in-flight without id", true, hello(&pb.Hello{FetcherId: "f", Slots: 1, InFlight: []*pb.InFlightLease{{Attempt: 1}}}), "hello.in_flight[0].lease_id"},
		{"second hello", false, hello(&pb.Hello{FetcherId: "f", Slots: 1}), "hello"},
		{"heartbeat first", true, &pb.WorkRequest{Msg: &pb.WorkRequest_Heartbeat{Heartbeat: &pb.Heartbeat{}}}, "hello"},
		{"heartbeat", false, &pb.WorkRequest{Msg: &pb.WorkRequest_Heartbeat{Heartbeat: &pb.Heartbeat{}}}, ""},
		{"credits 0", false, &pb.WorkRequest{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{}}}, "credits.credits"},
		{"hello folding", true, hello(&pb.Hello{FetcherId: "f", Slots: 1, FoldEvents: true}), ""},
		{"folded credits on an event", false, foldedCredits(MaxFetcherSlots, ev(func(e *pb.DownloadEvent) {
			e.Kind = &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 1, Total: 1, BodyReceived: true}}
		})), ""},
		{"folded credits negative", false, foldedCredits(-1, ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: goodCompletion()} })), "folded_credits"},
		{"folded credits huge", false, foldedCredits(MaxFetcherSlots+1, ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: goodCompletion()} })), "folded_credits"},
		{"folded credits min int32", false, foldedCredits(-2147483648, ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: goodCompletion()} })), "folded_credits"},
		{"folded credits on hello", true, foldedCredits(1, hello(&pb.Hello{FetcherId: "f", Slots: 1})), "folded_credits"},
		{"folded credits on credits", false, foldedCredits(1, &pb.WorkRequest{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: 1}}}), "folded_credits"},
		{"folded credits on heartbeat", false, foldedCredits(1, &pb.WorkRequest{Msg: &pb.WorkRequest_Heartbeat{Heartbeat: &pb.Heartbeat{}}}), "folded_credits"},
		{"folded credits on draining", false, foldedCredits(1, &pb.WorkRequest{Msg: &pb.WorkRequest_Draining{Draining: &pb.Draining{}}}), "folded_credits"},
		{"folded start on a failure", false, ev(func(e *pb.DownloadEvent) {
			e.FoldedStart = true
			e.Kind = &pb.DownloadEvent_Failed{Failed: &pb.DownloadFailed{Class: 2, Reason: 14}}
		}), ""},
		{"folded start on a started event", false, ev(func(e *pb.DownloadEvent) {
			e.FoldedStart = true
			e.Kind = &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{}}
		}), "event.folded_start"},
		{"empty", false, &pb.WorkRequest{}, "msg"},
		{"hello batching", true, hello(&pb.Hello{FetcherId: "f", Slots: 1, FoldEvents: true, BatchEvents: true}), ""},
		{"batch of events", false, moreEvents(MaxWorkBatch-1, ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: goodCompletion()} })), ""},
		{"batch too long", false, moreEvents(MaxWorkBatch, ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: goodCompletion()} })), "more_events"},
		{"more events on credits", false, moreEvents(1, &pb.WorkRequest{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: 1}}}), "more_events"},
		{"more events on hello", true, moreEvents(1, hello(&pb.Hello{FetcherId: "f", Slots: 1, BatchEvents: true})), "more_events"},
		{"more events null", false, func() *pb.WorkRequest {
			m := moreEvents(2, ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: goodCompletion()} }))
			m.MoreEvents[1] = nil
			return m
		}(), "more_events[1]"},
		{"more events bad key", false, func() *pb.WorkRequest {
			m := moreEvents(3, ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: goodCompletion()} }))
			m.MoreEvents[2].GetCompleted().BlobKey = "../../etc/passwd"
			return m
		}(), "more_events[2].completed.blob_key"},
		{"more events folded start on started", false, func() *pb.WorkRequest {
			m := moreEvents(1, ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: goodCompletion()} }))
			m.MoreEvents[0].FoldedStart = true
			m.MoreEvents[0].Kind = &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{}}
			return m
		}(), "more_events[0].folded_start"},
		{"completed", false, ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: goodCompletion()} }), ""},
		{"completed bad key", false, ev(func(e *pb.DownloadEvent) {
			c := goodCompletion()
			c.BlobKey = "../../etc/passwd"
			e.Kind = &pb.DownloadEvent_Completed{Completed: c}
		}), "event.completed.blob_key"},
		{"completed zero size", false, ev(func(e *pb.DownloadEvent) {
			c := goodCompletion()
			c.Size = 0
			e.Kind = &pb.DownloadEvent_Completed{Completed: c}
		}), "event.completed.size"},
		{"completed final url ftp", false, ev(func(e *pb.DownloadEvent) {
			c := goodCompletion()
			c.FinalUrl = "ftp://x/y"
			e.Kind = &pb.DownloadEvent_Completed{Completed: c}
		}), "event.completed.final_url"},
		{"failed unknown reason", false, ev(func(e *pb.DownloadEvent) {
			e.Kind = &pb.DownloadEvent_Failed{Failed: &pb.DownloadFailed{Reason: 999}}
		}), "event.failed.reason"},
		{"resolved", false, ev(func(e *pb.DownloadEvent) {
			e.Kind = &pb.DownloadEvent_Resolved{Resolved: &pb.ResolveResult{CandidateUrls: []string{"https://repo.example/a.pdf"}, Note: "n", FinalUrl: "https://api.example/x"}}
		}), ""},
		{"resolved too many", false, ev(func(e *pb.DownloadEvent) {
			e.Kind = &pb.DownloadEvent_Resolved{Resolved: &pb.ResolveResult{CandidateUrls: strings.Split(strings.Repeat("https://a.example/x ", 9), " ")[:9]}}
		}), "event.resolved.candidate_urls"},
		{"resolved candidate not http", false, ev(func(e *pb.DownloadEvent) {
			e.Kind = &pb.DownloadEvent_Resolved{Resolved: &pb.ResolveResult{CandidateUrls: []string{"file:///etc/passwd"}}}
		}), "event.resolved.candidate_urls[0]"},
		{"resolved note too long", false, ev(func(e *pb.DownloadEvent) {
			e.Kind = &pb.DownloadEvent_Resolved{Resolved: &pb.ResolveResult{Note: strings.Repeat("n", MaxResolveNoteBytes+1)}}
		}), "event.resolved.note"},
		{"resolved forward not http", false, ev(func(e *pb.DownloadEvent) {
			e.Kind = &pb.DownloadEvent_Resolved{Resolved: &pb.ResolveResult{ForwardUrl: "gopher://pub.example/a"}}
		}), "event.resolved.forward_url"},
		{"resolved forward relative", false, ev(func(e *pb.DownloadEvent) {
			e.Kind = &pb.DownloadEvent_Resolved{Resolved: &pb.ResolveResult{ForwardUrl: "/article/1"}}
		}), "event.resolved.forward_url"},
		{"resolved forward too long", false, ev(func(e *pb.DownloadEvent) {
			e.Kind = &pb.DownloadEvent_Resolved{Resolved: &pb.ResolveResult{ForwardUrl: "https://pub.example/" + strings.Repeat("a", MaxURLBytes)}}
		}), "event.resolved.forward_url"},
		{"progress negative", false, ev(func(e *pb.DownloadEvent) {
			e.Kind = &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: -1}}
		}), "event.progress.bytes"},
		{"attempt 0", false, &pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: &pb.DownloadEvent{LeaseId: "l", Sequence: 1,
			Kind: &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{}}}}}, "event.attempt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := WorkRequest(tt.first, tt.m)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			ve, ok := err.(*Error)
			if !ok {
				t.Fatalf("got %v, want a violation of %s", err, tt.field)
			}
			if ve.Violations[0].Field != tt.field {
				t.Fatalf("first violation %q, want field %s", ve.Violations[0], tt.field)
			}
		})
	}
}

// FuzzWorkRequest checks that any byte string a peer sends either fails to decode or is
// judged without panicking, and that what is accepted respects the limits the coordinator
// relies on. CI runs the seeds only (go test); fuzz with go test -fuzz FuzzWorkRequest.
func FuzzWorkRequest(f *testing.F) {
	seeds := []*pb.WorkRequest{
		{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: "f", BootId: "b", Slots: 16, InFlight: []*pb.InFlightLease{{LeaseId: "l", Attempt: 1}}}}},
		{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: "x", Slots: 2147483647}}},
		{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: "p", Slots: 4, Prefetch: 8}}},
		{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: "q", Slots: 4, Prefetch: -2147483648}}},
		{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: 3}}},
		ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: goodCompletion()} }),
		ev(func(e *pb.DownloadEvent) {
			e.Kind = &pb.DownloadEvent_Completed{Completed: &pb.DownloadCompleted{Sha256: "not-a-sha", Size: -5}}
		}),
		ev(func(e *pb.DownloadEvent) {
			e.Kind = &pb.DownloadEvent_Failed{Failed: &pb.DownloadFailed{Class: 1, Reason: 14, HttpStatus: 503, Message: "x"}}
		}),
		{Msg: &pb.WorkRequest_Draining{Draining: &pb.Draining{Reason: "bye"}}},
		{},
		{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: "r", Slots: 2, FoldEvents: true}}},
		foldedCredits(3, ev(func(e *pb.DownloadEvent) {
			e.FoldedStart = true
			e.Kind = &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 1, Total: 1, BodyReceived: true}}
		})),
		foldedCredits(-7, ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Started{Started: &pb.DownloadStarted{}} })),
		foldedCredits(2147483647, &pb.WorkRequest{Msg: &pb.WorkRequest_Heartbeat{Heartbeat: &pb.Heartbeat{}}}),
		{Msg: &pb.WorkRequest_Hello{Hello: &pb.Hello{FetcherId: "s", Slots: 2, FoldEvents: true, BatchEvents: true}}},
		foldedCredits(2, moreEvents(3, ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: goodCompletion()} }))),
		moreEvents(1, &pb.WorkRequest{Msg: &pb.WorkRequest_Draining{Draining: &pb.Draining{Reason: "bye"}}}),
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(true, b)
		f.Add(false, b)
	}
	f.Fuzz(func(t *testing.T, first bool, data []byte) {
		m := &pb.WorkRequest{}
		if proto.Unmarshal(data, m) != nil {
			return
		}
		if WorkRequest(first, m) != nil {
			return
		}
		if first != (m.GetHello() != nil) {
			t.Fatalf("accepted %v as first=%v", m, first)
		}
		if h := m.GetHello(); h != nil && (h.GetSlots() < 1 || h.GetSlots() > MaxFetcherSlots || len(h.GetInFlight()) > MaxInFlight ||
			h.GetPrefetch() < 0 || h.GetPrefetch() > MaxFetcherPrefetch) {
			t.Fatalf("accepted hello %v", h)
		}
		if c := m.GetEvent().GetCompleted(); c != nil && (c.GetSize() < 1 || c.GetBlobKey() != ContentKey(c.GetSha256())) {
			t.Fatalf("accepted completion %v", c)
		}
		if n := m.GetFoldedCredits(); n < 0 || n > MaxFetcherSlots || n != 0 && m.GetEvent() == nil {
			t.Fatalf("accepted folded credits %d on %v", n, m)
		}
		if ev := m.GetEvent(); ev.GetFoldedStart() && ev.GetStarted() != nil {
			t.Fatalf("accepted a folded start on a started event %v", ev)
		}
		if more := m.GetMoreEvents(); len(more) > 0 && (m.GetEvent() == nil || len(more) > MaxWorkBatch-1) {
			t.Fatalf("accepted %d more events on %v", len(more), m)
		}
		for _, ev := range m.GetMoreEvents() {
			if WorkRequest(false, &pb.WorkRequest{Msg: &pb.WorkRequest_Event{Event: ev}}) != nil {
				t.Fatalf("accepted a batch with an invalid event %v", ev)
			}
		}
	})
}

// TestWorkRequestEventAllocs: validating the usual events (body received, completed) costs no
// allocation (the fetchers send two or three per paper).
func TestWorkRequestEventAllocs(t *testing.T) {
	received := ev(func(e *pb.DownloadEvent) {
		e.Kind = &pb.DownloadEvent_Progress{Progress: &pb.DownloadProgress{Bytes: 1, Total: 1, BodyReceived: true}}
	})
	c := goodCompletion()
	c.FinalUrl = "" // url.Parse allocates
	completed := ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: c} })
	batch := moreEvents(MaxWorkBatch-1, ev(func(e *pb.DownloadEvent) { e.Kind = &pb.DownloadEvent_Completed{Completed: c} }))
	for _, m := range []*pb.WorkRequest{received, completed, batch} {
		if err := WorkRequest(false, m); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(100, func() { _ = WorkRequest(false, m) }); n != 0 {
			t.Errorf("%v: %v allocations, want 0", m, n)
		}
	}
}

func TestIsContentKey(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	if !isContentKey(ContentKey(sha), sha) {
		t.Error("ContentKey(sha) refused")
	}
	other := strings.Repeat("ac", 32)
	for _, k := range []string{"", "sha256/", ContentKey(other), "sha256/ab/" + sha + ".pdx", "sha256/ab-" + sha + ".pdf",
		"sha255/ab/" + sha + ".pdf", "sha256/ac/" + sha + ".pdf", ContentKey(sha) + "x", "x" + ContentKey(sha)} {
		if isContentKey(k, sha) {
			t.Errorf("%q accepted", k)
		}
	}
}

// TestPaperSpecAllocs: a valid paper without metadata costs only url.Parse's allocations and
// its one URL's path (papers are validated twice per paper by paperfetch get, once more by the
// coordinator).
func TestPaperSpecAllocs(t *testing.T) {
	p := &pb.PaperSpec{PaperId: "p-1", Urls: []string{"https://a.org/p.pdf"}}
	if err := PaperSpec("", p); err != nil {
		t.Fatal(err)
	}
	parse := testing.AllocsPerRun(100, func() { _, _ = url.Parse("https://a.org/p.pdf") })
	if n := testing.AllocsPerRun(100, func() { _ = PaperSpec("", p) }); n > parse+1 {
		t.Errorf("%v allocations, want at most %v (url.Parse's %v and the path urls[0])", n, parse+1, parse)
	}
}
