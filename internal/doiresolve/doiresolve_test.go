package doiresolve

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestPDFLinks(t *testing.T) {
	base := mustURL(t, "https://pub.example/journal/vol1/article?id=7")
	for name, tc := range map[string]struct {
		page string
		want []string
	}{
		"absolute with entity": {`<html><head><meta name="citation_pdf_url" content="https://pub.example/pdf?id=7&amp;download=1"></head></html>`,
			[]string{"https://pub.example/pdf?id=7&download=1"}},
		"attribute order and case": {`<HEAD><META CONTENT='/files/7.pdf' Name="CITATION_PDF_URL"/></HEAD>`, []string{"https://pub.example/files/7.pdf"}},
		"relative":                 {`<meta name=citation_pdf_url content="../pdf/7.pdf">`, []string{"https://pub.example/journal/pdf/7.pdf"}},
		"link alternate after meta": {`<link rel="alternate" type="application/pdf" href="alt.pdf"><meta name="citation_pdf_url" content="/m.pdf">`,
			[]string{"https://pub.example/m.pdf", "https://pub.example/journal/vol1/alt.pdf"}},
		"link other rel or type ignored": {`<link rel="stylesheet" type="application/pdf" href="a.pdf"><link rel="alternate" type="text/html" href="b">`, nil},
		"base href":                      {`<base href="https://cdn.example/x/"><meta name="citation_pdf_url" content="p.pdf">`, []string{"https://cdn.example/x/p.pdf"}},
		"long script first": {`<script>` + strings.Repeat(`document.write("<meta name='citation_pdf_url' content='/fake.pdf'>");`, 5000) + `</script><meta name="citation_pdf_url" content="/real.pdf">`,
			[]string{"https://pub.example/real.pdf"}},
		"not http":   {`<meta name="citation_pdf_url" content="javascript:alert(1)"><meta name="citation_pdf_url" content="ftp://x/y.pdf">`, nil},
		"duplicates": {`<meta name="citation_pdf_url" content="/a.pdf"><meta name="citation_pdf_url" content="https://pub.example/a.pdf">`, []string{"https://pub.example/a.pdf"}},
		// A browser without scripts reads a <noscript> in the head as tags (a tokenizer, as raw text).
		"inside noscript": {`<head><noscript><link rel="stylesheet" href="s.css"><meta name="citation_pdf_url" content="/n.pdf"></noscript></head>`, []string{"https://pub.example/n.pdf"}},
		"not in a title":  {`<title>A <meta name="citation_pdf_url" content="/t.pdf"></title>`, nil},
	} {
		if got := PDFLinks([]byte(tc.page), base); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %q, want %q", name, got, tc.want)
		}
	}
}

func TestParseAPIs(t *testing.T) {
	final := mustURL(t, "https://api.example/x")
	oa := `{"id":"https://openalex.org/W2741809807","best_oa_location":{"is_oa":true,"pdf_url":"https://repo.example/best.pdf"},
	  "primary_location":{"is_oa":false,"pdf_url":null},
	  "locations":[{"is_oa":false,"pdf_url":"https://pub.example/closed.pdf"},{"is_oa":true,"pdf_url":"https://repo.example/best.pdf"},{"is_oa":true,"pdf_url":"https://mirror.example/2.pdf"}]}`
	if got := Parse(OpenAlex, []byte(oa), final, "application/json").Candidates; !reflect.DeepEqual(got, []string{"https://repo.example/best.pdf", "https://mirror.example/2.pdf", "https://pub.example/closed.pdf"}) {
		t.Errorf("openalex: %q", got)
	}
	old := `{"oa_locations":[{"pdf_url":"https://repo.example/old.pdf"}]}`
	if got := Parse(OpenAlex, []byte(old), final, "").Candidates; !reflect.DeepEqual(got, []string{"https://repo.example/old.pdf"}) {
		t.Errorf("openalex oa_locations: %q", got)
	}
	if r := Parse(OpenAlex, []byte(`{"best_oa_location":null,"locations":[]}`), final, ""); len(r.Candidates) != 0 || !strings.Contains(r.Note, "no open-access location") {
		t.Errorf("openalex none: %+v", r)
	}
	up := `{"doi":"10.1/x","best_oa_location":{"url_for_pdf":"https://repo.example/u.pdf","url":"https://repo.example/u"},"oa_locations":[{"url_for_pdf":null},{"url_for_pdf":"https://b.example/u.pdf"}]}`
	if got := Parse(Unpaywall, []byte(up), final, "").Candidates; !reflect.DeepEqual(got, []string{"https://repo.example/u.pdf", "https://b.example/u.pdf"}) {
		t.Errorf("unpaywall: %q", got)
	}
	csl := `{"DOI":"10.1/x","link":[{"URL":"https://pub.example/x.xml","content-type":"application/xml"},{"URL":"https://pub.example/x.pdf","content-type":"Application/PDF"}]}`
	if got := Parse(CSLLink, []byte(csl), final, "").Candidates; !reflect.DeepEqual(got, []string{"https://pub.example/x.pdf"}) {
		t.Errorf("csl: %q", got)
	}
	if r := Parse(CSLLink, []byte(`<html>`), final, "text/html"); len(r.Candidates) != 0 || !strings.Contains(r.Note, "unreadable") {
		t.Errorf("csl html: %+v", r)
	}
	if r := Parse(LandingPage, []byte("%PDF-1.4 ..."), final, "application/pdf"); !reflect.DeepEqual(r.Candidates, []string{"https://api.example/x"}) {
		t.Errorf("landing PDF: %+v", r)
	}
}

