package fetcher

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

// recordingTap is a BodyTap that keeps every copy it hands out.
type recordingTap struct {
	mu     sync.Mutex
	copies []*recordedCopy
	// failAfter, when > 0, makes each copy's writes fail once it holds this many bytes.
	failAfter int
}

func (t *recordingTap) Open(batchID, paperID string) TapWriter {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := &recordedCopy{batch: batchID, paper: paperID, failAfter: t.failAfter}
	t.copies = append(t.copies, c)
	return c
}

// all returns the copies opened so far.
func (t *recordingTap) all() []*recordedCopy {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]*recordedCopy(nil), t.copies...)
}

// recordedCopy is one TapWriter of recordingTap: its bytes and how it ended.
type recordedCopy struct {
	batch, paper string
	failAfter    int

	mu       sync.Mutex
	buf      bytes.Buffer
	finishes int
	aborts   int
	sha      string
	size     int64
}

func (c *recordedCopy) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.finishes+c.aborts > 0 {
		return 0, errors.New("write after the end")
	}
	if c.failAfter > 0 && c.buf.Len()+len(p) > c.failAfter {
		return 0, errors.New("disk full")
	}
	return c.buf.Write(p)
}

func (c *recordedCopy) Finish(sha string, size int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.finishes++
	c.sha, c.size = sha, size
}

func (c *recordedCopy) Abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborts++
}

// ended returns how the copy ended: "finished", "aborted", "open" or "ended N times".
func (c *recordedCopy) ended() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.finishes+c.aborts > 1:
		return "ended " + strconv.Itoa(c.finishes+c.aborts) + " times"
	case c.finishes == 1:
		return "finished"
	case c.aborts == 1:
		return "aborted"
	}
	return "open"
}

// paperJob names a paper, as a lease's job does: its body is copied to Config.Tap.
func paperJob(j *job) { j.batchID, j.paperID = "b1", "p1" }

// A lease's body is copied to the tap by the writes that hash it: the finished copy holds exactly
// the bytes of the digest and size it is finished with. A download without a paper (a Fetch
// call) opens no copy.
func TestTapGetsTheHashedBytes(t *testing.T) {
	pdf := pdfBody(3<<20+12345, 31) // several reads of the copy buffer
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			for b := pdf; len(b) > 0; {
				n := min(len(b), 7000)
				_, _ = w.Write(b[:n])
				w.(http.Flusher).Flush()
				b = b[n:]
			}
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(pdf)))
		_, _ = w.Write(pdf)
	}))
	t.Cleanup(origin.Close)
	for _, path := range []string{"/whole", "/chunked"} {
		t.Run(path, func(t *testing.T) {
			tap := &recordingTap{}
			tf := newTestFetcher(t, func(c *Config) { c.Tap = tap })
			out, fail, _ := tf.run(t, origin.URL+path, paperJob)
			if fail != nil {
				t.Fatal(fail)
			}
			copies := tap.all()
			if len(copies) != 1 {
				t.Fatalf("%d copies opened, want 1", len(copies))
			}
			c := copies[0]
			if c.batch != "b1" || c.paper != "p1" {
				t.Errorf("opened for %s/%s, want b1/p1", c.batch, c.paper)
			}
			if e := c.ended(); e != "finished" {
				t.Fatalf("copy %s, want finished", e)
			}
			if c.sha != out.sha256 || c.size != out.size || c.sha != sha(pdf) || c.size != int64(len(pdf)) {
				t.Fatalf("finished with %s/%d, outcome %s/%d, body %s/%d", c.sha, c.size, out.sha256, out.size, sha(pdf), len(pdf))
			}
			if !bytes.Equal(c.buf.Bytes(), pdf) {
				t.Fatal("the copy differs from the body")
			}

			if _, fail, _ := tf.run(t, origin.URL+path, nil); fail != nil {
				t.Fatal(fail)
			}
			if n := len(tap.all()); n != 1 {
				t.Fatalf("a download without a paper opened a copy (%d copies)", n)
			}
		})
	}
}

// A copy whose write fails is aborted; the download itself succeeds.
func TestTapWriteErrorAbortsOnlyTheCopy(t *testing.T) {
	pdf := pdfBody(2<<20, 32)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(pdf) }))
	t.Cleanup(origin.Close)
	tap := &recordingTap{failAfter: 1 << 20}
	tf := newTestFetcher(t, func(c *Config) { c.Tap = tap })
	out, fail, _ := tf.run(t, origin.URL+"/x.pdf", paperJob)
	if fail != nil {
		t.Fatal(fail)
	}
	if out.sha256 != sha(pdf) {
		t.Fatalf("outcome %+v", out)
	}
	tf.assertStore(t, blobstore.ContentKey(sha(pdf)))
	if c := tap.all(); len(c) != 1 || c[0].ended() != "aborted" {
		t.Fatalf("copies %v, want one aborted", c)
	}
}

