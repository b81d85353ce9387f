package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// bin is the paperfetch binary built by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "paperfetch-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "paperfetch")
	args := append([]string{"build", "-o", bin}, raceFlags...)
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building paperfetch:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// result is the outcome of one run of the binary.
type result struct {
	code           int
	stdout, stderr string
}

// run runs the binary to completion.
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
	cmd.Env = append(os.Environ(), "PAPERFETCH_COORDINATOR=") // keep the caller's environment out
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("run %v: %v", args, err)
	}
	return res
}

// testFlags are the flags every `get` in the tests uses: loopback origins, no politeness delay.
func testFlags(o *origin, out string) []string {
	return []string{"get", "--out", out, "--arxiv-base", o.URL, "--allow-private-networks", "--per-host-delay", "0s", "--per-host-concurrency", "16", "--retries", "1"}
}

// report is the --report file.
type report struct {
	BatchID string `json:"batch_id"`
	Papers  []struct {
		ID       string   `json:"id"`
		State    string   `json:"state"`
		Path     string   `json:"path"`
		SHA256   string   `json:"sha256"`
		Size     int64    `json:"size"`
		Attempts int      `json:"attempts"`
		URLs     []string `json:"urls"`
		FinalURL string   `json:"final_url"`
		Source   string   `json:"source"`
		Cached   bool     `json:"cached"`
		Reason   string   `json:"reason"`
		Error    string   `json:"error"`
	} `json:"papers"`
	Summary struct {
		Succeeded, Failed, Cached, Total int
		FailedByReason                   map[string]int `json:"failed_by_reason"`
	} `json:"summary"`
}

func readReport(t *testing.T, path string) report {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, data)
	}
	return r
}

var progressLine = regexp.MustCompile(`^progress done=(\d+)/(\d+) succeeded=\d+ failed=\d+ cached=\d+ active=\d+ bytes=[0-9.]+[KMGT]?i?B rate=[0-9.]+[KMGT]?i?B/s elapsed=\S+ eta=\S+$`)

