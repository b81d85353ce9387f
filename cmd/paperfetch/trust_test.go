package main_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Papers given as arguments (URLs, arXiv ids, a quoted URL with a fragment) are downloaded;
// each PDF is an ordinary file, so that editing one leaves the cache intact: the rerun puts
// the original back, reports the stored checksum and leaves no temporary file behind.
func TestGetArgumentsAndOrdinaryFiles(t *testing.T) {
	o := newOrigin(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	args := append(testFlags(o, out), o.URL+"/files/a.pdf", "<"+o.URL+"/files/b.pdf#page=3>", "2301.00001", "--report", filepath.Join(dir, "r.json"))
	res := run(t, "", args...)
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	pdf := filepath.Join(out, "2301.00001.pdf")
	st, err := os.Stat(pdf)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.Sys().(*syscall.Stat_t).Nlink; n != 1 {
		t.Fatalf("%s has %d links: a hard link to the cache", pdf, n)
	}
	r := readReport(t, filepath.Join(dir, "r.json"))
	if len(r.Papers) != 3 {
		t.Fatalf("report %+v", r)
	}
	for _, p := range r.Papers {
		if p.ID != "2301.00001" && !strings.HasPrefix(p.ID, "a-") && !strings.HasPrefix(p.ID, "b-") {
			t.Errorf("paper %+v", p)
		}
		if strings.HasPrefix(p.ID, "b-") && p.URLs[0] != o.URL+"/files/b.pdf" {
			t.Errorf("the fragment or the brackets were kept: %v", p.URLs)
		}
	}
	// The user edits a PDF.
	f, err := os.OpenFile(pdf, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("% my notes\n"); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	res = run(t, "", args...)
	if res.code != 0 {
		t.Fatalf("rerun: exit %d\n%s", res.code, res.stderr)
	}
	if got, _ := os.ReadFile(pdf); !bytes.Equal(got, body("/pdf/2301.00001")) {
		t.Error("the rerun did not restore the PDF from an intact cache")
	}
	r = readReport(t, filepath.Join(dir, "r.json"))
	for _, p := range r.Papers {
		if p.ID == "2301.00001" && (p.SHA256 != sha("/pdf/2301.00001") || !p.Cached) {
			t.Errorf("rerun report: %+v", p)
		}
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") || strings.HasSuffix(e.Name(), ".part") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
	// --link: hard links to the cache, on request.
	res = run(t, "", append(testFlags(o, filepath.Join(dir, "linked")), "--link", o.URL+"/files/c.pdf")...)
	if res.code != 0 {
		t.Fatalf("--link: exit %d\n%s", res.code, res.stderr)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "linked", "c-*.pdf"))
	if len(matches) != 1 {
		t.Fatalf("--link output %v", matches)
	}
	if st, err := os.Stat(matches[0]); err != nil || st.Sys().(*syscall.Stat_t).Nlink != 2 {
		t.Errorf("--link: %v %v, want a hard link", st, err)
	}
}

// A run with failures writes OUT/failed.txt, an input for the next run, and says how to retry.
func TestGetFailedList(t *testing.T) {
	o := newOrigin(t)
	out := filepath.Join(t.TempDir(), "out")
	res := run(t, "", append(testFlags(o, out), o.URL+"/files/ok.pdf", o.URL+"/missing/gone.pdf")...)
	if res.code != 1 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	list := filepath.Join(out, "failed.txt")
	data, err := os.ReadFile(list)
	if err != nil || !strings.Contains(string(data), "# not_found: ") || !strings.Contains(string(data), o.URL+"/missing/gone.pdf") || strings.Contains(string(data), "ok.pdf") {
		t.Fatalf("failed.txt: %v\n%s", err, data)
	}
	if want := "To retry the failed papers: paperfetch get --out " + out + " " + list; !strings.Contains(res.stderr, want) {
		t.Errorf("summary lacks %q:\n%s", want, res.stderr)
	}
	res = run(t, "", append(testFlags(o, out), list)...)
	if res.code != 1 || !strings.Contains(res.stderr, "failed paper=gone-") || !strings.Contains(res.stderr, "total       1\n") {
		t.Errorf("rerun of failed.txt: exit %d\n%s", res.code, res.stderr)
	}
}

// An input in a format not read yet is named in one message (exit 2), not one error per line.
func TestGetUnsupportedFormat(t *testing.T) {
	dir := t.TempDir()
	bib := filepath.Join(dir, "refs.xml")
	if err := os.WriteFile(bib, []byte("<?xml version=\"1.0\"?>\n<xml>\n<records>\n<record/>\n</records>\n</xml>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res := run(t, "", "get", "--out", filepath.Join(dir, "out"), bib)
	if res.code != 2 || !strings.Contains(res.stderr, "refs.xml looks like XML") || strings.Count(res.stderr, "\n") > 2 {
		t.Errorf("exit %d\n%s", res.code, res.stderr)
	}
}

// mountTmpfs mounts a tmpfs of size (e.g. "2m") in a temporary folder, unmounted at the end of
// the test; the test is skipped where mounting is not allowed (not root).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	return mnt
}

// A full disk stops the run at once with exit status 4, keeping what is done; nothing is
// retried into the full disk. The output folder is a 2 MiB tmpfs (root only).
func TestGetDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, "2m")
	o := newOrigin(t)
	var args []string
	for i := range 60 { // 60 x 20 KiB = 1.2 MiB of PDFs, twice (cache + output): more than 2 MiB
		args = append(args, o.URL+"/files/p"+strings.Repeat("x", i%3)+string(rune('a'+i%26))+string(rune('a'+i/26))+".pdf")
	}
	out := filepath.Join(mnt, "out")
	res := run(t, "", append(append(testFlags(o, out), "--concurrency", "4"), args...)...)
	if res.code != 4 {
		t.Fatalf("exit %d, want 4 (disk full)\n%s", res.code, res.stderr)
	}
	if !strings.Contains(res.stderr, "no space left on the device") || !strings.Contains(res.stderr, "run the same command again to resume") {
		t.Errorf("stderr:\n%s", res.stderr)
	}
	if strings.Contains(res.stderr, "attempts_exhausted") {
		t.Errorf("the full disk was retried:\n%s", res.stderr)
	}
}

// The disk fills up while downloads run, and it is the embedded coordinator's own store that
// cannot be written (2,000 papers fail with 404 once the disk is full: no PDF, no spool, only
// failure records to commit): the run stops with exit status 4 and says why, instead of waiting
// forever for a coordinator that stopped (TestGetDiskFull hung so about once in 40 runs).
func TestGetDiskFillsUnderTheStore(t *testing.T) {
	mnt := mountTmpfs(t, "8m")
	gate := make(chan struct{})
	arrived := make(chan struct{}, 10000)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(origin.Close)
	var lines []string
	for i := range 2000 {
		lines = append(lines, fmt.Sprintf("%s/missing/%d-with-a-longer-name-for-a-longer-error-message.pdf", origin.URL, i))
	}
	list := filepath.Join(t.TempDir(), "list.txt")
	if err := os.WriteFile(list, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	g := startGet(t, []string{"get", "--out", filepath.Join(mnt, "out"), "--allow-private-networks", "--per-host-delay", "0s",
		"--per-host-concurrency", "16", "--retries", "0", "--json", list})
	<-arrived
	fill, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4<<10)
	for {
		if _, err := fill.Write(chunk); err != nil {
			break
		}
	}
	_ = fill.Close()
	close(gate)
	code := g.wait(t)
	stderr := g.stderr.String()
	if code != 4 || !strings.Contains(stderr, "no space left on the device") || !strings.Contains(stderr, "run the same command again to resume") {
		t.Errorf("exit %d, want 4 and what to do\n%s", code, stderr)
	}
}