// Every download that does not end with its body committed, or whose body was not received whole
// from its first byte by one response, aborts its copy: a failure (truncated, not a PDF, a
// checksum mismatch, a failed commit), a resumed body, a restart from the first byte after the
// origin ignored or botched the Range request.
func TestTapAborted(t *testing.T) {
	pdf := pdfBody(2<<20, 33)
	t.Run("resumed", func(t *testing.T) {
		for _, mode := range []string{"range", "ignore", "badrange"} {
			t.Run(mode, func(t *testing.T) {
				o := newResumeOrigin(t, pdf)
				tap := &recordingTap{}
				tf := newTestFetcher(t, func(c *Config) { c.Tap = tap })
				_, fail, _ := tf.run(t, o.URL+"/x.pdf", paperJob)
				wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_TRUNCATED)
				o.mode.Store(mode)
				out, fail, rec := tf.run(t, o.URL+"/x.pdf", paperJob)
				if fail != nil {
					t.Fatal(fail)
				}
				if out.sha256 != sha(pdf) || rec.resumed == 0 {
					t.Fatalf("outcome %+v, resume offset %d: not a resumed download", out, rec.resumed)
				}
				copies := tap.all()
				if len(copies) != 2 {
					t.Fatalf("%d copies, want 2", len(copies))
				}
				for i, c := range copies {
					if e := c.ended(); e != "aborted" {
						t.Errorf("copy %d %s, want aborted", i, e)
					}
				}
			})
		}
	})
	t.Run("not a PDF", func(t *testing.T) {
		origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(bytes.Repeat([]byte("plain text "), 10_000))
		}))
		t.Cleanup(origin.Close)
		tap := &recordingTap{}
		tf := newTestFetcher(t, func(c *Config) { c.Tap = tap })
		_, fail, _ := tf.run(t, origin.URL+"/x.pdf", paperJob)
		wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_NOT_PDF)
		if c := tap.all(); len(c) != 1 || c[0].ended() != "aborted" || c[0].buf.Len() != 0 {
			t.Fatalf("copies %v, want one aborted, empty", c)
		}
	})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(pdf) }))
	t.Cleanup(origin.Close)
	t.Run("checksum mismatch", func(t *testing.T) {
		tap := &recordingTap{}
		tf := newTestFetcher(t, func(c *Config) { c.Tap = tap })
		_, fail, _ := tf.run(t, origin.URL+"/x.pdf", func(j *job) { paperJob(j); j.expectedSHA = sha([]byte("other")) })
		wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_CHECKSUM_MISMATCH)
		if c := tap.all(); len(c) != 1 || c[0].ended() != "aborted" {
			t.Fatalf("copies %v, want one aborted", c)
		}
	})
	t.Run("failed commit", func(t *testing.T) {
		tap := &recordingTap{}
		tf := newTestFetcher(t, func(c *Config) { c.Tap = tap })
		tf.dl.beforeCommit = func() {
			// A file where the key's folders go: the commit cannot create them, whether it
			// renames a named spool file or links an unnamed one.
			if err := os.WriteFile(filepath.Join(tf.dir, "sha256"), nil, 0o644); err != nil {
				t.Error(err)
			}
		}
		_, fail, _ := tf.run(t, origin.URL+"/x.pdf", paperJob)
		wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_STORAGE)
		if c := tap.all(); len(c) != 1 || c[0].ended() != "aborted" {
			t.Fatalf("copies %v, want one aborted", c)
		}
	})
	t.Run("dropped", func(t *testing.T) {
		tap := &recordingTap{}
		tf := newTestFetcher(t, func(c *Config) { c.Tap = tap })
		j := job{url: origin.URL + "/x.pdf", maxSize: tf.cfg.MaxSize, timeout: testWait, stall: testWait, store: true, resume: true}
		paperJob(&j)
		r, fail := tf.dl.receive(t.Context(), j, newRecorder())
		if fail != nil {
			t.Fatal(fail)
		}
		tf.dl.drop(r)
		if c := tap.all(); len(c) != 1 || c[0].ended() != "aborted" {
			t.Fatalf("copies %v, want one aborted", c)
		}
	})
}
