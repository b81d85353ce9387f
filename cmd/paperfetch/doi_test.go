package main_test

import (
	"bytes"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paperfetch/paperfetch/internal/doitest"
)

func mustInputs(t *testing.T, w *doitest.World, dir string) []string {
	t.Helper()
	names, err := w.WriteInputs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func doiFlags(w *doitest.World, out string) []string {
	resolver, _ := url.Parse(w.Resolver.URL)
	return []string{"--doi-base", w.Resolver.URL, "--openalex-base", w.OpenAlex.URL, "--unpaywall-base", w.Unpaywall.URL,
		"--arxiv-base", w.Arxiv.URL, "--email", "librarian@example.org", "--allow-private-networks",
		"--per-host-delay", "0s", "--host-limit", resolver.Host + "=10ms/4", "--out", out}
}

// TestGetDOIInputs runs `get` on BibTeX, a Zotero CSV export, a DOI list, RIS and CSL-JSON:
// every PDF any route reaches is fetched, no HTML is saved, and the report says where each PDF
// came from and why the others failed.
func TestGetDOIInputs(t *testing.T) {
	w := doitest.Start("librarian@example.org")
	defer w.Close()
	dir := t.TempDir()
	out := filepath.Join(dir, "papers")
	args := append([]string{"get", "--report", filepath.Join(dir, "report.json"), "--retries", "2",
		"--name-template", "{first_author}{year}-{id}"}, doiFlags(w, out)...)
	res := run(t, "", append(args, mustInputs(t, w, dir)...)...)
	if res.code != 1 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
	}
	rep := readReport(t, filepath.Join(dir, "report.json"))
	want := map[string]string{
		"abs2020": "landing_page", "unpaywalled": "unpaywall", "arxivpaper": "url", "CSL1": "csl_link",
		strings.ToLower(doitest.DOISpecial): "openalex", strings.ToLower(doitest.DOIOpenAlex): "openalex",
		"rel-ris": "landing_page", "alt-csl": "landing_page",
	}
	failed := map[string]string{"TRAP1": "no_open_copy", doitest.DOIUnknown: "not_found"}
	seen := 0
	for _, p := range rep.Papers {
		if src, ok := want[p.ID]; ok {
			seen++
			if p.State != "succeeded" || p.Source != src {
				t.Errorf("%s: %s source %q, want %q (%s)", p.ID, p.State, p.Source, src, p.Error)
			}
			data, err := os.ReadFile(p.Path)
			if err != nil || !bytes.HasPrefix(data, []byte("%PDF-")) {
				t.Errorf("%s: %s is not a PDF: %v", p.ID, p.Path, err)
			}
		}
		if reason, ok := failed[p.ID]; ok {
			seen++
			if p.State != "failed" || p.Reason != reason {
				t.Errorf("%s: %s %s, want failed %s (%s)", p.ID, p.State, p.Reason, reason, p.Error)
			}
		}
	}
	if seen != len(want)+len(failed) || rep.Summary.Total != seen {
		t.Errorf("report has %d papers (%d known), want %d", rep.Summary.Total, seen, len(want)+len(failed))
	}
	entries, _ := os.ReadDir(out)
	pdfs := 0
	for _, e := range entries {
		if e.IsDir() || filepath.Ext(e.Name()) != ".pdf" {
			continue
		}
		pdfs++
		data, _ := os.ReadFile(filepath.Join(out, e.Name()))
		if !bytes.HasPrefix(data, []byte("%PDF-")) {
			t.Errorf("%s is not a PDF", e.Name())
		}
	}
	if pdfs != len(want) {
		t.Errorf("%d files in the output, want %d", pdfs, len(want))
	}
	for _, name := range []string{"Muller2020-abs2020.pdf", "Lee2023-arxivpaper.pdf", "Curie2018-CSL1.pdf", "Rel2016-rel-ris.pdf"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("--name-template: %v", err)
		}
	}
	if v := w.Violations(); len(v) > 0 {
		t.Errorf("violations:\n%s", strings.Join(v, "\n"))
	}
	// failed.txt is an input for the next run: it keeps the DOIs.
	list, err := os.ReadFile(filepath.Join(out, "failed.txt"))
	if err != nil || !strings.Contains(string(list), `"doi":"10.1000/trap"`) || !strings.Contains(string(list), `"doi":"10.9999/unknown"`) {
		t.Errorf("failed.txt lacks the DOIs: %v\n%s", err, list)
	}
}

