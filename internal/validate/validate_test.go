package validate

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func paper(id string, urls ...string) *pb.PaperSpec {
	if len(urls) == 0 {
		urls = []string{"https://example.org/" + id + ".pdf"}
	}
	return &pb.PaperSpec{PaperId: id, Urls: urls}
}

func papers(n int) []*pb.PaperSpec {
	ps := make([]*pb.PaperSpec, n)
	for i := range ps {
		ps[i] = paper(fmt.Sprintf("p%d", i))
	}
	return ps
}

func submit(ps ...*pb.PaperSpec) *pb.SubmitBatchRequest {
	return &pb.SubmitBatchRequest{Papers: ps}
}

func TestRequest(t *testing.T) {
	withMeta := func(md map[string]string) *pb.PaperSpec {
		p := paper("m")
		p.Metadata = md
		return p
	}
	bigMeta := map[string]string{}
	for i := range MaxMetadataEntries + 1 {
		bigMeta[fmt.Sprint(i)] = "v"
	}
	labels := map[string]string{}
	for i := range MaxLabels + 1 {
		labels[fmt.Sprint(i)] = "v"
	}
	bigTotal := map[string]string{}
	for i := range 9 {
		bigTotal[fmt.Sprint(i)] = strings.Repeat("v", 2000)
	}
	manyURLs := make([]string, MaxURLsPerPaper+1)
	for i := range manyURLs {
		manyURLs[i] = fmt.Sprintf("https://example.org/%d", i)
	}
	tests := []struct {
		name  string
		req   any
		field string // "" means valid
		desc  string // substring of the description
	}{
		{"valid submit", submit(paper("a"), paper("b")), "", ""},
		{"valid submit with id, sha, metadata", &pb.SubmitBatchRequest{BatchId: "Batch_1.x-y", Papers: []*pb.PaperSpec{{
			PaperId: "arXiv:2101.00001 — é", Urls: []string{"http://example.org/a.pdf", "https://[::1]:8443/x?y=1"},
			ExpectedSha256: strings.Repeat("aB", 32), Metadata: map[string]string{"title": "x"}}}}, "", ""},
		{"max papers", submit(papers(MaxPapersPerMessage)...), "", ""},
		{"empty batch", submit(), "papers", "at least one paper"},
		{"oversized batch", submit(papers(MaxPapersPerMessage + 1)...), "papers", "exceed the limit of 5000"},
		{"nil paper", submit(paper("a"), nil), "papers[1]", "null"},
		{"empty paper id", submit(paper("a"), paper("", "https://x.org/")), "papers[1].paper_id", "required"},
		{"paper id with NUL", submit(paper("a\x00b", "https://x.org/")), "papers[0].paper_id", "NUL at character 1"},
		{"paper id with control", submit(paper("a\nb", "https://x.org/")), "papers[0].paper_id", "control character U+000A"},
		{"paper id with DEL", submit(paper("a\x7fb", "https://x.org/")), "papers[0].paper_id", "control character"},
		{"paper id bad utf8", submit(paper("a\xffb", "https://x.org/")), "papers[0].paper_id", "UTF-8"},
		{"paper id 512 bytes", submit(paper(strings.Repeat("x", 512), "https://x.org/")), "", ""},
		{"paper id 513 bytes", submit(paper(strings.Repeat("x", 513), "https://x.org/")), "papers[0].paper_id", "513 bytes"},
		{"duplicate paper id", submit(paper("a"), paper("b"), paper("a")), "papers[2].paper_id", "duplicate of papers[0].paper_id"},
		{"no urls", submit(&pb.PaperSpec{PaperId: "a"}), "papers[0].urls", "at least one URL"},
		{"too many urls", submit(paper("a", manyURLs...)), "papers[0].urls", "17 URLs"},
		{"ftp url", submit(paper("a"), paper("b"), paper("c"), paper("d", "https://ok.org/", "ftp://x.org/a.pdf")), "papers[3].urls[1]", `scheme "ftp" is not http or https`},
		{"relative url", submit(paper("a", "/a.pdf")), "papers[0].urls[0]", "absolute"},
		{"empty url", submit(paper("a", "")), "papers[0].urls[0]", "required"},
		{"url with userinfo", submit(paper("a", "https://user:pw@x.org/a.pdf")), "papers[0].urls[0]", "credentials"},
		{"url without host", submit(paper("a", "https:///a.pdf")), "papers[0].urls[0]", "no host"},
		{"unparsable url", submit(paper("a", "http://x.org/%zz")), "papers[0].urls[0]", "cannot be parsed"},
		{"url 4096 bytes", submit(paper("a", "https://x.org/"+strings.Repeat("a", 4096-14))), "", ""},
		{"url too long", submit(paper("a", "https://x.org/"+strings.Repeat("a", 4096))), "papers[0].urls[0]", "exceed the limit of 4096"},
		{"sha short", submit(&pb.PaperSpec{PaperId: "a", Urls: []string{"https://x.org/"}, ExpectedSha256: "abc"}), "papers[0].expected_sha256", "64 hex digits"},
		{"sha not hex", submit(&pb.PaperSpec{PaperId: "a", Urls: []string{"https://x.org/"}, ExpectedSha256: strings.Repeat("g", 64)}), "papers[0].expected_sha256", "hex"},
		{"too much metadata", submit(withMeta(bigMeta)), "papers[0].metadata", "33 entries"},
		{"metadata key too long", submit(withMeta(map[string]string{strings.Repeat("k", 129): "v"})), `papers[0].metadata["` + strings.Repeat("k", 64) + `…"]`, "key of 129 bytes"},
		{"metadata value too long", submit(withMeta(map[string]string{"k": strings.Repeat("v", 2049)})), `papers[0].metadata["k"]`, "value of 2049 bytes"},
		{"metadata at limits", submit(withMeta(map[string]string{strings.Repeat("k", 128): strings.Repeat("v", 2048)})), "", ""},
		{"too many labels", &pb.SubmitBatchRequest{Papers: papers(1), Labels: labels}, "labels", "33 labels"},
		{"bad batch id", &pb.SubmitBatchRequest{BatchId: "a/b", Papers: papers(1)}, "batch_id", `character '/'`},
		{"long batch id", &pb.CreateBatchRequest{BatchId: strings.Repeat("a", 129)}, "batch_id", "129 characters"},
		{"create ok", &pb.CreateBatchRequest{}, "", ""},
		{"create labels", &pb.CreateBatchRequest{Labels: labels}, "labels", "33 labels"},
		{"append ok", &pb.AppendPapersRequest{BatchId: "b", ChunkIndex: 3, Papers: papers(2)}, "", ""},
		{"append no batch", &pb.AppendPapersRequest{Papers: papers(2)}, "batch_id", "required"},
		{"append negative chunk", &pb.AppendPapersRequest{BatchId: "b", ChunkIndex: -1, Papers: papers(2)}, "chunk_index", "negative"},
		{"append empty", &pb.AppendPapersRequest{BatchId: "b"}, "papers", "at least one"},
		{"append oversized", &pb.AppendPapersRequest{BatchId: "b", Papers: papers(MaxPapersPerMessage + 1)}, "papers", "5001 papers"},
		{"seal ok", &pb.SealBatchRequest{BatchId: "b", ChunkCount: 0}, "", ""},
		{"seal negative", &pb.SealBatchRequest{BatchId: "b", ChunkCount: -2}, "chunk_count", "negative"},
		{"get batch", &pb.GetBatchRequest{BatchId: "b"}, "", ""},
		{"get batch empty id", &pb.GetBatchRequest{}, "batch_id", "required"},
		{"list batches 0", &pb.ListBatchesRequest{}, "", ""},
		{"list batches 1000", &pb.ListBatchesRequest{PageSize: 1000}, "", ""},
		{"list batches 1001", &pb.ListBatchesRequest{PageSize: 1001}, "page_size", "between 0 and 1000"},
		{"list batches negative", &pb.ListBatchesRequest{PageSize: -1}, "page_size", "between 0 and 1000"},
		{"get paper", &pb.GetPaperRequest{BatchId: "b", PaperId: "p"}, "", ""},
		{"get paper NUL", &pb.GetPaperRequest{BatchId: "b", PaperId: "p\x00"}, "paper_id", "NUL"},
		{"list papers ok", &pb.ListPapersRequest{BatchId: "b", PageSize: 5000, States: []pb.PaperState{pb.PaperState_PAPER_STATE_FAILED}}, "", ""},
		{"list papers big page", &pb.ListPapersRequest{BatchId: "b", PageSize: 5001}, "page_size", "between 0 and 5000"},
		{"list papers bad state", &pb.ListPapersRequest{BatchId: "b", States: []pb.PaperState{pb.PaperState_PAPER_STATE_QUEUED, 99}}, "states[1]", "99 is not a paper state"},
		{"list papers unspecified state", &pb.ListPapersRequest{BatchId: "b", States: []pb.PaperState{0}}, "states[0]", "not a paper state"},
		{"watch", &pb.WatchBatchRequest{BatchId: "b"}, "", ""},
		{"watch no id", &pb.WatchBatchRequest{}, "batch_id", "required"},
		{"cancel", &pb.CancelBatchRequest{BatchId: "b", Reason: "x"}, "", ""},
		{"cancel bad id", &pb.CancelBatchRequest{BatchId: "b b"}, "batch_id", "character ' '"},
		{"read paper", &pb.ReadPaperRequest{BatchId: "b", PaperId: "p", Offset: 10}, "", ""},
		{"read paper negative offset", &pb.ReadPaperRequest{BatchId: "b", PaperId: "p", Offset: -1}, "offset", "negative"},
		{"fetch ok", &pb.FetchRequest{Url: "https://x.org/a.pdf", Timeout: durationpb.New(1e9)}, "", ""},
		{"fetch ftp", &pb.FetchRequest{Url: "ftp://x.org/a.pdf"}, "url", `scheme "ftp"`},
		{"fetch bad sha", &pb.FetchRequest{Url: "https://x.org/", ExpectedSha256: "zz"}, "expected_sha256", "64 hex"},
		{"fetch negative size", &pb.FetchRequest{Url: "https://x.org/", MaxSizeBytes: -1}, "max_size_bytes", "negative"},
		{"fetch zero timeout", &pb.FetchRequest{Url: "https://x.org/", Timeout: durationpb.New(0)}, "timeout", "positive"},
		{"unknown message", &pb.WorkRequest{}, "", ""},
		// Every string and map of the contract is bounded (issue 13, item 3).
		{"label key empty", &pb.SubmitBatchRequest{Papers: papers(1), Labels: map[string]string{"": "v"}}, `labels[""]`, "key must not be empty"},
		{"label key too long", &pb.CreateBatchRequest{Labels: map[string]string{strings.Repeat("k", 129): "v"}}, `labels["` + strings.Repeat("k", 64) + `…"]`, "key of 129 bytes"},
		{"label value 10 MB", &pb.CreateBatchRequest{Labels: map[string]string{"k": strings.Repeat("v", 10<<20)}}, `labels["k"]`, "value of 10485760 bytes exceeds the limit of 1024"},
		{"label value control", &pb.CreateBatchRequest{Labels: map[string]string{"k": "a\x00b"}}, `labels["k"]`, "NUL at character 1"},
		{"labels at limits", &pb.CreateBatchRequest{Labels: map[string]string{strings.Repeat("k", 128): strings.Repeat("v", 1024)}}, "", ""},
		{"metadata empty key", submit(withMeta(map[string]string{"": "v"})), `papers[0].metadata[""]`, "key must not be empty"},
		{"metadata total", submit(withMeta(bigTotal)), "papers[0].metadata", "exceed the limit of 16384"},
		{"cancel reason too long", &pb.CancelBatchRequest{BatchId: "b", Reason: strings.Repeat("r", 1025)}, "reason", "1025 bytes"},
		{"cancel reason bad utf8", &pb.CancelBatchRequest{BatchId: "b", Reason: "\xff"}, "reason", "UTF-8"},
		{"chunk index max", &pb.AppendPapersRequest{BatchId: "b", ChunkIndex: MaxChunks - 1, Papers: papers(1)}, "", ""},
		{"chunk index 1000000", &pb.AppendPapersRequest{BatchId: "b", ChunkIndex: 1000000, Papers: papers(1)}, "chunk_index", "at most 99999"},
		{"chunk count too big", &pb.SealBatchRequest{BatchId: "b", ChunkCount: MaxChunks + 1}, "chunk_count", "at most 100000"},
		{"page token not ours", &pb.ListPapersRequest{BatchId: "b", PageToken: "abc"}, "page_token", "next_page_token"},
		{"page token too long", &pb.ListBatchesRequest{PageToken: strings.Repeat("1", 33)}, "page_token", "33 bytes"},
		{"page token ok", &pb.ListBatchesRequest{PageToken: "12"}, "", ""},
		// Ids: "." and ".." are refused; non-ASCII is reported by character, not byte.
		{"batch id dot", &pb.GetBatchRequest{BatchId: "."}, "batch_id", `"." is not allowed`},
		{"batch id dotdot", &pb.SubmitBatchRequest{BatchId: "..", Papers: papers(1)}, "batch_id", `".." is not allowed`},
		{"batch id dots ok", &pb.GetBatchRequest{BatchId: "..."}, "", ""},
		{"batch id non-ascii", &pb.GetBatchRequest{BatchId: "ünï"}, "batch_id", `character 'ü' at 0`},
		{"batch id non-ascii later", &pb.GetBatchRequest{BatchId: "aünï"}, "batch_id", `character 'ü' at 1`},
		{"paper id dot", submit(paper(".", "https://x.org/")), "papers[0].paper_id", `"." is not allowed`},
		{"paper id dotdot", &pb.GetPaperRequest{BatchId: "b", PaperId: ".."}, "paper_id", `".." is not allowed`},
		{"paper id control after non-ascii", submit(paper("ün\x01", "https://x.org/")), "papers[0].paper_id", "at character 2"},
		{"delete", &pb.DeleteBatchRequest{BatchId: "b"}, "", ""},
		{"delete no id", &pb.DeleteBatchRequest{}, "batch_id", "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Request(tt.req)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Request = %v, want valid", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Request = nil, want violation of %s", tt.field)
			}
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("code = %v, want InvalidArgument", st.Code())
			}
			if !strings.HasPrefix(st.Message(), tt.field+": ") || !strings.Contains(st.Message(), tt.desc) {
				t.Fatalf("message = %q, want %q: …%s…", st.Message(), tt.field, tt.desc)
			}
			var br *errdetails.BadRequest
			for _, d := range st.Details() {
				if b, ok := d.(*errdetails.BadRequest); ok {
					br = b
				}
			}
			if br == nil || len(br.GetFieldViolations()) == 0 || br.GetFieldViolations()[0].GetField() != tt.field {
				t.Fatalf("BadRequest detail = %v, want first field %s", br, tt.field)
			}
		})
	}
}

