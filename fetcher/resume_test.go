package fetcher

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

// resumeOrigin serves one PDF with an ETag. Its mode decides how it answers: "cut" sends the
// headers of the whole body but only the first half (a truncated transfer); "range" honours
// Range/If-Range (206); "ignore" answers 200 with the whole body whatever the request;
// "badrange" answers 206 with a Content-Range that does not start where asked.
type resumeOrigin struct {
	*httptest.Server
	pdf   []byte
	other []byte
	mode  atomic.Value // string

	mu     sync.Mutex
	ranges []string // Range header of each request ("" when none)
}

func newResumeOrigin(t *testing.T, pdf []byte) *resumeOrigin {
	o := &resumeOrigin{pdf: pdf, other: pdfBody(len(pdf), 99)}
	o.mode.Store("cut")
	const etag = `"v1"`
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.ranges = append(o.ranges, r.Header.Get("Range"))
		o.mu.Unlock()
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "application/pdf")
		w.Header().Set("Accept-Ranges", "bytes")
		switch o.mode.Load().(string) {
		case "cut":
			w.Header().Set("Content-Length", strconv.Itoa(len(pdf)))
			_, _ = w.Write(pdf[:len(pdf)/2])
		case "range":
			http.ServeContent(w, r, "x.pdf", time.Time{}, bytes.NewReader(pdf))
		case "changed":
			// New content under a new ETag: the If-Range no longer matches, so ServeContent
			// answers 200 with the whole new body.
			w.Header().Set("ETag", `"v2"`)
			http.ServeContent(w, r, "x.pdf", time.Time{}, bytes.NewReader(o.other))
		case "ignore":
			w.Header().Set("Content-Length", strconv.Itoa(len(pdf)))
			_, _ = w.Write(pdf)
		case "badrange":
			if r.Header.Get("Range") == "" {
				w.Header().Set("Content-Length", strconv.Itoa(len(pdf)))
				_, _ = w.Write(pdf)
				return
			}
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 10-%d/%d", len(pdf)-1, len(pdf)))
			w.Header().Set("Content-Length", strconv.Itoa(len(pdf)-10))
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(pdf[10:])
		}
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *resumeOrigin) requests() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.ranges...)
}

func TestResume(t *testing.T) {
	pdf := pdfBody(2<<20, 7)
	half := int64(len(pdf) / 2)
	for _, tc := range []struct {
		mode       string
		wantRanges []string // Range headers of the requests after the cut attempt
		wantResume int64
	}{
		{"range", []string{fmt.Sprintf("bytes=%d-", half)}, half},
		{"ignore", []string{fmt.Sprintf("bytes=%d-", half)}, half},
		{"badrange", []string{fmt.Sprintf("bytes=%d-", half), ""}, half},
		{"changed", []string{fmt.Sprintf("bytes=%d-", half)}, half},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			o := newResumeOrigin(t, pdf)
			tf := newTestFetcher(t, nil)
			_, fail, _ := tf.run(t, o.URL+"/x.pdf", nil)
			wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_TRUNCATED)
			if keys := tf.keys(t); len(keys) != 0 {
				t.Fatalf("partial visible in the store: %v", keys)
			}
			if n := len(tf.tempFiles(t)); n != 2 {
				t.Fatalf("%d spool files kept, want the partial body and its sidecar", n)
			}

			o.mode.Store(tc.mode)
			out, fail, rec := tf.run(t, o.URL+"/x.pdf", nil)
			if fail != nil {
				t.Fatal(fail)
			}
			want := pdf
			if tc.mode == "changed" {
				want = o.other
			}
			key := blobstore.ContentKey(sha(want))
			if out.sha256 != sha(want) || out.size != int64(len(want)) {
				t.Fatalf("outcome %+v", out)
			}
			if rec.resumed != tc.wantResume {
				t.Errorf("started.resume_offset = %d, want %d", rec.resumed, tc.wantResume)
			}
			got := o.requests()[1:]
			if fmt.Sprint(got) != fmt.Sprint(tc.wantRanges) {
				t.Errorf("Range headers %q, want %q", got, tc.wantRanges)
			}
			if !bytes.Equal(readKey(t, tf, key), want) {
				t.Fatal("stored bytes differ")
			}
			tf.assertStore(t, key)
		})
	}
}
