package coordinator

import (
	"errors"
	"strings"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// TestPreparePapersFieldPaths pins the field path and message of each paper a chunk's checks
// refuse (preparePapers formats the path only for an error): the index is the paper's in the
// message, the URL's in the paper.
func TestPreparePapersFieldPaths(t *testing.T) {
	ok := &pb.PaperSpec{PaperId: "a", Urls: []string{"https://a.example/a.pdf"}}
	for _, tc := range []struct {
		bad         *pb.PaperSpec
		field, desc string
	}{
		{&pb.PaperSpec{Urls: ok.Urls}, "papers[1].paper_id", "must be 1 to "},
		{&pb.PaperSpec{PaperId: "a", Urls: ok.Urls}, "papers[1].paper_id", `duplicate of papers[0].paper_id "a"`},
		{&pb.PaperSpec{PaperId: "b", Doi: "not a doi"}, "papers[1].doi", ""},
		{&pb.PaperSpec{PaperId: "b"}, "papers[1].urls", "1 to "},
		{&pb.PaperSpec{PaperId: "b", Urls: []string{"https://b.example/1.pdf", "ftp://b.example/2.pdf"}}, "papers[1].urls[1]", "must be an http or https URL"},
	} {
		_, _, err := preparePapers("papers", []*pb.PaperSpec{ok, tc.bad})
		var ve *validate.Error
		if !errors.As(err, &ve) || len(ve.Violations) != 1 {
			t.Fatalf("%s: err %v, want one violation", tc.field, err)
		}
		if v := ve.Violations[0]; v.Field != tc.field || !strings.HasPrefix(v.Description, tc.desc) {
			t.Errorf("violation %q: %q, want %q: %q...", v.Field, v.Description, tc.field, tc.desc)
		}
	}
}
