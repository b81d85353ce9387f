package fetcher

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/doiresolve"
)

// A resolution step carries the coordinator's contact address: a fetcher without --contact
// (or with another one) names it in the User-Agent of the request, once; a malformed one is
// not sent.
func TestResolveContactInUserAgent(t *testing.T) {
	var mu sync.Mutex
	var agents []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		agents = append(agents, r.UserAgent())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"best_oa_location": {"pdf_url": "https://repo.example/a.pdf"}}`))
	}))
	defer srv.Close()
	for _, tc := range []struct {
		fetcherContact, stepContact, want string
		wantNot                           string
	}{
		{"", "librarian@example.org", "mailto:librarian@example.org", ""},
		{"ops@example.org", "librarian@example.org", "mailto:librarian@example.org", ""},
		{"librarian@example.org", "librarian@example.org", "mailto:librarian@example.org", ""},
		{"", "bad address\r\nX-Injected: 1", "", "Injected"},
	} {
		tf := newTestFetcher(t, func(c *Config) { c.Contact = tc.fetcherContact })
		mu.Lock()
		agents = nil
		mu.Unlock()
		j := job{url: srv.URL + "/works/doi:10.1/x", timeout: 10 * time.Second, stall: 10 * time.Second}
		res, fail := tf.dl.resolve(context.Background(), j, &pb.ResolveStep{Route: pb.ResolveRoute_RESOLVE_ROUTE_OPENALEX, Doi: "10.1/x", Contact: tc.stepContact}, newRecorder())
		if fail != nil || len(res.GetCandidateUrls()) != 1 {
			t.Fatalf("%+v: %v %v", tc, res, fail)
		}
		mu.Lock()
		ua := agents[0]
		mu.Unlock()
		if tc.want != "" && strings.Count(ua, tc.want) != 1 {
			t.Errorf("%+v: User-Agent %q, want %q once", tc, ua, tc.want)
		}
		if tc.wantNot != "" && strings.Contains(ua, tc.wantNot) {
			t.Errorf("%+v: User-Agent %q", tc, ua)
		}
		if tc.fetcherContact != "" && !strings.Contains(ua, "mailto:"+tc.fetcherContact) {
			t.Errorf("%+v: User-Agent %q lost the fetcher's own contact", tc, ua)
		}
	}
}

// A step with stay_on_host follows the resolver's redirects on its own host and reports a
// redirect to another host (the publisher's landing page) as forward_url, without requesting it;
// without the flag the redirects are followed as before.
func TestResolveStayOnHost(t *testing.T) {
	var pubHits sync.Map
	pub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pubHits.Store(r.URL.Path, true)
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(`<meta name="citation_pdf_url" content="/x.pdf">`))
	}))
	defer pub.Close()
	doi := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/10.1/x" {
			http.Redirect(w, r, "/handle/10.1/x", http.StatusFound) // same host: followed
			return
		}
		http.Redirect(w, r, pub.URL+"/article/x?a=1&b=2", http.StatusFound)
	}))
	defer doi.Close()
	tf := newTestFetcher(t, nil)
	j := job{url: doi.URL + "/10.1/x", timeout: 10 * time.Second, stall: 10 * time.Second}
	step := &pb.ResolveStep{Route: pb.ResolveRoute_RESOLVE_ROUTE_LANDING_PAGE, Doi: "10.1/x", StayOnHost: true}
	res, fail := tf.dl.resolve(context.Background(), j, step, newRecorder())
	if fail != nil || res.GetForwardUrl() != pub.URL+"/article/x?a=1&b=2" || len(res.GetCandidateUrls()) != 0 {
		t.Fatalf("stay on host: %v %v", res, fail)
	}
	if _, hit := pubHits.Load("/article/x"); hit {
		t.Fatal("the other host was requested")
	}
	step.StayOnHost = false
	res, fail = tf.dl.resolve(context.Background(), j, step, newRecorder())
	if fail != nil || res.GetForwardUrl() != "" || len(res.GetCandidateUrls()) != 1 || res.GetCandidateUrls()[0] != pub.URL+"/x.pdf" {
		t.Fatalf("redirects followed: %v %v", res, fail)
	}
}

// A landing page is searched in its first doiresolve.MaxBody bytes only, however large it is
// (a PDF link beyond them is not found); an API answer larger than doiresolve.MaxBody is
// TOO_LARGE; a meta refresh to the page itself is no candidate (a refresh loop; the download
// of a candidate follows no refresh, so a longer loop ends there).
func TestResolveBodyBounds(t *testing.T) {
	pad := strings.Repeat(" ", doiresolve.MaxBody+1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		switch r.URL.Path {
		case "/early":
			_, _ = io.WriteString(w, `<meta name="citation_pdf_url" content="/early.pdf">`+pad)
		case "/late":
			_, _ = io.WriteString(w, pad+`<meta name="citation_pdf_url" content="/late.pdf">`)
		case "/self":
			_, _ = io.WriteString(w, `<meta http-equiv="refresh" content="0; url=/self">`)
		default: // an API answer
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"best_oa_location": {"pdf_url": "https://repo.example/a.pdf"}, "pad": "`+pad+`"}`)
		}
	}))
	defer srv.Close()
	tf := newTestFetcher(t, nil)
	resolve := func(path string, route pb.ResolveRoute) (*pb.ResolveResult, *failure) {
		j := job{url: srv.URL + path, timeout: 30 * time.Second, stall: 30 * time.Second}
		return tf.dl.resolve(context.Background(), j, &pb.ResolveStep{Route: route, Doi: "10.1/x"}, newRecorder())
	}
	landing := pb.ResolveRoute_RESOLVE_ROUTE_LANDING_PAGE
	if res, fail := resolve("/early", landing); fail != nil || len(res.GetCandidateUrls()) != 1 || res.GetCandidateUrls()[0] != srv.URL+"/early.pdf" {
		t.Errorf("early link: %v %v", res, fail)
	}
	if res, fail := resolve("/late", landing); fail != nil || len(res.GetCandidateUrls()) != 0 {
		t.Errorf("link past MaxBody: %v %v, want no candidate", res, fail)
	}
	if res, fail := resolve("/self", landing); fail != nil || len(res.GetCandidateUrls()) != 0 {
		t.Errorf("refresh to itself: %v %v, want no candidate", res, fail)
	}
	if res, fail := resolve("/works/doi:10.1/x", pb.ResolveRoute_RESOLVE_ROUTE_OPENALEX); fail == nil || fail.reason != pb.FailureReason_FAILURE_REASON_TOO_LARGE {
		t.Errorf("large API answer: %v %v, want TOO_LARGE", res, fail)
	}
}
