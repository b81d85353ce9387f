package input

import (
	"reflect"
	"strings"
	"testing"
)

func readNamed(t *testing.T, name, content string, opts Options) ([]Paper, []*LineError) {
	t.Helper()
	src, err := openSource(strings.NewReader(content), name, opts)
	if err != nil {
		t.Fatalf("openSource: %v", err)
	}
	var papers []Paper
	var errs []*LineError
	for {
		p, err := src.Next()
		if err != nil {
			if le, ok := err.(*LineError); ok {
				errs = append(errs, le)
				continue
			}
			return papers, errs
		}
		papers = append(papers, p)
	}
}

const testBib = `% A library exported by a reference manager
@comment{ this {is} ignored @article{notanentry, doi = {10.1/no}} }
@String{ jnl = "Journal of " # {Tests} }
@STRING(pre = {10.5555})

@Article{smith2020,
  AUTHOR = {Sm{\'\i}th, J{\"o}rg and Doe, Jane},
  Title = {A {Study} of \"Uber-Caf\'{e}s \& {PDF}s},
  journal = jnl,
  month = jan,
  year = 2020,
  DOI = {10.1234/ABC(1);2<x>},
}

@inproceedings{ paper-two ,
  title = "Quoted {"}title{"} with braces",
  doi = pre # "/" # {xyz\_1},
  url = {https://publisher.example/article/2},
  date = {2019-05-01}
}

@misc{arxivonly, author = {Lee, A.}, eprint = {2301.00001}, archivePrefix = {arXiv}, primaryClass = {cs.LG}}
@misc(landing, url = "https://doi.org/10.7777/Landing", title = {T})
@book{nothing, title = {No identifiers}}
@article{broken, title = {unclosed
`

func TestBibTeX(t *testing.T) {
	papers, errs := readNamed(t, "refs.bib", testBib, Options{ArxivBase: "http://127.0.0.1:9/"})
	if len(papers) != 4 {
		t.Fatalf("got %d papers %+v, errors %v", len(papers), papers, errs)
	}
	want := []Paper{
		{ID: "smith2020", DOI: "10.1234/abc(1);2<x>", Metadata: map[string]string{"title": "A Study of Über-Cafés & PDFs", "year": "2020", "first_author": "Smíth"}, File: "refs.bib", Line: 6},
		{ID: "paper-two", DOI: "10.5555/xyz_1", URLs: []string{"https://publisher.example/article/2"}, Metadata: map[string]string{"title": `Quoted "title" with braces`, "year": "2019"}, File: "refs.bib", Line: 15},
		{ID: "arxivonly", URLs: []string{"http://127.0.0.1:9/pdf/2301.00001"}, Metadata: map[string]string{"first_author": "Lee"}, File: "refs.bib", Line: 22},
		{ID: "landing", DOI: "10.7777/landing", Metadata: map[string]string{"title": "T"}, File: "refs.bib", Line: 23},
	}
	for i := range want {
		if !reflect.DeepEqual(papers[i], want[i]) {
			t.Errorf("paper %d:\n got %+v\nwant %+v", i, papers[i], want[i])
		}
	}
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "refs.bib:24: paper \"nothing\" has no URL or DOI") || !strings.Contains(errs[1].Error(), "refs.bib:25: bad BibTeX entry") {
		t.Errorf("errors %v", errs)
	}
}

// A BibTeX file read without its name (standard input) is recognised by its content, also
// after the comment lines reference managers put first (JabRef: "% This file was created...").
func TestBibTeXDetectedAfterComments(t *testing.T) {
	doc := "\ufeff% This file was created with JabRef 5.9.\r\n% Encoding: UTF-8\r\n\r\n@Article{key1,\r\n  doi = {10.1000/A},\r\n}\r\n"
	papers, errs := readNamed(t, "-", doc, Options{})
	if len(errs) != 0 || len(papers) != 1 || papers[0].ID != "key1" || papers[0].DOI != "10.1000/a" {
		t.Fatalf("got %+v, errors %v", papers, errs)
	}
	// A list of URLs with a "%" line is still a list.
	papers, _ = readNamed(t, "-", "% not bibtex\nhttps://a.example/x.pdf\n", Options{})
	if len(papers) != 1 || papers[0].URLs[0] != "https://a.example/x.pdf" {
		t.Fatalf("lines: %+v", papers)
	}
}

