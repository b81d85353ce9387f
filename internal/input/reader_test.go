package input

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/paperfetch/paperfetch/internal/validate"
)

// readAll parses text and returns the papers and the line errors.
func readAll(t *testing.T, text string, opts Options) ([]Paper, []*LineError) {
	t.Helper()
	r := NewReader(strings.NewReader(text), "in.txt", opts)
	var papers []Paper
	var errs []*LineError
	for {
		p, err := r.Next()
		if errors.Is(err, io.EOF) {
			return papers, errs
		}
		var le *LineError
		if errors.As(err, &le) {
			errs = append(errs, le)
			continue
		}
		if err != nil {
			t.Fatalf("fatal error: %v", err)
		}
		papers = append(papers, p)
	}
}

func TestReaderLines(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		id      string
		urls    []string
		sha     string
		md      map[string]string
		doi     string
		wantErr string
	}{
		{name: "arxiv new", line: "2301.00001", id: "2301.00001", urls: []string{"https://arxiv.org/pdf/2301.00001"}},
		{name: "arxiv five digits version", line: "2301.12345v2", id: "2301.12345v2", urls: []string{"https://arxiv.org/pdf/2301.12345v2"}},
		{name: "arxiv old", line: "hep-th/9901001", id: "hep-th/9901001", urls: []string{"https://arxiv.org/pdf/hep-th/9901001"}},
		{name: "arxiv old subject", line: "math.GT/0309136", id: "math.GT/0309136", urls: []string{"https://arxiv.org/pdf/math.GT/0309136"}},
		{name: "arxiv prefix", line: "arXiv:2301.00001", id: "2301.00001", urls: []string{"https://arxiv.org/pdf/2301.00001"}},
		{name: "arxiv prefix lower", line: "arxiv:hep-th/9901001v3", id: "hep-th/9901001v3", urls: []string{"https://arxiv.org/pdf/hep-th/9901001v3"}},
		{name: "arxiv bad", line: "arXiv:23.1", wantErr: "malformed arXiv id"},
		{name: "url", line: "https://example.org/papers/attention.pdf", id: "attention-" + shortHash("https://example.org/papers/attention.pdf"), urls: []string{"https://example.org/papers/attention.pdf"}},
		{name: "arxiv url", line: "https://arxiv.org/pdf/2301.00001v1", id: "2301.00001v1", urls: []string{"https://arxiv.org/pdf/2301.00001v1"}},
		{name: "url no path", line: "http://example.org", id: "example.org-" + shortHash("http://example.org"), urls: []string{"http://example.org"}},
		{name: "ftp", line: "ftp://example.org/a.pdf", wantErr: `urls[0]: scheme "ftp" is not http or https`},
		{name: "credentials", line: "https://u:p@example.org/a.pdf", wantErr: "credentials"},
		{name: "no host", line: "http:///a.pdf", wantErr: "no host"},
		{name: "garbage", line: "hello", wantErr: "not a URL, arXiv id or JSON object"},
		{name: "two tokens", line: "https://a.org/x.pdf https://b.org/y.pdf", wantErr: "one URL or arXiv id per line"},
		{name: "doi", line: "10.1000/xyz123", id: "10.1000/xyz123", doi: "10.1000/xyz123"},
		{name: "doi prefix upper case", line: "doi:10.1000/ABC(1);2", id: "10.1000/abc(1);2", doi: "10.1000/abc(1);2"},
		{name: "doi url", line: "https://doi.org/10.1000/a%3Cb%3E", id: "10.1000/a<b>", doi: "10.1000/a<b>"},
		{name: "dx doi url", line: "http://dx.doi.org/10.1000/182", id: "10.1000/182", doi: "10.1000/182"},
		{name: "doi bad registrant", line: "doi:10.x/1", wantErr: "bad DOI"},
		{name: "json doi", line: `{"id": "k", "doi": "https://doi.org/10.1000/J1"}`, id: "k", doi: "10.1000/j1"},
		{name: "json doi and url", line: `{"doi": "10.1000/j2", "url": "https://pub.example/j2"}`, id: "10.1000/j2", doi: "10.1000/j2", urls: []string{"https://pub.example/j2"}},
		{name: "json", line: `{"id": "p1", "urls": ["https://a.org/1.pdf", "https://b.org/1.pdf"], "sha256": "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789", "title": "T", "year": 2020}`,
			id: "p1", urls: []string{"https://a.org/1.pdf", "https://b.org/1.pdf"}, sha: "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789", md: map[string]string{"title": "T", "year": "2020"}},
		{name: "json url and urls", line: `{"url": "https://a.org/x.pdf", "urls": ["https://b.org/x.pdf"]}`, id: "x-" + shortHash("https://a.org/x.pdf"), urls: []string{"https://a.org/x.pdf", "https://b.org/x.pdf"}},
		{name: "json arxiv id only", line: `{"id": "arXiv:2101.00002"}`, id: "2101.00002", urls: []string{"https://arxiv.org/pdf/2101.00002"}},
		{name: "json arxiv field", line: `{"id": "mine", "arxiv": "2101.00002"}`, id: "mine", urls: []string{"https://arxiv.org/pdf/2101.00002"}},
		{name: "json metadata", line: `{"id": "m", "url": "https://a.org/m.pdf", "metadata": {"k": "v"}}`, id: "m", urls: []string{"https://a.org/m.pdf"}, md: map[string]string{"k": "v"}},
		{name: "json no url", line: `{"id": "p2"}`, wantErr: "has no URL"},
		{name: "json bad", line: `{"id": "p2",`, wantErr: "bad JSON"},
		{name: "json bad sha", line: `{"id": "p", "url": "https://a.org/p.pdf", "sha256": "xyz"}`, wantErr: "expected_sha256: must be empty or 64 hex digits"},
		{name: "json control id", line: `{"id": "a\u0000b", "url": "https://a.org/p.pdf"}`, wantErr: "paper_id: contains NUL"},
		{name: "json two values", line: `{"id": "a", "url": "https://a.org/p.pdf"} {}`, wantErr: "more than one value"},
		{name: "json too many urls", line: `{"id": "a", "urls": [` + strings.Repeat(`"https://a.org/p.pdf",`, 16) + `"https://a.org/p.pdf"]}`, wantErr: "urls: 17 URLs exceed the limit of 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			papers, errs := readAll(t, "# comment\n\n"+tt.line+"\n", Options{})
			if tt.wantErr != "" {
				if len(errs) != 1 || len(papers) != 0 {
					t.Fatalf("got papers %v errors %v, want one error", papers, errs)
				}
				if !strings.Contains(errs[0].Error(), tt.wantErr) || !strings.HasPrefix(errs[0].Error(), "in.txt:3: ") {
					t.Fatalf("error %q, want in.txt:3: ...%s...", errs[0], tt.wantErr)
				}
				return
			}
			if len(errs) != 0 || len(papers) != 1 {
				t.Fatalf("got papers %v errors %v", papers, errs)
			}
			p := papers[0]
			if p.ID != tt.id || p.DOI != tt.doi || !reflect.DeepEqual(p.URLs, tt.urls) || p.SHA256 != tt.sha || !reflect.DeepEqual(p.Metadata, tt.md) || p.Line != 3 || p.File != "in.txt" {
				t.Fatalf("got %+v, want id %q urls %v sha %q md %v at line 3", p, tt.id, tt.urls, tt.sha, tt.md)
			}
		})
	}
}