func TestManyViolationsAreBounded(t *testing.T) {
	ps := make([]*pb.PaperSpec, 100)
	for i := range ps {
		ps[i] = paper(fmt.Sprint(i), "ftp://x.org/")
	}
	err := Request(submit(ps...))
	var ve *Error
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if len(ve.Violations) != maxViolations || ve.More != 100-maxViolations {
		t.Fatalf("violations = %d (+%d more), want %d (+%d)", len(ve.Violations), ve.More, maxViolations, 100-maxViolations)
	}
	if !strings.HasSuffix(err.Error(), "(and 99 more)") {
		t.Fatalf("message = %q", err.Error())
	}
}

func TestPaperSpec(t *testing.T) {
	if err := PaperSpec("p", paper("a")); err != nil {
		t.Fatal(err)
	}
	if err := PaperSpec("p", paper("a", "gopher://x/")); err == nil || !strings.HasPrefix(err.Error(), "p.urls[0]: ") {
		t.Fatalf("err = %v", err)
	}
	if err := PaperSpec("", paper("a", "gopher://x/")); err == nil || !strings.HasPrefix(err.Error(), "urls[0]: ") {
		t.Fatalf("without a path: err = %v", err)
	}
	if err := PaperSpec("", paper("a", "https://x.org/\xff")); err == nil || err.Error() != "urls[0]: is not valid UTF-8" {
		t.Fatalf("invalid UTF-8 URL: err = %v", err)
	}
	p := paper("a")
	p.Metadata = map[string]string{"k": "\xff"}
	if err := PaperSpec("", p); err == nil || err.Error() != `metadata["k"]: is not valid UTF-8` {
		t.Fatalf("invalid UTF-8 metadata: err = %v", err)
	}
}

