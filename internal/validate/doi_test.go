package validate

import (
	"strings"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func TestNormalizeDOI(t *testing.T) {
	for in, want := range map[string]string{
		"10.1234/abc":                             "10.1234/abc",
		"  doi:10.1234/ABC ":                      "10.1234/abc",
		"DOI:10.1234/abc":                         "10.1234/abc",
		"https://doi.org/10.1234/abc":             "10.1234/abc",
		"HTTPS://DOI.ORG/10.1234/AbC":             "10.1234/abc",
		"http://dx.doi.org/10.1234/abc":           "10.1234/abc",
		"https://doi.org/10.1002/(SICI)1097-4571": "10.1002/(sici)1097-4571",
		"https://doi.org/10.1000/a%3Cb%3E%23c":    "10.1000/a<b>#c",
		"10.1000/x;y<z>/w":                        "10.1000/x;y<z>/w",
		"10.48550/arXiv.2301.00001":               "10.48550/arxiv.2301.00001",
		"info:doi/10.1000/182":                    "10.1000/182",
	} {
		got, err := NormalizeDOI(in)
		if err != nil || got != want {
			t.Errorf("NormalizeDOI(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10.1234", "11.1234/abc", "10.12a4/abc", "10.1234/", "10.1234/a b", "https://doi.org/10.1/%zz", "10.1/a\x00", "10.1/" + strings.Repeat("x", MaxDOIBytes)} {
		if got, err := NormalizeDOI(in); err == nil {
			t.Errorf("NormalizeDOI(%q) = %q, want an error", in, got)
		}
	}
}

func TestEscapeDOI(t *testing.T) {
	for in, want := range map[string]string{
		"10.1000/abc":              "10.1000/abc",
		"10.1000/a<b>#c?d%e f":     "10.1000/a%3Cb%3E%23c%3Fd%25e%20f",
		"10.1002/(sici)1097;2-x/y": "10.1002/(sici)1097;2-x/y",
	} {
		if got := EscapeDOI(in); got != want {
			t.Errorf("EscapeDOI(%q) = %q, want %q", in, got, want)
		}
	}
	if id, ok := ArxivDOI("10.48550/arxiv.2301.00001"); !ok || id != "2301.00001" {
		t.Errorf("ArxivDOI = %q, %v", id, ok)
	}
	if _, ok := ArxivDOI("10.1000/182"); ok {
		t.Error("ArxivDOI accepted a non-arXiv DOI")
	}
}

func TestPaperSpecDOI(t *testing.T) {
	if err := PaperSpec("", &pb.PaperSpec{PaperId: "p", Doi: "10.1000/182"}); err != nil {
		t.Errorf("a DOI without URLs: %v", err)
	}
	if err := PaperSpec("", &pb.PaperSpec{PaperId: "p"}); err == nil || !strings.Contains(err.Error(), "urls") {
		t.Errorf("no URL and no DOI: %v", err)
	}
	if err := PaperSpec("", &pb.PaperSpec{PaperId: "p", Doi: "11.1/x"}); err == nil || !strings.Contains(err.Error(), "doi") {
		t.Errorf("bad DOI: %v", err)
	}
	urls := []string{"http://a/1", "http://a/2", "http://a/3", "http://a/4", "http://a/5"}
	if err := PaperSpec("", &pb.PaperSpec{PaperId: "p", Doi: "10.1/x", Urls: urls}); err == nil {
		t.Error("5 URLs with a DOI accepted")
	}
}
