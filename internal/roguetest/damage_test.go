package roguetest

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// readPaper reads a paper's PDF through ReadPaper; it returns the bytes and the stream's end.
func (e *env) readPaper(batch, id string) ([]byte, error) {
	e.t.Helper()
	s, err := e.api.ReadPaper(ctxT(e.t), &pb.ReadPaperRequest{BatchId: batch, PaperId: id})
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out.Bytes(), nil
		}
		if err != nil {
			return out.Bytes(), err
		}
		out.Write(m.GetData())
	}
}

// A blob damaged in the store (by anyone with write access to it, or by the store itself) must
// not be handed out again as a cache hit: once ReadPaper has found that it does not match its
// record (DATA_LOSS), the coordinator removes it from the blob store and a later paper with the
// same id or URL is downloaded again, which repairs the blob for every paper that shares it.
func TestDamagedBlobIsNoCacheHit(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.submit("a", 1, "h.example") // paper a-0, https://h.example/a/0.pdf
	r := openStream(t, e.gw, hello("honest", 2))
	a := r.waitAssigns(1)[0]
	content := []byte("%PDF-1.7 the original bytes")
	done := e.storeBlob(content, a.GetUrl())
	r.event(a, started(a))
	r.event(a, completed(done))
	r.waitUntil("the ack", func() bool { return len(r.acks) == 1 })
	r.send(&pb.WorkRequest{Msg: &pb.WorkRequest_Credits{Credits: &pb.Credits{Credits: 1}}})
	if p := e.paper("a", "a-0"); p.GetState() != pb.PaperState_PAPER_STATE_SUCCEEDED {
		t.Fatalf("a-0 is %v", p.GetState())
	}

	// Damage the blob: same size, other bytes.
	damaged := bytes.ToUpper(content)
	if err := e.bucket.WriteAll(ctxT(t), done.GetBlobKey(), damaged, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.readPaper("a", "a-0"); status.Code(err) != codes.DataLoss {
		t.Fatalf("ReadPaper of the damaged blob: %v, want DATA_LOSS", err)
	}
	waitFor(t, "the damaged blob to be removed", func() bool {
		return e.counter("paperfetch_coordinator_blobs_deleted_total", "", "") == 1
	})
	if ok, err := e.bucket.Exists(ctxT(t), done.GetBlobKey()); err != nil || ok {
		t.Fatalf("the damaged blob is still in the store (%v)", err)
	}
	if n := e.counter("paperfetch_coordinator_damaged_blobs_total", "", ""); n != 1 {
		t.Fatalf("damaged_blobs_total = %v, want 1", n)
	}
	// Leases assigned from now on may complete it (those assigned before the removal may not:
	// their fetcher may have found the damaged blob and skipped writing).
	e.clk.Advance(time.Second)

	// The same URL and the same paper id in later batches are downloaded again.
	e.submitPapers("b", []*pb.PaperSpec{
		{PaperId: "by-url", Urls: []string{a.GetUrl()}},
		{PaperId: "a-0", Urls: []string{"https://h.example/other.pdf"}},
	})
	for _, id := range []string{"by-url", "a-0"} {
		if p := e.paper("b", id); p.GetCached() || p.GetState() == pb.PaperState_PAPER_STATE_SUCCEEDED {
			t.Fatalf("b/%s was served from the damaged blob (%v, cached %v)", id, p.GetState(), p.GetCached())
		}
	}
	// A fresh download rewrites the blob: every paper that shares it reads again.
	for _, b := range r.waitAssigns(3)[1:] {
		r.event(b, started(b))
		r.event(b, completed(e.storeBlob(content, b.GetUrl())))
	}
	r.waitUntil("the acks", func() bool { return len(r.acks) == 3 })
	for _, p := range [][2]string{{"a", "a-0"}, {"b", "by-url"}, {"b", "a-0"}} {
		got, err := e.readPaper(p[0], p[1])
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("ReadPaper %s/%s after the new download: %q, %v", p[0], p[1], got, err)
		}
	}
	// And a cache hit again.
	e.submitPapers("c", []*pb.PaperSpec{{PaperId: "again", Urls: []string{a.GetUrl()}}})
	if p := e.paper("c", "again"); !p.GetCached() {
		t.Fatalf("c/again is %v, not a cache hit of the repaired blob", p.GetState())
	}
}