func TestReaderArxivBase(t *testing.T) {
	papers, _ := readAll(t, "2301.00001\n", Options{ArxivBase: "http://127.0.0.1:8080/"})
	if got := papers[0].URLs[0]; got != "http://127.0.0.1:8080/pdf/2301.00001" {
		t.Fatalf("url %q", got)
	}
}

func TestReaderFormats(t *testing.T) {
	mixed := "\ufeffhttps://a.org/1.pdf\r\n2301.00001\n{\"id\":\"j\",\"url\":\"https://a.org/j.pdf\"}\n"
	if p, e := readAll(t, mixed, Options{}); len(p) != 3 || len(e) != 0 {
		t.Fatalf("auto mixed: %v %v", p, e)
	}
	if p, e := readAll(t, mixed, Options{Format: FormatLines}); len(p) != 2 || len(e) != 1 || e[0].Line != 3 {
		t.Fatalf("lines: %v %v", p, e)
	}
	if p, e := readAll(t, mixed, Options{Format: FormatJSONL}); len(p) != 1 || len(e) != 2 {
		t.Fatalf("jsonl: %v %v", p, e)
	}
}

func TestReaderCSV(t *testing.T) {
	in := "# papers\nid,url,title,sha256\n" +
		"p1,https://a.org/1.pdf,\"A title, with comma\",\n" +
		"\n" +
		"2301.00001,,arxiv one,\n" +
		",https://a.org/anon.pdf,,\n" +
		"p4,notaurl,,\n" +
		"p5,https://a.org/5.pdf,\"multi\nline\",\n" +
		"p6,\"bad\"quote,,\n" +
		"p7,https://a.org/7.pdf\n"
	for _, f := range []Format{FormatAuto, FormatCSV} {
		papers, errs := readAll(t, in, Options{Format: f})
		if len(papers) != 5 {
			t.Fatalf("format %v: papers %+v errors %v", f, papers, errs)
		}
		want := []struct {
			id   string
			line int
		}{{"p1", 3}, {"2301.00001", 5}, {"anon-" + shortHash("https://a.org/anon.pdf"), 6}, {"p5", 8}, {"p7", 11}}
		for i, w := range want {
			if papers[i].ID != w.id || papers[i].Line != w.line {
				t.Errorf("paper %d: %s at line %d, want %s at %d", i, papers[i].ID, papers[i].Line, w.id, w.line)
			}
		}
		if papers[0].Metadata["title"] != "A title, with comma" || papers[3].Metadata["title"] != "multi\nline" {
			t.Errorf("metadata: %v %v", papers[0].Metadata, papers[3].Metadata)
		}
		if papers[1].URLs[0] != "https://arxiv.org/pdf/2301.00001" {
			t.Errorf("arxiv url %v", papers[1].URLs)
		}
		if len(errs) != 2 || errs[0].Line != 7 || errs[1].Line != 10 {
			t.Fatalf("errors %v", errs)
		}
	}
}