// TestGetMixed downloads a mixed input (URLs, arXiv ids of both styles resolved against the
// test origin, JSON lines with fallback URLs and checksums, a 404, a malformed line), checks
// the files, the report, the summary and the exit code; then reruns it: everything that
// succeeded is a cache hit and nothing is downloaded again.
func TestGetMixed(t *testing.T) {
	o := newOrigin(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	list := filepath.Join(dir, "list.txt")
	zero := strings.Repeat("0", 64)
	input := strings.Join([]string{
		"# mixed input",
		o.URL + "/files/alpha.pdf",
		"2301.00001",
		"arXiv:2301.00002v2",
		"",
		"hep-th/9901001",
		fmt.Sprintf(`{"id": "custom-1", "urls": ["%s/missing-first.pdf", "%s/files/custom.pdf"], "sha256": "%s", "title": "Custom"}`, o.URL, o.URL, sha("/files/custom.pdf")),
		fmt.Sprintf(`{"id": "bad-sum", "url": "%s/files/badsum.pdf", "sha256": "%s"}`, o.URL, zero),
		o.URL + "/missing.pdf",
		"this is not an entry",
		o.URL + "/files/alpha.pdf", // an identical duplicate: dropped silently
	}, "\n") + "\n"
	if err := os.WriteFile(list, []byte(input), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := filepath.Join(dir, "report.json")
	res := run(t, "", append(testFlags(o, out), "--report", rep, list)...)
	if res.code != 1 {
		t.Fatalf("exit %d, want 1 (some failed)\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
	}
	if !strings.Contains(res.stderr, "list.txt:10: not a URL, arXiv id or JSON object") {
		t.Errorf("the malformed line is not reported with its line number:\n%s", res.stderr)
	}

	wantFiles := map[string]string{ // file -> origin path
		"2301.00001.pdf":     "/pdf/2301.00001",
		"2301.00002v2.pdf":   "/pdf/2301.00002v2",
		"hep-th_9901001.pdf": "/pdf/hep-th/9901001",
		"custom-1.pdf":       "/files/custom.pdf",
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "alpha-") && strings.HasSuffix(e.Name(), ".pdf") {
			wantFiles[e.Name()] = "/files/alpha.pdf"
		}
	}
	if len(wantFiles) != 5 {
		t.Fatalf("no alpha-<hash>.pdf in %v", entries)
	}
	for name, path := range wantFiles {
		data, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !bytes.Equal(data, body(path)) {
			t.Errorf("%s: wrong content or missing (%v)", name, err)
		}
	}
	if n := len(entries); n != 7 { // 5 PDFs + failed.txt + .paperfetch
		t.Errorf("output folder has %d entries, want 7: %v", n, entries)
	}

	r := readReport(t, rep)
	if len(r.Papers) != 7 || r.Summary.Succeeded != 5 || r.Summary.Failed != 2 || r.Summary.FailedByReason["not_found"] != 1 || r.Summary.FailedByReason["checksum_mismatch"] != 1 {
		t.Fatalf("report: %+v", r)
	}
	for _, p := range r.Papers {
		switch p.ID {
		case "custom-1":
			if p.State != "succeeded" || p.Attempts != 2 || p.FinalURL != o.URL+"/files/custom.pdf" || p.Path != filepath.Join(out, "custom-1.pdf") || p.SHA256 != sha("/files/custom.pdf") || p.Size != int64(len(body("/files/custom.pdf"))) || p.Cached {
				t.Errorf("custom-1: %+v", p)
			}
		case "bad-sum":
			if p.State != "failed" || p.Reason != "checksum_mismatch" || p.Error == "" || p.Path != "" {
				t.Errorf("bad-sum: %+v", p)
			}
		case "hep-th/9901001":
			if p.State != "succeeded" || p.URLs[0] != o.URL+"/pdf/hep-th/9901001" {
				t.Errorf("hep-th: %+v", p)
			}
		}
	}

	// Standard error is not a terminal: stable, parseable lines, and the summary.
	var last string
	for _, line := range strings.Split(res.stderr, "\n") {
		if strings.HasPrefix(line, "progress ") {
			if !progressLine.MatchString(line) {
				t.Errorf("unparseable progress line %q", line)
			}
			last = line
		}
	}
	if !strings.HasPrefix(last, "progress done=7/7 succeeded=5 failed=2") {
		t.Errorf("last progress line %q", last)
	}
	for _, want := range []string{"failed paper=bad-sum reason=checksum_mismatch", "  succeeded   5\n", "  failed      2  (checksum_mismatch 1, not_found 1)", "  input       1 malformed entry skipped"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, res.stderr)
		}
	}

	// Second run: everything that succeeded is a cache hit; the failures are tried again.
	hits := o.hits("/pdf/2301.00001")
	res = run(t, "", append(testFlags(o, out), "--report", rep, list)...)
	if res.code != 1 {
		t.Fatalf("second run: exit %d\n%s", res.code, res.stderr)
	}
	r = readReport(t, rep)
	if r.Summary.Succeeded != 5 || r.Summary.Cached != 5 {
		t.Fatalf("second run report summary: %+v", r.Summary)
	}
	for _, p := range r.Papers {
		if p.State == "succeeded" && (!p.Cached || p.Path == "") {
			t.Errorf("second run: %+v is not a cache hit", p)
		}
	}
	if o.hits("/pdf/2301.00001") != hits || hits != 1 {
		t.Errorf("2301.00001 was downloaded %d times, want 1", o.hits("/pdf/2301.00001"))
	}
	if !strings.Contains(res.stderr, "(5 cached)") {
		t.Errorf("summary does not show the cache hits:\n%s", res.stderr)
	}
}