// TestResolveCommand prints the candidates of every route for DOIs without downloading.
func TestResolveCommand(t *testing.T) {
	w := doitest.Start("librarian@example.org")
	defer w.Close()
	flags := doiFlags(w, "unused")
	flags = flags[:len(flags)-6] // no --per-host-delay, --host-limit or --out for resolve
	res := run(t, "", append(append([]string{"resolve", "--per-host-delay", "0s"}, flags...), doitest.DOIArxiv, "doi:"+doitest.DOICSL, doitest.DOIUnknown)...)
	if res.code != 1 {
		t.Fatalf("exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	for _, want := range []string{
		"10.48550/arxiv.2301.00001\n  arxiv         " + w.Arxiv.URL + "/pdf/2301.00001\n",
		"  csl_link      " + w.Publisher.URL + "/csl/fulltext.pdf\n",
		"10.9999/unknown\n  openalex      (not_found: HTTP 404 Not Found)\n",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, res.stdout)
		}
	}
	for _, path := range []string{"/csl/fulltext.pdf", "/pdf/2301.00001"} {
		if w.Hits("publisher", path)+w.Hits("arxiv", path) != 0 {
			t.Errorf("resolve downloaded %s", path)
		}
	}
	// The same from the environment (PAPERFETCH_<FLAG>), as a deployment sets it.
	cmd := exec.Command(bin, "resolve", "--allow-private-networks", "doi:"+doitest.DOIUnpaywall)
	cmd.Env = append(os.Environ(), "PAPERFETCH_COORDINATOR=", "PAPERFETCH_PER_HOST_DELAY=0s",
		"PAPERFETCH_DOI_BASE="+w.Resolver.URL, "PAPERFETCH_OPENALEX_BASE="+w.OpenAlex.URL,
		"PAPERFETCH_UNPAYWALL_BASE="+w.Unpaywall.URL, "PAPERFETCH_EMAIL=librarian@example.org")
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "  unpaywall     "+w.Repo.URL+"/oa/up1.pdf\n") {
		t.Errorf("resolve with the environment: %v\n%s", err, out)
	}
	if v := w.Violations(); len(v) > 0 {
		t.Errorf("violations:\n%s", strings.Join(v, "\n"))
	}
}

// A DOI given as an argument (bare, doi: or as a doi.org URL) is a paper, like a URL or an
// arXiv id; `get --help` says so.
func TestGetDOIArgument(t *testing.T) {
	w := doitest.Start("librarian@example.org")
	defer w.Close()
	dir := t.TempDir()
	rep := filepath.Join(dir, "report.json")
	res := run(t, "", append(append([]string{"get", "--report", rep}, doiFlags(w, filepath.Join(dir, "papers"))...), "doi:"+doitest.DOIOpenAlex)...)
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	if r := readReport(t, rep); len(r.Papers) != 1 || r.Papers[0].ID != strings.ToLower(doitest.DOIOpenAlex) || r.Papers[0].State != "succeeded" {
		t.Errorf("report %+v", r.Papers)
	}
	if res := run(t, "", "help", "get"); !strings.Contains(strings.Join(strings.Fields(res.stdout), " "), "an http(s) URL, an arXiv id or a DOI") {
		t.Errorf("get help does not say that a DOI is a paper:\n%s", res.stdout)
	}
}