func TestReaderCSVBadHeader(t *testing.T) {
	for _, in := range []string{"id,id\n1,2\n", "title,year\nx,1\n"} {
		r := NewReader(strings.NewReader(in), "h.csv", Options{Format: FormatCSV})
		_, err := r.Next()
		var le *LineError
		if err == nil || errors.Is(err, io.EOF) || errors.As(err, &le) {
			t.Fatalf("%q: got %v, want a fatal header error", in, err)
		}
	}
}

func TestReaderLongLine(t *testing.T) {
	in := "https://a.org/1.pdf\n" + strings.Repeat("x", 5000) + "\nhttps://a.org/2.pdf"
	papers, errs := readAll(t, in, Options{MaxLineBytes: 1000})
	if len(papers) != 2 || len(errs) != 1 || errs[0].Line != 2 || !errors.Is(errs[0], errLineTooLong) {
		t.Fatalf("papers %v errors %v", papers, errs)
	}
	if papers[1].Line != 3 {
		t.Fatalf("line of last paper %d", papers[1].Line)
	}
}

// A line longer than the reader's buffer (64 KiB) but within the limit arrives in pieces and is
// read whole; the lines around it are read from the buffer.
func TestReaderLineLongerThanBuffer(t *testing.T) {
	long := `{"id": "long", "urls": ["https://a.org/long.pdf"]` + strings.Repeat(" ", 150<<10) + "}"
	in := "https://a.org/1.pdf\n" + long + "\n\nhttps://a.org/2.pdf"
	papers, errs := readAll(t, in, Options{})
	if len(papers) != 3 || len(errs) != 0 {
		t.Fatalf("papers %v errors %v", papers, errs)
	}
	if papers[1].ID != "long" || papers[1].Line != 2 || papers[2].URLs[0] != "https://a.org/2.pdf" || papers[2].Line != 4 {
		t.Fatalf("papers %+v", papers)
	}
}

func TestStreamDedupe(t *testing.T) {
	in := "https://a.org/1.pdf\n2301.00001\nhttps://a.org/1.pdf\n{\"id\":\"2301.00001\",\"url\":\"https://elsewhere.org/x.pdf\"}\n"
	s := NewStream([]string{"-"}, strings.NewReader(in), Options{})
	defer s.Close()
	var ids []string
	var errs []error
	for {
		p, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ids = append(ids, p.ID)
	}
	if len(ids) != 2 || s.Duplicates() != 1 || len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "-:4: paper id \"2301.00001\" was given before") {
		t.Fatalf("ids %v duplicates %d errors %v", ids, s.Duplicates(), errs)
	}
}

func TestStreamMissingFile(t *testing.T) {
	s := NewStream([]string{t.TempDir() + "/nope.txt"}, nil, Options{})
	if _, err := s.Next(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("got %v", err)
	}
}

// lineSource generates n lines without holding them in memory.
type lineSource struct {
	n, i int
	buf  []byte
}