func TestRIS(t *testing.T) {
	ris := "TY  - JOUR\r\nID  - ris1\r\nAU  - Müller, Hans\r\nAU  - Other, A\r\nTI  - A title\r\n  continued\r\nPY  - 2021///\r\nDO  - 10.1000/RIS.1\r\nUR  - https://publisher.example/ris1\r\nL1  - file:///home/me/ris1.pdf\r\nER  - \r\n\r\n" +
		"TY  - JOUR\r\nDO  - https://doi.org/10.1000/ris.2\r\nER  - \r\nTY  - BOOK\r\nTI  - nothing\r\nER  - \r\n"
	papers, errs := readNamed(t, "export.ris", ris, Options{})
	want := []Paper{
		{ID: "ris1", DOI: "10.1000/ris.1", URLs: []string{"https://publisher.example/ris1"}, Metadata: map[string]string{"title": "A title continued", "year": "2021", "first_author": "Müller"}, File: "export.ris", Line: 1},
		{ID: "10.1000/ris.2", DOI: "10.1000/ris.2", File: "export.ris", Line: 13},
	}
	if !reflect.DeepEqual(papers, want) {
		t.Errorf("got %+v\nwant %+v", papers, want)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "export.ris:16: no id, URL or DOI") {
		t.Errorf("errors %v", errs)
	}
	// Detected from the content too (standard input has no extension).
	if p, _ := readNamed(t, "-", ris, Options{}); len(p) != 2 {
		t.Errorf("content detection: %d papers", len(p))
	}
}

func TestCSLJSON(t *testing.T) {
	doc := `[
  {"id": "item1", "type": "article-journal", "DOI": "10.1000/CSL1", "title": "First", "author": [{"family": "Curie", "given": "Marie"}], "issued": {"date-parts": [[1903, 6]]}},
  {"id": 42, "URL": "https://repo.example/42.pdf", "issued": {"date-parts": [["2001"]]}},
  {"id": "bad", "DOI": "11.1/x"},
  {"id": "nodoi", "title": "no way to fetch"},
  {"id": "who", "DOI": "10.1000/WHO", "author": [{"literal": "World Health Organization"}], "issued": {"raw": "2019-05"}}
]`
	papers, errs := readNamed(t, "lib.json", doc, Options{})
	want := []Paper{
		{ID: "item1", DOI: "10.1000/csl1", Metadata: map[string]string{"title": "First", "year": "1903", "first_author": "Curie"}, File: "lib.json", Line: 2},
		{ID: "42", URLs: []string{"https://repo.example/42.pdf"}, Metadata: map[string]string{"year": "2001"}, File: "lib.json", Line: 3},
		{ID: "who", DOI: "10.1000/who", Metadata: map[string]string{"first_author": "World Health Organization", "year": "2019"}, File: "lib.json", Line: 6},
	}
	if !reflect.DeepEqual(papers, want) {
		t.Errorf("got %+v\nwant %+v", papers, want)
	}
	if len(errs) != 2 || !strings.Contains(errs[0].Error(), "lib.json:4: bad DOI") || !strings.Contains(errs[1].Error(), "lib.json:5:") {
		t.Errorf("errors %v", errs)
	}
	// A JSON Lines file is still JSON Lines.
	if p, e := readNamed(t, "list.json", `{"doi": "10.1/a"}`+"\n", Options{}); len(p) != 1 || len(e) != 0 || p[0].DOI != "10.1/a" {
		t.Errorf("jsonl: %+v %v", p, e)
	}
}

