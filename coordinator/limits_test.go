package coordinator

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// The harness's client keeps gRPC's default 4 MiB receive limit, like Python, Node and grpcurl.
const defaultClientLimit = 4 << 20

// bigPaper is a paper at the documented limits: 16 URLs of ~4 KB and 16 KiB of metadata.
func bigPaper(id string) *pb.PaperSpec {
	p := &pb.PaperSpec{PaperId: id, Metadata: map[string]string{}}
	for i := range validate.MaxURLsPerPaper {
		p.Urls = append(p.Urls, fmt.Sprintf("https://h.example/%s/%d/%s", id, i, strings.Repeat("u", validate.MaxURLBytes-64)))
	}
	for i := range 8 {
		p.Metadata[fmt.Sprint("k", i)] = strings.Repeat("m", validate.MaxMetadataBytes/8-8)
	}
	if err := validate.PaperSpec("", p); err != nil {
		panic(err)
	}
	return p
}

// Pages are cut by bytes as well as count, so every default page fits a default client
// (issue 13, item 3: 150 papers at the limits broke ListPapers' default page).
func TestListPapersPagesByBytes(t *testing.T) {
	h := startHarness(t, func(c *Config) {
		c.NoSync = true
	})
	ctx := ctxT(t)
	var ps []*pb.PaperSpec
	for i := range 150 {
		ps = append(ps, bigPaper(fmt.Sprint("p", i)))
	}
	if _, err := h.api.CreateBatch(ctx, &pb.CreateBatchRequest{BatchId: "big"}); err != nil {
		t.Fatal(err)
	}
	for c := range 5 { // 30 papers (2.5 MB) per chunk: under the server's receive limit
		if _, err := h.api.AppendPapers(ctx, &pb.AppendPapersRequest{BatchId: "big", ChunkIndex: int64(c), Papers: ps[c*30 : c*30+30]}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	tok := ""
	pages := 0
	for {
		r, err := h.api.ListPapers(ctx, &pb.ListPapersRequest{BatchId: "big", PageToken: tok})
		if err != nil {
			t.Fatalf("ListPapers page %d: %v", pages, err)
		}
		pages++
		if n := proto.Size(r); n > defaultClientLimit {
			t.Fatalf("page of %d bytes", n)
		}
		for _, p := range r.GetPapers() {
			if seen[p.GetSpec().GetPaperId()] {
				t.Fatalf("paper %s twice", p.GetSpec().GetPaperId())
			}
			seen[p.GetSpec().GetPaperId()] = true
		}
		if tok = r.GetNextPageToken(); tok == "" {
			break
		}
	}
	if len(seen) != 150 || pages < 3 {
		t.Fatalf("%d papers in %d pages", len(seen), pages)
	}
}

func TestListBatchesPagesByBytesAndLabelsAreBounded(t *testing.T) {
	h := startHarness(t, func(c *Config) {
		c.NoSync = true
	})
	ctx := ctxT(t)
	labels := map[string]string{}
	for i := range validate.MaxLabels {
		labels[fmt.Sprintf("%0128d", i)] = strings.Repeat("v", validate.MaxLabelValueBytes)
	}
	const n = 150
	for i := range n {
		if _, err := h.api.CreateBatch(ctx, &pb.CreateBatchRequest{BatchId: fmt.Sprint("b", i), Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	// A label beyond the limits is refused, even by a server without the validating
	// interceptor: one 10 MB label made GetBatch fail for every default client.
	_, err := h.api.CreateBatch(ctx, &pb.CreateBatchRequest{BatchId: "huge", Labels: map[string]string{"k": strings.Repeat("v", 2<<20)}})
	wantBadRequest(t, err, `labels["k"]`)
	_, err = h.api.SubmitBatch(ctx, &pb.SubmitBatchRequest{Papers: specs("x", 1, 1), Labels: map[string]string{"": "v"}})
	wantBadRequest(t, err, `labels[""]`)

	seen := 0
	tok := ""
	for pages := 0; ; pages++ {
		r, err := h.api.ListBatches(ctx, &pb.ListBatchesRequest{PageSize: validate.MaxListBatchesPageSize, PageToken: tok})
		if err != nil {
			t.Fatalf("ListBatches page %d: %v", pages, err)
		}
		if sz := proto.Size(r); sz > defaultClientLimit {
			t.Fatalf("page of %d bytes", sz)
		}
		seen += len(r.GetBatches())
		if tok = r.GetNextPageToken(); tok == "" {
			break
		}
	}
	if seen != n {
		t.Fatalf("listed %d batches, want %d", seen, n)
	}
}