func FuzzRequest(f *testing.F) {
	f.Add("id", "https://example.org/a.pdf", "b")
	f.Add("a\x00", "ftp://x", "b/c")
	f.Fuzz(func(t *testing.T, id, u, batch string) {
		err := Request(&pb.SubmitBatchRequest{BatchId: batch, Papers: []*pb.PaperSpec{{PaperId: id, Urls: []string{u}}}})
		if err != nil && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("code %v", status.Code(err))
		}
	})
}

func TestBatchID(t *testing.T) {
	for _, ok := range []string{"a", "Batch_1.x-y", strings.Repeat("b", MaxBatchIDBytes)} {
		if err := BatchID("batch_id", ok); err != nil {
			t.Errorf("BatchID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "a/b", strings.Repeat("b", MaxBatchIDBytes+1)} {
		if err := BatchID("--batch-id", bad); err == nil || !strings.HasPrefix(err.Error(), "--batch-id: ") {
			t.Errorf("BatchID(%q) = %v, want an error naming --batch-id", bad, err)
		}
	}
}

// FuzzPaperSpecParsed: a paper whose URLs come parsed gets PaperSpec's verdict, word for word,
// whether every URL, some or none come parsed (the input reader parses each URL once and hands
// the result over).
func FuzzPaperSpecParsed(f *testing.F) {
	for _, s := range []string{
		"https://example.org/a.pdf", "http://127.0.0.1:40000/pdf/1?size=20480", "ftp://x/a",
		"https://u:p@x/a", "http:///a", "//example.org/a", "a.pdf", "HTTPS://X.ORG/A", "https://[::1/x",
		"https://example.org/%zz", "https://x.org/\x7f", "",
	} {
		f.Add(s, "https://example.org/b.pdf", "")
	}
	f.Fuzz(func(t *testing.T, u1, u2, sha string) {
		p := &pb.PaperSpec{PaperId: "p", Urls: []string{u1, u2}, ExpectedSha256: sha}
		want := fmt.Sprint(PaperSpec("", p))
		var parsed []*url.URL
		for _, u := range p.Urls {
			pu, err := url.Parse(u)
			if err != nil {
				pu = nil
			}
			parsed = append(parsed, pu)
		}
		for _, ps := range [][]*url.URL{parsed, parsed[:1], {nil, parsed[1]}, nil} {
			if got := fmt.Sprint(PaperSpecParsed("", p, ps)); got != want {
				t.Fatalf("PaperSpecParsed(%q) = %s, PaperSpec: %s", p.Urls, got, want)
			}
		}
	})
}