func TestCSVExports(t *testing.T) {
	zotero := `"Key","Item Type","Publication Year","Author","Title","DOI","Url"
"ABCD1234","journalArticle","2018","Smith, John; Doe, Jane","Zotero paper","10.1000/ZOT.1",""
"EFGH5678","journalArticle","2017","Roe, R.","With URL","10.1000/zot.2","https://publisher.example/zot2"
`
	papers, errs := readNamed(t, "zotero.csv", zotero, Options{})
	if len(errs) != 0 || len(papers) != 2 {
		t.Fatalf("zotero: %+v %v", papers, errs)
	}
	if p := papers[0]; p.ID != "ABCD1234" || p.DOI != "10.1000/zot.1" || p.Metadata["year"] != "2018" || p.Metadata["first_author"] != "Smith" || p.Metadata["title"] != "Zotero paper" {
		t.Errorf("zotero row 1: %+v", p)
	}
	if p := papers[1]; !reflect.DeepEqual(p.URLs, []string{"https://publisher.example/zot2"}) || p.DOI != "10.1000/zot.2" {
		t.Errorf("zotero row 2: %+v", p)
	}
	mendeley := "Title,Year,DOI\nMendeley paper,2015,10.1000/MEN.1\n"
	papers, errs = readNamed(t, "mendeley.csv", mendeley, Options{})
	if len(errs) != 0 || len(papers) != 1 || papers[0].ID != "10.1000/men.1" || papers[0].DOI != "10.1000/men.1" {
		t.Fatalf("mendeley: %+v %v", papers, errs)
	}
}

// --format forces a document format whatever the name and the first bytes.
func TestDocumentFormatForced(t *testing.T) {
	for _, tc := range []struct {
		flag, content string
	}{
		{"bibtex", "Exported from my library\n@article{k1, doi = {10.1000/A}}\n"},
		{"bib", "@article{k1, doi = {10.1000/A}}"},
		{"ris", "\r\nTY  - JOUR\r\nID  - k1\r\nDO  - 10.1000/A\r\nER  - \r\n"},
		{"csl-json", `  [{"id": "k1", "DOI": "10.1000/A"}]`},
		{"json", `[{"id": "k1", "DOI": "10.1000/A"}]`}, // a JSON array is CSL-JSON, not JSON Lines
	} {
		f, err := ParseFormat(tc.flag)
		if err != nil {
			t.Fatal(err)
		}
		papers, errs := readNamed(t, "library.txt", tc.content, Options{Format: f})
		if len(errs) != 0 || len(papers) != 1 || papers[0].ID != "k1" || papers[0].DOI != "10.1000/a" {
			t.Errorf("--format %s: %+v %v", tc.flag, papers, errs)
		}
	}
}

// Hand-written .bib files: "%" comment lines between entries (with an "@" in them) and
// between fields (as biber and JabRef read them), and corporate authors in double braces.
func TestBibTeXHandWritten(t *testing.T) {
	doc := "% Maintainer: me@example.org\n" +
		"   % 50% done @ home\n" +
		"@article{k1,\n" +
		"  % doi = {10.1/old},\n" +
		"  doi = {10.1/new}, % the published version\n" +
		"  author = {{World Health Organization} and Doe, J.},\n" +
		"  title = {100\\% {Open}}\n" +
		"}\n" +
		"@misc{k2, author = {{\\O}stergaard, K. and Lee, A.}, doi = {10.1/k2}}\n" +
		"@misc{k3, author = {{{\\'E}cole Polytechnique} AND Roe, R.}, doi = {10.1/k3}}\n"
	papers, errs := readNamed(t, "hand.bib", doc, Options{})
	want := []Paper{
		{ID: "k1", DOI: "10.1/new", Metadata: map[string]string{"first_author": "World Health Organization", "title": "100% Open"}, File: "hand.bib", Line: 3},
		{ID: "k2", DOI: "10.1/k2", Metadata: map[string]string{"first_author": "Østergaard"}, File: "hand.bib", Line: 9},
		{ID: "k3", DOI: "10.1/k3", Metadata: map[string]string{"first_author": "École Polytechnique"}, File: "hand.bib", Line: 10},
	}
	if len(errs) != 0 || !reflect.DeepEqual(papers, want) {
		t.Fatalf("got %+v, errors %v\nwant %+v", papers, errs, want)
	}
}
