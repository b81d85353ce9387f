package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestSyncExisting checks that -existing visits every regular file directly in the folder,
// once, skipping subfolders and symbolic links, and hashes each file's whole content.
func TestSyncExisting(t *testing.T) {
	dir := t.TempDir()
	var want [sha256.Size]byte
	var bytes int64
	const files = 37
	for i := range files {
		// Sizes around the 64 KiB copy buffer, so some files take several reads.
		content := make([]byte, i*4099)
		for j := range content {
			content[j] = byte(i + j*13)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("p%02d.pdf", i)), content, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(content)
		for k := range want {
			want[k] ^= sum[k]
		}
		bytes += int64(len(content))
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "inner.pdf"), []byte("not directly in dir"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("p01.pdf", filepath.Join(dir, "link.pdf")); err != nil {
		t.Fatal(err)
	}

	got, err := syncExisting(dir, 4, true)
	if err != nil {
		t.Fatal(err)
	}
	if got.files != files || got.hashed != bytes || got.digest != want || got.notPDF != files {
		t.Errorf("with -hash: %d files, %d bytes, digest %x, %d not PDF; want %d, %d, %x, all not PDF", got.files, got.hashed, got.digest, got.notPDF, files, bytes, want)
	}

	got, err = syncExisting(dir, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if got.files != files || got.hashed != 0 || got.digest != ([sha256.Size]byte{}) {
		t.Errorf("without -hash: %d files, %d bytes, digest %x; want %d files, nothing hashed", got.files, got.hashed, got.digest, files)
	}
}

// TestSyncExistingErrors checks that a missing folder or no workers is an error, not an empty run.
func TestSyncExistingErrors(t *testing.T) {
	if _, err := syncExisting(filepath.Join(t.TempDir(), "missing"), 4, true); err == nil {
		t.Error("missing folder: no error")
	}
	if _, err := syncExisting(t.TempDir(), 0, true); err == nil {
		t.Error("-concurrency 0: no error")
	}
	if _, err := syncExisting("", 4, true); err == nil {
		t.Error("no -dir: no error")
	}
}

// digestOf is the summary syncExisting would give of the regular files directly in dir,
// hashing them, computed here independently.
func digestOf(t *testing.T, dir string) syncStats {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var want syncStats
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		want.add(fileResult{hashed: true, pdf: strings.HasPrefix(string(b), "%PDF-"), size: int64(len(b)), sum: sha256.Sum256(b)})
	}
	return want
}

// sameSet reports whether two summaries name the same files (count, bytes, digest, non-PDFs).
func sameSet(a, b syncStats) bool {
	return a.files == b.files && a.hashed == b.hashed && a.digest == b.digest && a.notPDF == b.notPDF
}

// TestWatch runs a child that writes files into the watched folder in every way a downloader
// might (written once, rewritten with other content, written and renamed into place, written
// and deleted, not a PDF, in a subfolder) and checks that -watch's summary is exactly that of
// the files left in the folder, with their final content: each was processed after its last
// close, and files that left the folder are not counted.
func TestWatch(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("-watch needs inotify")
	}
	dir := filepath.Join(t.TempDir(), "out")
	script := `cd "$1" || exit 1
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do printf '%%PDF-1.7 paper %s' "$i" > "p$i.pdf"; done
printf '%%PDF-1.7 first' > twice.pdf
printf '%%PDF-1.7 second, longer than the first' > twice.pdf
printf '%%PDF-1.7 third' > twice.pdf
printf '%%PDF-1.7 renamed' > tmp.part && mv tmp.part renamed.pdf
printf '%%PDF-1.7 gone' > gone.pdf && rm gone.pdf
printf '<html>not a PDF' > error.html
mkdir sub && printf '%%PDF-1.7 inner' > sub/inner.pdf`
	got, err := runWatch(t.Context(), dir, 100, 3, true, []string{"sh", "-c", script, "sh", dir})
	if err != nil {
		t.Fatal(err)
	}
	want := digestOf(t, dir)
	if want.files != 15 || want.notPDF != 1 {
		t.Fatalf("the child left %d files (%d not PDF); want 15 (1)", want.files, want.notPDF)
	}
	if !sameSet(got, want) {
		t.Errorf("-watch: %s; the folder holds %s", got.summary(true), want.summary(true))
	}
	if got.passes < got.files {
		t.Errorf("%d passes for %d files", got.passes, got.files)
	}
}

// TestWatchErrors checks that a failing child, a folder that is not empty, no command and more
// files than -n are errors.
func TestWatchErrors(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("-watch needs inotify")
	}
	if _, err := runWatch(t.Context(), filepath.Join(t.TempDir(), "a"), 10, 2, true, []string{"sh", "-c", "exit 3"}); err == nil {
		t.Error("child exiting 3: no error")
	}
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "old.pdf"), []byte("%PDF-"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runWatch(t.Context(), full, 10, 2, true, []string{"true"}); err == nil {
		t.Error("folder not empty: no error")
	}
	if _, err := runWatch(t.Context(), filepath.Join(t.TempDir(), "b"), 10, 2, true, nil); err == nil {
		t.Error("no command: no error")
	}
	d := filepath.Join(t.TempDir(), "c")
	if _, err := runWatch(t.Context(), d, 2, 2, true, []string{"sh", "-c", `cd "$1" && : > a && : > b && : > c`, "sh", d}); err == nil {
		t.Error("3 files with -n 2: no error")
	}
}

