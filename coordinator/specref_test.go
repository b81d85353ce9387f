package coordinator

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// TestSpecRefOf: the paper id and the URL urls[i] that specRefOf reads from an encoded spec
// (watch updates) are the ones proto.Unmarshal reads, whatever else the spec holds, for every
// index in and out of range; a truncated spec is an error.
func TestSpecRefOf(t *testing.T) {
	specs := []*pb.PaperSpec{
		{PaperId: "p", Urls: []string{"https://a.example/1.pdf"}},
		{PaperId: "q", Urls: []string{"https://a.example/1.pdf", "https://b.example/2.pdf", "https://c.example/3.pdf"},
			ExpectedSha256: "ab", Metadata: map[string]string{"title": "T", "year": "2024"}, Doi: "10.1/x"},
		{PaperId: "doi-only", Doi: "10.1/y", Metadata: map[string]string{"k": "v"}},
		{PaperId: "ünïcode", Urls: []string{"https://a.example/ü.pdf"}},
	}
	for _, s := range specs {
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		// An unknown field before the URLs is skipped.
		raw = append(protowire.AppendTag(nil, 99, protowire.VarintType), append(protowire.AppendVarint(nil, 7), raw...)...)
		var want pb.PaperSpec
		if err := proto.Unmarshal(raw, &want); err != nil {
			t.Fatal(err)
		}
		for i := -1; i <= len(want.GetUrls()); i++ {
			got, err := specRefOf(raw, i)
			if err != nil {
				t.Fatalf("%s, url %d: %v", s.GetPaperId(), i, err)
			}
			wantURL := ""
			if i >= 0 && i < len(want.GetUrls()) {
				wantURL = want.GetUrls()[i]
			}
			if got.id != want.GetPaperId() || got.url != wantURL {
				t.Errorf("%s, url %d: got %+v, want id %q url %q", s.GetPaperId(), i, got, want.GetPaperId(), wantURL)
			}
		}
		if _, err := specRefOf(raw[:len(raw)-1], 0); err == nil && len(raw) > 0 {
			t.Errorf("%s: a truncated spec was read without an error", s.GetPaperId())
		}
	}
}
