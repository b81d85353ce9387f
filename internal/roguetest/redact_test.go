package roguetest

import (
	"strings"
	"testing"
	"time"

	"github.com/paperfetch/paperfetch/coordinator"
	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/syncbuf"
)

// Secrets an origin or a fetcher puts in the URLs and texts it reports: a pre-signed redirect
// target's signature and credential, an API token in a resolver's error.
var secrets = []string{"AKIAROGUESECRET", "deadbeefsignature", "tok3nvalue"}

const signedURL = "https://cdn.example/p.pdf?X-Amz-Credential=AKIAROGUESECRET&X-Amz-Signature=deadbeefsignature&id=7"

// Attack 10: query-string secrets in what a fetcher reports (a completion's final_url, a
// failure's URL and message, a resolution's note) must reach neither the other clients
// (GetPaper, ListPapers, WatchBatch) nor the coordinator's logs, at any level.
func TestReportedSecretsAreRedacted(t *testing.T) {
	logs := &syncbuf.Buffer{}
	noDelay := coordinator.HostLimits{Delay: new(time.Duration(0))}
	e := newEnv(t, envOpts{logs: logs, cfg: func(c *coordinator.Config) {
		c.HostOverrides = map[string]coordinator.HostLimits{"doi.org": noDelay, "api.openalex.org": noDelay, "api.unpaywall.org": noDelay}
	}})
	e.submitPapers("b", []*pb.PaperSpec{
		{PaperId: "done", Urls: []string{"https://h.example/done.pdf"}},
		{PaperId: "failed", Urls: []string{"https://h.example/failed.pdf"}},
		{PaperId: "doi", Doi: "10.1234/abc"},
	})
	r := openStream(t, e.gw, hello("reporter", 3))
	answered := map[string]bool{}
	for {
		var next *pb.Assign
		waitFor(t, "an assign or the end of the batch", func() bool {
			r.mu.Lock()
			for _, a := range r.assigns {
				if !answered[a.GetLeaseId()] {
					next = a
					break
				}
			}
			r.mu.Unlock()
			return next != nil || e.batch("b").GetState() == pb.BatchState_BATCH_STATE_COMPLETED
		})
		if next == nil {
			break
		}
		a := next
		answered[a.GetLeaseId()] = true
		r.event(a, started(a))
		switch {
		case a.GetPaperId() == "done":
			r.event(a, completed(e.storeBlob([]byte("%PDF-1.7 redact"), signedURL)))
		case a.GetPaperId() == "failed":
			r.event(a, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Failed{Failed: &pb.DownloadFailed{
				Class: pb.FailureClass_FAILURE_CLASS_PERMANENT, Reason: pb.FailureReason_FAILURE_REASON_CONNECTION,
				Url: signedURL, Message: `Get "` + signedURL + `&access_token=tok3nvalue": connection refused`,
			}}})
		case a.GetResolve() != nil:
			// Every route finds nothing and says why, quoting a URL with a token.
			r.event(a, &pb.DownloadEvent{Kind: &pb.DownloadEvent_Resolved{Resolved: &pb.ResolveResult{
				Note: "HTTP 500 from https://api.example/works?api_key=tok3nvalue&sig=deadbeefsignature",
			}}})
		default:
			t.Fatalf("unexpected assign %v", a)
		}
		r.send(&pb.WorkRequest{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: 1}}})
	}

	var shown []string
	for _, id := range []string{"done", "failed", "doi"} {
		p := e.paper("b", id)
		shown = append(shown, p.GetFinalUrl(), p.GetLastError())
	}
	if p := e.paper("b", "done"); p.GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED || !strings.Contains(p.GetFinalUrl(), "X-Amz-Signature=REDACTED") {
		t.Errorf("done: %v, final_url %q; want SUCCEEDED with the signature redacted", p.GetState(), p.GetFinalUrl())
	}
	if p := e.paper("b", "doi"); p.GetState() != pb.PaperState_PAPER_STATE_FAILED || !strings.Contains(p.GetLastError(), "api.example") {
		t.Errorf("doi: %v, last_error %q; want FAILED naming the route's note", p.GetState(), p.GetLastError())
	}
	list, err := e.api.ListPapers(ctxT(t), &pb.ListPapersRequest{BatchId: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.GetPapers() {
		shown = append(shown, p.GetFinalUrl(), p.GetLastError())
	}
	watch, err := e.api.WatchBatch(ctxT(t), &pb.WatchBatchRequest{BatchId: "b", IncludePapers: true})
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := watch.Recv()
		if err != nil {
			t.Fatalf("WatchBatch: %v", err)
		}
		for _, u := range m.GetPaperUpdates() {
			shown = append(shown, u.GetUrl(), u.GetLastError())
		}
		if !m.GetMore() {
			break
		}
	}
	all := strings.Join(shown, "\n")
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("a client sees %q:\n%s", s, all)
		}
	}
	r.close()
	log := logs.String()
	if !strings.Contains(log, "reporter") {
		t.Fatalf("the coordinator's log was not captured:\n%s", log)
	}
	for _, s := range secrets {
		if strings.Contains(log, s) {
			t.Errorf("the coordinator's log holds %q:\n%s", s, log)
		}
	}
}