func TestURLs(t *testing.T) {
	b := Bases{DOI: "https://doi.org/", OpenAlex: "https://api.openalex.org", Unpaywall: "https://api.unpaywall.org", Email: "a+b@example.org"}
	esc := "10.1000/a%3Cb%3E"
	for r, want := range map[Route]string{
		OpenAlex:    "https://api.openalex.org/works/doi:10.1000/a%3Cb%3E?mailto=a%2Bb%40example.org",
		Unpaywall:   "https://api.unpaywall.org/v2/10.1000/a%3Cb%3E?email=a%2Bb%40example.org",
		LandingPage: "https://doi.org/10.1000/a%3Cb%3E",
		CSLLink:     "https://doi.org/10.1000/a%3Cb%3E",
	} {
		if got := b.URL(r, esc); got != want {
			t.Errorf("%v: %q, want %q", r, got, want)
		}
	}
	b.Email = ""
	if got := b.URL(Unpaywall, esc); got != "" {
		t.Errorf("unpaywall without e-mail: %q", got)
	}
}

// A landing page that only forwards (a meta refresh, as Elsevier's linkinghub answers for
// its DOIs) yields the page it forwards to: the download of that candidate follows its
// citation_pdf_url. A page with PDF links is read for those only.
func TestLandingPageRefresh(t *testing.T) {
	final := mustURL(t, "https://linkinghub.example/retrieve/pii/S0")
	page := `<html><head><title>Redirecting</title><META HTTP-EQUIV="Refresh" CONTENT="2; URL='/retrieve/articleSelectSinglePerm?Redirect=https%3A%2F%2Fwww.sd.example%2Fpii%2FS0&amp;key=k'"></head><body></body></html>`
	r := Parse(LandingPage, []byte(page), final, "text/html")
	if want := []string{"https://linkinghub.example/retrieve/articleSelectSinglePerm?Redirect=https%3A%2F%2Fwww.sd.example%2Fpii%2FS0&key=k"}; !reflect.DeepEqual(r.Candidates, want) {
		t.Fatalf("refresh: %+v, want %q", r, want)
	}
	// No URL, an empty or unsafe one, and the page itself (a refresh loop) forward nowhere.
	for _, content := range []string{"5", "0;url=", `0; url="javascript:alert(1)"`, "0; url=/retrieve/pii/S0", "1; URL=https://LINKINGHUB.example/retrieve/pii/S0"} {
		p := `<meta http-equiv="refresh" content='` + content + `'>`
		if r := Parse(LandingPage, []byte(p), final, "text/html"); len(r.Candidates) != 0 {
			t.Errorf("%q: %+v", content, r)
		}
	}
	both := `<meta http-equiv="refresh" content="0; url=/elsewhere"><meta name="citation_pdf_url" content="/a.pdf">`
	if r := Parse(LandingPage, []byte(both), final, "text/html"); !reflect.DeepEqual(r.Candidates, []string{"https://linkinghub.example/a.pdf"}) {
		t.Errorf("refresh beside a PDF link: %+v", r)
	}
}