func (s *lineSource) Read(p []byte) (int, error) {
	for len(s.buf) < len(p) && s.i < s.n {
		s.buf = fmt.Appendf(s.buf, "https://example.org/papers/%d.pdf\n", s.i)
		s.i++
	}
	if len(s.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.buf)
	s.buf = s.buf[:copy(s.buf, s.buf[n:])]
	return n, nil
}

// TestReaderMillionLines streams a million-line input and checks that the heap stays small.
func TestReaderMillionLines(t *testing.T) {
	n := 1_000_000
	if testing.Short() || raceEnabled {
		n = 100_000
	}
	r := NewReader(&lineSource{n: n}, "big", Options{})
	count := 0
	var maxHeap uint64
	for {
		_, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		count++
		if count%50_000 == 0 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			maxHeap = max(maxHeap, ms.HeapAlloc)
		}
	}
	if count != n {
		t.Fatalf("read %d papers, want %d", count, n)
	}
	if maxHeap > 32<<20 {
		t.Fatalf("heap grew to %d bytes while streaming", maxHeap)
	}
}

func TestStreamManyLines(t *testing.T) {
	n := 100_000
	if raceEnabled {
		n = 20_000
	}
	s := NewStream([]string{"-", "-"}, &lineSource{n: n}, Options{})
	count := 0
	for {
		_, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		count++
	}
	if count != n {
		t.Fatalf("read %d papers, want %d", count, n)
	}
}

func TestURLIDStable(t *testing.T) {
	a := URLID("https://example.org/download")
	b := URLID("https://other.org/download")
	if a == b || a != URLID("https://example.org/download") || !strings.HasPrefix(a, "download-") {
		t.Fatalf("%q %q", a, b)
	}
	if id := URLID("https://example.org/%E2%9C%93/paper%20one.PDF"); !strings.HasPrefix(id, "paper_one-") {
		t.Fatalf("%q", id)
	}
}

func FuzzReader(f *testing.F) {
	for _, s := range []string{
		"https://a.org/1.pdf\n2301.00001\n",
		"{\"id\":\"x\",\"urls\":[\"https://a.org/1.pdf\"]}\n",
		"id,url\np,https://a.org/1.pdf\n",
		"id,url\n\"p,https://a.org/1.pdf\n",
		"arXiv:hep-th/9901001v2\n# c\n\n",
	} {
		f.Add(s, uint8(0))
	}
	f.Fuzz(func(t *testing.T, in string, format uint8) {
		r := NewReader(strings.NewReader(in), "f", Options{Format: Format(format % 4), MaxLineBytes: 256})
		for i := 0; i < 10000; i++ {
			p, err := r.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			var le *LineError
			if errors.As(err, &le) {
				if le.Line < 1 {
					t.Fatalf("line error without a line: %v", le)
				}
				continue
			}
			if err != nil {
				return // fatal (bad CSV header)
			}
			if err := validate.PaperSpec("", p.Spec()); err != nil || p.Line < 1 {
				t.Fatalf("invalid paper %+v: %v", p, err)
			}
		}
		t.Fatal("reader does not terminate")
	})
}

// TestURLIDGolden pins URL ids to values computed outside this code (the SHA-256 of the URL as
// net/url writes it, by Python's hashlib): a rerun finds its papers and batch again only if a line's id never
// changes, and the hash runs from a stack copy up to 512 bytes, from the heap beyond (both
// sides of that bound are pinned here; the other tests compare URLID with shortHash itself).
func TestURLIDGolden(t *testing.T) {
	long := func(n int) string {
		base := "https://example.org/p.pdf?q="
		return base + strings.Repeat("x", n-len(base))
	}
	for _, tc := range []struct{ url, id string }{
		{"https://example.org/papers/attention.pdf", "attention-beec4a5d"},
		{"https://example.org/d/%E2%9C%93.pdf#page=2", "example.org-0a3af0e5"},
		{"https://例え.jp/論文.pdf?a=1&b=2", "jp-14bf6a0c"}, // https://%E4%BE%8B%E3%81%88.jp/%E8%AB%96%E6%96%87.pdf?a=1&b=2,
		{long(512), "p-72da752e"},
		{long(513), "p-040bf00d"},
		{long(4096), "p-2be3f215"},
	} {
		if id := URLID(tc.url); id != tc.id {
			t.Errorf("URLID(%.60q) = %q, want %q", tc.url, id, tc.id)
		}
	}
}
