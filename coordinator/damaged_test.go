package coordinator

import (
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// A blob found damaged stays out of the cache after a restart (each `paperfetch get` is one):
// a later paper with the same id and URL is downloaded again instead of completing as a cache
// hit of a blob that is gone.
func TestDamagedBlobSurvivesRestart(t *testing.T) {
	h := newEngHarness(t, nil)
	h.submit("a", []*pb.PaperSpec{{PaperId: "x", Urls: []string{sharedURL}}})
	c := h.connect("f", 10)
	as, _, _ := recv(c)
	if len(as) != 1 {
		t.Fatalf("%d assigns", len(as))
	}
	h.send(c, eventReq(as[0], 1, completedEv(as[0])))
	h.step()
	h.apply(&blobDamagedMsg{key: completedEv(as[0]).GetCompleted().GetBlobKey()})
	h.restart()
	h.submit("b", []*pb.PaperSpec{{PaperId: "x", Urls: []string{sharedURL}}})
	if b := h.batch("b"); b.cached != 0 {
		t.Fatal("after a restart, x is a cache hit of its damaged blob")
	}
	c = h.connect("f2", 10)
	if as, _, _ = recv(c); len(as) != 1 || as[0].GetPaperId() != "x" {
		t.Fatalf("assigns %v, want x downloaded again", as)
	}
}
