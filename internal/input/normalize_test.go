package input

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// arXiv abs/pdf URLs become arXiv ids (fetched from --arxiv-base); fragments do not make a
// second paper; quoted and <...> URLs are unwrapped.
func TestReaderNormalizes(t *testing.T) {
	base := "http://127.0.0.1:9/mirror"
	in := strings.Join([]string{
		"https://arxiv.org/abs/2301.00001v2",
		"https://arxiv.org/pdf/hep-th/9901001.pdf",
		"https://example.org/a.pdf#page=3",
		"https://example.org/a.pdf", // the same paper: a duplicate
		`"https://example.org/b.pdf"`,
		"<https://example.org/c.pdf>",
		"'2301.00002'",
	}, "\n")
	st := NewStream([]string{"-"}, strings.NewReader(in), Options{ArxivBase: base})
	var got []Paper
	for {
		p, err := st.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p)
	}
	if len(got) != 6 || st.Duplicates() != 1 {
		t.Fatalf("%d papers, %d duplicates: %+v", len(got), st.Duplicates(), got)
	}
	want := []struct{ id, url string }{
		{"2301.00001v2", base + "/pdf/2301.00001v2"},
		{"hep-th/9901001", base + "/pdf/hep-th/9901001"},
		{"", "https://example.org/a.pdf"},
		{"", "https://example.org/b.pdf"},
		{"", "https://example.org/c.pdf"},
		{"2301.00002", base + "/pdf/2301.00002"},
	}
	for i, w := range want {
		if (w.id != "" && got[i].ID != w.id) || got[i].URLs[0] != w.url {
			t.Errorf("entry %d: %+v, want %+v", i, got[i], w)
		}
	}
}

// A semicolon-separated CSV (a spreadsheet export in many locales) is read as CSV.
func TestReaderSemicolonCSV(t *testing.T) {
	papers, errs := readAll(t, "id;url;title\np1;https://example.org/1.pdf;One\np2;https://example.org/2.pdf;Two\n", Options{})
	if len(errs) != 0 || len(papers) != 2 || papers[1].ID != "p2" || papers[1].URLs[0] != "https://example.org/2.pdf" || papers[0].Metadata["title"] != "One" {
		t.Fatalf("%+v %v", papers, errs)
	}
}

// A file in a format not read yet is named in one fatal error, not an error per line.
func TestReaderUnsupportedFormat(t *testing.T) {
	for in, want := range map[string]string{
		"<?xml version=\"1.0\"?>\n<xml><records/></xml>\n": "looks like XML",
		"<!DOCTYPE html>\n<html></html>\n":                 "looks like an HTML page",
		"%0 Journal Article\n%T X\n":                       "looks like EndNote",
	} {
		r := NewReader(strings.NewReader(in), "refs", Options{})
		_, err := r.Next()
		var le *LineError
		if err == nil || errors.As(err, &le) || !strings.Contains(err.Error(), "refs "+want) {
			t.Errorf("%q: %v, want a fatal error with %q", in, err, want)
		}
	}
}

func TestClassifyArg(t *testing.T) {
	exists := func(name string) bool { return name == "2301.00001" || name == "list.txt" }
	for arg, want := range map[string]ArgKind{
		"-": ArgStdin, "list.txt": ArgFile, "nope.txt": ArgFile, "2301.00001": ArgFile, "2301.00002": ArgPaper,
		"arXiv:hep-th/9901001": ArgPaper, "https://example.org/a.pdf": ArgPaper, "<http://example.org/b.pdf>": ArgPaper,
		"10.1234/abc.5": ArgPaper, "doi:10.1234/x": ArgPaper,
	} {
		if got := ClassifyArg(arg, exists); got != want {
			t.Errorf("ClassifyArg(%q) = %v, want %v", arg, got, want)
		}
	}
}

// A paper record of `paperfetch ls BATCH --json` is an input as is.
func TestReaderPaperRecord(t *testing.T) {
	line := `{"batch_id":"b","spec":{"paper_id":"p1","urls":["https://example.org/1.pdf"],"expected_sha256":"` + strings.Repeat("ab", 32) +
		`","metadata":{"title":"T"}},"state":"PAPER_STATE_FAILED","attempts":5,"last_error":"HTTP 503"}` + "\n"
	papers, errs := readAll(t, line, Options{})
	if len(errs) != 0 || len(papers) != 1 {
		t.Fatalf("%v %v", papers, errs)
	}
	p := papers[0]
	if p.ID != "p1" || p.URLs[0] != "https://example.org/1.pdf" || p.SHA256 != strings.Repeat("ab", 32) || len(p.Metadata) != 1 || p.Metadata["title"] != "T" {
		t.Fatalf("%+v", p)
	}
}