// TestTrackOverflow drives track through its event seam: a file is processed, then rewritten
// while the (simulated) queue overflows and the rewrite's close event is lost, and two more
// files are written with no event at all. After the overflow, every file must be processed
// again or for the first time once events end, so the summary is of the final contents.
func TestTrackOverflow(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("syncEntry needs Linux")
	}
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.pdf", "%PDF-1.7 a, first")
	processed := make(chan string, 16)
	process := func(name string, buf []byte) (fileResult, bool, error) {
		res, present, err := syncEntry(dir, name, true, buf)
		processed <- name
		return res, present, err
	}
	events := make(chan []watchEvent)
	done := startTrack(dir, events, 2, process)
	events <- []watchEvent{{name: "a.pdf"}}
	if name := <-processed; name != "a.pdf" {
		t.Fatalf("processed %q, want a.pdf", name)
	}
	write("a.pdf", "%PDF-1.7 a, rewritten: its close event was lost")
	write("b.pdf", "%PDF-1.7 b, never reported")
	write("c.txt", "c, never reported, not a PDF")
	events <- []watchEvent{{overflow: true}}
	close(events)
	out := <-done
	if out.err != nil {
		t.Fatal(out.err)
	}
	if want := digestOf(t, dir); !sameSet(out.st, want) {
		t.Errorf("after an overflow: %s; the folder holds %s", out.st.summary(true), want.summary(true))
	}
	if out.st.passes != 4 {
		t.Errorf("%d passes, want 4 (a twice, b and c once)", out.st.passes)
	}
}

// TestTrackNoOverflow checks that without an overflow track processes only the names it is
// told about (no scan), and that a name it is told about that left the folder is not counted.
func TestTrackNoOverflow(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("syncEntry needs Linux")
	}
	dir := t.TempDir()
	for _, name := range []string{"a.pdf", "unreported.pdf"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("%PDF-1.7 "+name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	events := make(chan []watchEvent, 2)
	events <- []watchEvent{{name: "a.pdf"}, {name: "a.pdf"}, {name: "deleted.pdf"}}
	close(events)
	process := func(name string, buf []byte) (fileResult, bool, error) { return syncEntry(dir, name, true, buf) }
	st, err := track(dir, events, 2, 10, func() {}, process)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "a.pdf"))
	if err != nil {
		t.Fatal(err)
	}
	var want syncStats
	want.add(fileResult{hashed: true, pdf: true, size: int64(len(b)), sum: sha256.Sum256(b)})
	if !sameSet(st, want) || st.passes != 2 {
		t.Errorf("got %s in %d passes; want %s in 2 (a.pdf once, deleted.pdf found gone)", st.summary(true), st.passes, want.summary(true))
	}
}

// TestTrackAgain checks that a file reported again while a pass on it is under way is
// processed once more after that pass: the first pass reads the old content, the file is
// rewritten and reported before that pass ends, and the summary must be of the new content.
func TestTrackAgain(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("syncEntry needs Linux")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "a.pdf")
	if err := os.WriteFile(path, []byte("%PDF-1.7 old"), 0o644); err != nil {
		t.Fatal(err)
	}
	hashed, proceed := make(chan struct{}), make(chan struct{})
	first := true // read and written by the one worker only
	process := func(name string, buf []byte) (fileResult, bool, error) {
		res, present, err := syncEntry(dir, name, true, buf)
		if first {
			first = false
			hashed <- struct{}{}
			<-proceed
		}
		return res, present, err
	}
	events := make(chan []watchEvent)
	done := startTrack(dir, events, 1, process)
	events <- []watchEvent{{name: "a.pdf"}}
	<-hashed
	if err := os.WriteFile(path, []byte("%PDF-1.7 new, written during the first pass"), 0o644); err != nil {
		t.Fatal(err)
	}
	events <- []watchEvent{{name: "a.pdf"}}
	close(proceed)
	close(events)
	out := <-done
	if out.err != nil {
		t.Fatal(out.err)
	}
	if want := digestOf(t, dir); !sameSet(out.st, want) || out.st.passes != 2 {
		t.Errorf("got %s in %d passes; want %s in 2", out.st.summary(true), out.st.passes, want.summary(true))
	}
}

// trackOutcome is what track returned.
type trackOutcome struct {
	st  syncStats
	err error
}

// startTrack runs track on dir's events with conc workers (at most 10 files) and process in a
// goroutine, and returns where its outcome arrives.
func startTrack(dir string, events <-chan []watchEvent, conc int, process func(string, []byte) (fileResult, bool, error)) <-chan trackOutcome {
	done := make(chan trackOutcome, 1)
	go func() {
		st, err := track(dir, events, conc, 10, func() {}, process)
		done <- trackOutcome{st, err}
	}()
	return done
}
