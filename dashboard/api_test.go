package dashboard_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

const xssID = `<img src=x onerror=alert(1)>`

// watchToEnd follows GET /v1/batches/ID:watch (newline-delimited JSON) to its last message.
func (s *stack) watchToEnd(t *testing.T, id string) *pb.Batch {
	t.Helper()
	r := s.do(t, "GET", "/v1/batches/"+id+":watch", testToken, "")
	ls := lines(r.body)
	if r.status != http.StatusOK || len(ls) == 0 {
		t.Fatalf("watch %s: %d %s", id, r.status, r.body)
	}
	var last struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(ls[len(ls)-1], &last); err != nil {
		t.Fatal(err)
	}
	var m pb.WatchBatchResponse
	if err := protojson.Unmarshal(last.Result, &m); err != nil {
		t.Fatalf("watch message %s: %v", ls[len(ls)-1], err)
	}
	return m.GetBatch()
}

// TestV1 drives every /v1/ route with net/http: submit, chunked create/append/seal, get, list
// with paging, papers with paging and filters, a paper (id with "/"), watch, content, retry,
// cancel, hosts, fetchers; and the error mapping: 401 without a token, 400 naming the field,
// 404 for an unknown batch, 403 for a cross-site browser POST.
func TestV1(t *testing.T) {
	o := newOrigin(t)
	s := startStack(t)

	// 401 without or with a wrong token, for reads, actions and the dashboard's data.
	for _, tok := range []string{"", "wrong"} {
		for _, rq := range [][2]string{{"GET", "/v1/batches"}, {"POST", "/v1/batches/x:cancel"}, {"GET", "/v1/hosts"}, {"GET", "/ui/events"}, {"GET", "/ui/download?batch=x&paper=y"}} {
			r := s.do(t, rq[0], rq[1], tok, "{}")
			if r.status != http.StatusUnauthorized || r.apiError(t).Code != 16 || r.header.Get("WWW-Authenticate") != `Bearer realm="paperfetch"` {
				t.Errorf("%s %s with token %q: %d %s %v", rq[0], rq[1], tok, r.status, r.body, r.header)
			}
		}
	}
	// The page itself holds no data and is served to anyone, with a strict CSP.
	if r := s.do(t, "GET", "/", "", ""); r.status != http.StatusOK || !bytes.Contains(r.body, []byte("app.js")) ||
		!strings.Contains(r.header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("GET /: %d %v", r.status, r.header)
	}

	ok := func(p string) string { return o.URL + "/ok/" + p + ".pdf" }
	papers := []*pb.PaperSpec{
		{PaperId: "10.1000/a.1", Urls: []string{ok("a")}},
		{PaperId: "gone", Urls: []string{o.URL + "/missing/g.pdf"}},
		{PaperId: xssID, Urls: []string{ok("x")}},
	}
	body, err := protojson.Marshal(&pb.SubmitBatchRequest{BatchId: "b1", Papers: papers, Labels: map[string]string{"team": "t"}})
	if err != nil {
		t.Fatal(err)
	}
	var sub pb.SubmitBatchResponse
	s.call(t, "POST", "/v1/batches", string(body), &sub)
	if !sub.GetCreated() || sub.GetBatchId() != "b1" {
		t.Fatalf("submit: %v", &sub)
	}

	// 400 naming the field, for a bad body, a bad query and an unknown field.
	for _, c := range []struct{ method, path, body, field string }{
		{"POST", "/v1/batches", `{"papers":[{"paperId":"p","urls":["ftp://x/y.pdf"]}]}`, "papers[0].urls[0]"},
		{"POST", "/v1/batches", `{"papers":[]}`, "papers"},
		{"GET", "/v1/batches/b1/papers?pageSize=99999", "", "page_size"},
		{"GET", "/v1/batches/b1/papers?states=PAPER_STATE_NOPE", "", "states"},
		{"POST", "/v1/batches", `{"batchId":"z","bogus":1}`, "bogus"},
		{"GET", "/v1/batches/bad%20id", "", "batch_id"},
	} {
		r := s.do(t, c.method, c.path, testToken, c.body)
		if r.status != http.StatusBadRequest || !strings.Contains(r.apiError(t).Message, c.field) {
			t.Errorf("%s %s %s: want 400 naming %s, got %d %s", c.method, c.path, c.body, c.field, r.status, r.body)
		}
	}
	// 404 for an unknown batch or paper.
	for _, p := range []string{"/v1/batches/nope", "/v1/batches/nope/papers", "/v1/batches/b1/papers/nope", "/ui/events?batch=nope"} {
		if r := s.do(t, "GET", p, testToken, ""); r.status != http.StatusNotFound || r.apiError(t).Code != 5 {
			t.Errorf("GET %s: %d %s", p, r.status, r.body)
		}
	}

	b := s.watchToEnd(t, "b1")
	if b.GetState() != pb.BatchState_BATCH_STATE_COMPLETED || b.GetCounts().GetSucceeded() != 2 || b.GetCounts().GetFailed() != 1 {
		t.Fatalf("b1 watched to its end: %v", b)
	}
	var gb pb.GetBatchResponse
	s.call(t, "GET", "/v1/batches/b1", "", &gb)
	if r := gb.GetBatch().GetFailedByReason(); len(r) != 1 || r[0].GetReason() != pb.FailureReason_FAILURE_REASON_NOT_FOUND || r[0].GetCount() != 1 {
		t.Fatalf("failed_by_reason: %v", r)
	}

	// Papers: paging, filters, one paper (with "/" in its id, raw or escaped).
	var page1, page2 pb.ListPapersResponse
	s.call(t, "GET", "/v1/batches/b1/papers?pageSize=2", "", &page1)
	if len(page1.GetPapers()) != 2 || page1.GetNextPageToken() == "" {
		t.Fatalf("papers page 1: %v", &page1)
	}
	s.call(t, "GET", "/v1/batches/b1/papers?pageSize=2&pageToken="+url.QueryEscape(page1.GetNextPageToken()), "", &page2)
	if len(page2.GetPapers()) != 1 || page2.GetNextPageToken() != "" || page2.GetPapers()[0].GetSpec().GetPaperId() != xssID {
		t.Fatalf("papers page 2: %v", &page2)
	}
	var failed pb.ListPapersResponse
	s.call(t, "GET", "/v1/batches/b1/papers?states=PAPER_STATE_FAILED&reasons=FAILURE_REASON_NOT_FOUND", "", &failed)
	if len(failed.GetPapers()) != 1 || failed.GetPapers()[0].GetSpec().GetPaperId() != "gone" {
		t.Fatalf("failed papers: %v", &failed)
	}
	s.call(t, "GET", "/v1/batches/b1/papers?reasons=FAILURE_REASON_TIMEOUT", "", &failed)
	if len(failed.GetPapers()) != 0 {
		t.Fatalf("papers failed by timeout: %v", &failed)
	}
	for _, p := range []string{"/v1/batches/b1/papers/10.1000/a.1", "/v1/batches/b1/papers/10.1000%2Fa.1"} {
		var gp pb.GetPaperResponse
		s.call(t, "GET", p, "", &gp)
		if gp.GetPaper().GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED || gp.GetPaper().GetFinalUrl() != ok("a") {
			t.Fatalf("GET %s: %v", p, &gp)
		}
	}
	var gx pb.GetPaperResponse
	s.call(t, "GET", "/v1/batches/b1/papers/"+url.PathEscape(xssID), "", &gx)
	if gx.GetPaper().GetSpec().GetPaperId() != xssID {
		t.Fatalf("xss paper: %v", &gx)
	}

	// Content: the gateway's JSON stream and the dashboard's raw download give the same bytes.
	r := s.do(t, "GET", "/v1/batches/b1/content/10.1000/a.1", testToken, "")
	var got []byte
	for _, l := range lines(r.body) {
		var m struct {
			Result json.RawMessage `json:"result"`
		}
		var chunk pb.ReadPaperResponse
		if err := json.Unmarshal(l, &m); err != nil || protojson.Unmarshal(m.Result, &chunk) != nil {
			t.Fatalf("content line %s", l)
		}
		got = append(got, chunk.GetData()...)
	}
	if r.status != http.StatusOK || !bytes.Equal(got, pdf("/ok/a.pdf")) {
		t.Fatalf("content: %d, %d bytes", r.status, len(got))
	}
	r = s.do(t, "GET", "/ui/download?batch=b1&paper="+url.QueryEscape("10.1000/a.1"), testToken, "")
	if r.status != http.StatusOK || !bytes.Equal(r.body, pdf("/ok/a.pdf")) || r.header.Get("Content-Type") != "application/pdf" ||
		r.header.Get("Content-Disposition") != `attachment; filename=10.1000_a.1.pdf` {
		t.Fatalf("download: %d %v", r.status, r.header)
	}
	if r := s.do(t, "GET", "/ui/download?batch=b1&paper=gone", testToken, ""); r.status != http.StatusBadRequest || r.apiError(t).Code != 9 {
		t.Fatalf("download of a failed paper: %d %s", r.status, r.body)
	}

	// Retry: the failed paper runs again (and fails again: the origin still answers 404).
	var rr pb.RetryFailedResponse
	s.call(t, "POST", "/v1/batches/b1:retryFailed", "{}", &rr)
	if rr.GetRetried() != 1 || rr.GetBatch().GetState() != pb.BatchState_BATCH_STATE_RUNNING {
		t.Fatalf("retry: %v", &rr)
	}
	if b := s.watchToEnd(t, "b1"); b.GetState() != pb.BatchState_BATCH_STATE_COMPLETED || b.GetCounts().GetFailed() != 1 {
		t.Fatalf("after retry: %v", b)
	}
	// A cross-site browser POST is refused before it reaches the coordinator.
	if r := s.do(t, "POST", "/v1/batches/b1:retryFailed", testToken, "{}", "Sec-Fetch-Site", "cross-site"); r.status != http.StatusForbidden {
		t.Fatalf("cross-site POST: %d %s", r.status, r.body)
	}

	// Chunked: create, append, seal; then cancel a batch that hangs.
	var cb pb.CreateBatchResponse
	s.call(t, "POST", "/v1/batches:create", `{"batchId":"c1"}`, &cb)
	var ap pb.AppendPapersResponse
	s.call(t, "POST", "/v1/batches/c1/chunks", fmt.Sprintf(`{"chunkIndex":"0","papers":[{"paperId":"s1","urls":[%q]}]}`, o.URL+"/slow/1.pdf"), &ap)
	if ap.GetTotalPapers() != 1 {
		t.Fatalf("append: %v", &ap)
	}
	var sb pb.SealBatchResponse
	s.call(t, "POST", "/v1/batches/c1:seal", `{"chunkCount":"1"}`, &sb)
	if sb.GetBatch().GetState() != pb.BatchState_BATCH_STATE_RUNNING {
		t.Fatalf("seal: %v", &sb)
	}
	<-o.slowCalls
	var cc pb.CancelBatchResponse
	s.call(t, "POST", "/v1/batches/c1:cancel", `{"reason":"test"}`, &cc)
	if cc.GetBatch().GetState() != pb.BatchState_BATCH_STATE_CANCELLED {
		t.Fatalf("cancel: %v", &cc)
	}
	if r := s.do(t, "POST", "/v1/batches/c1:retryFailed", testToken, "{}"); r.status != http.StatusBadRequest || r.apiError(t).Code != 9 {
		t.Fatalf("retry of a cancelled batch: %d %s", r.status, r.body)
	}
	s.call(t, "POST", "/v1/batches", `{"batchId":"b3","papers":[{"paperId":"q","urls":["`+ok("q")+`"]}]}`, nil)
	// Batches, newest first, paged.
	var l1, l2 pb.ListBatchesResponse
	s.call(t, "GET", "/v1/batches?pageSize=2", "", &l1)
	if len(l1.GetBatches()) != 2 || l1.GetBatches()[0].GetBatchId() != "b3" || l1.GetNextPageToken() == "" {
		t.Fatalf("batches page 1: %v", &l1)
	}
	s.call(t, "GET", "/v1/batches?pageSize=2&pageToken="+l1.GetNextPageToken(), "", &l2)
	if len(l2.GetBatches()) != 1 || l2.GetBatches()[0].GetBatchId() != "b1" || l2.GetNextPageToken() != "" {
		t.Fatalf("batches page 2: %v", &l2)
	}

	// Hosts and fetchers.
	var hosts pb.ListHostsResponse
	s.call(t, "GET", "/v1/hosts", "", &hosts)
	if len(hosts.GetHosts()) != 1 || hosts.GetHosts()[0].GetName() != strings.TrimPrefix(o.URL, "http://") ||
		hosts.GetHosts()[0].GetSuccesses() < 2 || hosts.GetHosts()[0].GetFailures() < 2 {
		t.Fatalf("hosts: %v", &hosts)
	}
	var fetchers pb.ListFetchersResponse
	s.call(t, "GET", "/v1/fetchers", "", &fetchers)
	if fetchers.GetTotal() != 2 || len(fetchers.GetFetchers()) != 2 || fetchers.GetFetchers()[0].GetSlots() != 4 {
		t.Fatalf("fetchers: %v", &fetchers)
	}
	// Delete: a finished batch goes away; then it is unknown.
	s.call(t, "POST", "/v1/batches", `{"batchId":"gone1","papers":[{"paperId":"q","urls":["`+ok("q")+`"]}]}`, nil)
	s.watchToEnd(t, "gone1")
	var del pb.DeleteBatchResponse
	s.call(t, "DELETE", "/v1/batches/gone1", "", &del)
	if del.GetBatchId() != "gone1" || del.GetPapersDeleted() != 1 {
		t.Fatalf("delete: %v", &del)
	}
	if r := s.do(t, "GET", "/v1/batches/gone1", testToken, ""); r.status != http.StatusNotFound {
		t.Fatalf("deleted batch: %d %s", r.status, r.body)
	}
	// A running batch cannot be deleted: 400 (FAILED_PRECONDITION) with the reason.
	s.call(t, "POST", "/v1/batches", `{"batchId":"busy","papers":[{"paperId":"s2","urls":["`+o.URL+`/slow/2.pdf"]}]}`, nil)
	if r := s.do(t, "DELETE", "/v1/batches/busy", testToken, ""); r.status != http.StatusBadRequest || r.apiError(t).Code != 9 {
		t.Fatalf("delete of a running batch: %d %s", r.status, r.body)
	}
}