// TestGetStdinJSON reads the input from standard input and prints JSON lines.
func TestGetStdinJSON(t *testing.T) {
	o := newOrigin(t)
	out := filepath.Join(t.TempDir(), "out")
	stdin := fmt.Sprintf("%s/a.pdf\n%s/b.pdf\n2301.00003\n", o.URL, o.URL)
	res := run(t, stdin, append(testFlags(o, out), "--json", "-")...)
	if res.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	var papers int
	var summary map[string]any
	for _, line := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("stdout line %q is not JSON: %v", line, err)
		}
		switch rec["type"] {
		case "paper":
			papers++
		case "summary":
			summary = rec
		case "progress", "message":
		default:
			t.Errorf("unknown record %v", rec)
		}
	}
	if papers != 3 || summary == nil || summary["succeeded"] != 3.0 || summary["failed"] != 0.0 {
		t.Fatalf("papers %d summary %v\n%s", papers, summary, res.stdout)
	}
	if _, err := os.Stat(filepath.Join(out, "2301.00003.pdf")); err != nil {
		t.Fatal(err)
	}
}

// TestGetInterruptResume interrupts a run with SIGINT while some downloads hang, then reruns
// it: the rerun resumes the same batch and every paper is downloaded exactly once.
func TestGetInterruptResume(t *testing.T) {
	o := newOrigin(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	list := filepath.Join(dir, "list.txt")
	var lines, paths []string
	for i := range 8 {
		paths = append(paths, fmt.Sprintf("/fast/%d.pdf", i))
	}
	for i := range 6 {
		paths = append(paths, fmt.Sprintf("/slow/%d.pdf", i))
	}
	for _, p := range paths {
		lines = append(lines, o.URL+p)
	}
	if err := os.WriteFile(list, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	// More slots than slow papers, so the hanging downloads never starve the fast ones.
	args := append(testFlags(o, out), "--json", "--concurrency", "8", list)

	stderr := interruptAfter(t, o, args, 8, nil)
	if !strings.Contains(stderr, "Run the same command again to resume") {
		t.Errorf("no resume hint:\n%s", stderr)
	}
	for _, p := range paths[8:] {
		if o.hits(p) != 0 {
			t.Fatalf("%s completed while the gate was closed", p)
		}
	}

	o.open()
	res := run(t, "", args...)
	if res.code != 0 {
		t.Fatalf("resumed run: exit %d\n%s", res.code, res.stderr)
	}
	if !strings.Contains(res.stdout, `"resuming batch get-`) {
		t.Errorf("the rerun did not resume the batch:\n%s", res.stdout)
	}
	for _, p := range paths {
		if n := o.hits(p); n != 1 {
			t.Errorf("%s downloaded %d times, want exactly once", p, n)
		}
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != len(paths)+1 {
		t.Errorf("%d entries in the output folder, want %d PDFs and .paperfetch", len(entries), len(paths))
	}
}

// A bad value in a PAPERFETCH_<FLAG> variable is named with its variable and explained.
func TestUsageEnvironment(t *testing.T) {
	t.Setenv("PAPERFETCH_CONCURRENCY", "lots")
	res := run(t, "", "get", "list.txt")
	if want := `paperfetch get: environment variable PAPERFETCH_CONCURRENCY: invalid value "lots": not a whole number` + "\n"; res.code != 2 || !strings.HasPrefix(res.stderr, want) {
		t.Errorf("exit %d, stderr %q; want 2 and %q", res.code, res.stderr, want)
	}
}

// TestUsage checks that every bad invocation gets a clear message and exit status 2, and that
// help and version work.
func TestUsage(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "list.txt")
	if err := os.WriteFile(list, []byte("https://example.org/a.pdf\nnot an entry\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.txt")
	if err := os.WriteFile(empty, []byte("# nothing\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"get"}, "no INPUT given"},
		{[]string{"get", "--out", out, "--concurrency", "0", list}, "--concurrency must be from 1 to 10000, got 0"},
		{[]string{"get", "--out", out, "--bogus", list}, "flag provided but not defined: --bogus"},
		{[]string{"get", "--out", out, "--per-host-delay", "soon", list}, `invalid value "soon" for flag --per-host-delay: "soon" is not a duration`},
		{[]string{"get", "--out", out, "--max-size", "12XB", list}, "invalid size unit"},
		{[]string{"get", "--out", out, "--format", "xml", list}, `unknown input format "xml"`},
		{[]string{"get", "--out", out, filepath.Join(dir, "nope.txt")}, "nope.txt: no such file, and not a URL, an arXiv id or a DOI"},
		{[]string{"get", "--out", out, "--concurency", "3", list}, "flag provided but not defined: --concurency (did you mean --concurrency?)"},
		{[]string{"gte", list}, `unknown command "gte" (did you mean "get"?)`},
		{[]string{"get", "--out", out, "-x", list}, "flag provided but not defined: -x\n"},
		{[]string{"get", list, "-j", "many"}, `invalid value "many" for flag -j: not a whole number`},
		{[]string{"get", "--out", out, "--timeout", "soon", list}, `invalid value "soon" for flag --timeout: not a duration (write 30s, 2m, 1h)`},
		{[]string{"get", "--out", out, "--json=maybe", list}, `invalid boolean value "maybe" for --json: want true or false`},
		{[]string{"get", "--out", out, "--per-host-delay", "1", list}, `"1" has no unit: write 1s for seconds or 1ms for milliseconds`},
		{[]string{"get", "--out", out, "--strict", list}, "1 malformed input entry (--strict); nothing was downloaded"},
		{[]string{"get", "--out", out, empty}, "no papers in the input"},
		{[]string{"get", "--out", out, "--arxiv-base", "ftp://x", list}, "--arxiv-base must be an http(s) URL"},
		{[]string{"get", "--out", out, "--batch-id", "a b", list}, "--batch-id must be"},
		{[]string{"get", "--out", out, "-", "-"}, "standard input"},
		{[]string{"watch"}, "want exactly one BATCH id"},
		{[]string{"ls", "--state", "done"}, "--state filters the papers of a BATCH"},
		{[]string{"ls", "b1", "--state", "weird"}, `unknown paper state "weird"`},
		{[]string{"pull", "b1", "--parallel", "0"}, "--parallel must be between 1 and 64"},
		{[]string{"version", "extra"}, "version takes no arguments"},
	} {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			t.Parallel()
			res := run(t, "", tc.args...)
			if res.code != 2 || !strings.Contains(res.stderr, tc.want) {
				t.Errorf("paperfetch %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), res.code, res.stderr, tc.want)
			}
			if len(tc.args) > 0 && strings.Contains(res.stdout+res.stderr, "Usage:") {
				t.Errorf("paperfetch %s printed the whole usage for a mistake:\n%s", strings.Join(tc.args, " "), res.stdout)
			}
		})
	}
	for _, args := range [][]string{{"help"}, {"--help"}, {"help", "get"}, {"get", "--help"}, {"get", "-h"}, {"get", "list.txt", "-h"}, {"version"}, {"ls", "-h"}} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			t.Parallel()
			res := run(t, "", args...)
			if res.code != 0 || res.stdout == "" {
				t.Errorf("paperfetch %s: exit %d, stdout %q", strings.Join(args, " "), res.code, res.stdout)
			}
			if n := strings.Count(res.stdout+res.stderr, "Usage:"); n > 1 {
				t.Errorf("paperfetch %s printed the usage %d times:\n%s", strings.Join(args, " "), n, res.stdout)
			}
		})
	}
	if res := run(t, "", "help", "get"); !strings.Contains(res.stdout, "--per-host-delay DURATION") || !strings.Contains(res.stdout, "--concurrency N") {
		t.Errorf("get help:\n%s", res.stdout)
	}
	// An unreachable coordinator is a clear error, not a hang.
	res := run(t, "", "status", "--coordinator", "127.0.0.1:1", "--timeout", "5s")
	if res.code != 5 || !strings.Contains(res.stderr, "cannot reach the coordinator at 127.0.0.1:1") {
		t.Errorf("status against nothing: exit %d %q", res.code, res.stderr)
	}
}
