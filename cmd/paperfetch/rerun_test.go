package main_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// After Ctrl-C, a rerun with an edited list replaces the interrupted batch (saying so) instead of
// downloading the old one first; what the old run finished is reused from the cache.
func TestGetRerunWithEditedList(t *testing.T) {
	o := newOrigin(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	list := filepath.Join(dir, "list.txt")
	first := []string{o.URL + "/fast/1.pdf", o.URL + "/fast/2.pdf", o.URL + "/slow/1.pdf"}
	if err := os.WriteFile(list, []byte(strings.Join(first, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(testFlags(o, out), "--json", list)
	interruptAfter(t, o, args, 2, func(rec map[string]any) {
		if rec["path"] == "" || rec["url"] == "" || rec["sha256"] == "" {
			t.Errorf("paper record without path, url or sha256: %v", rec)
		}
	})

	// The user appends a paper and runs again.
	f, err := os.OpenFile(list, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(o.URL + "/fast/3.pdf\n")
	_ = f.Close()
	o.open()
	res := run(t, "", append(testFlags(o, out), list)...)
	if res.code != 0 {
		t.Fatalf("rerun: exit %d\n%s", res.code, res.stderr)
	}
	// 2 cached, or 3 when the old batch's slow paper finished first: before it was cancelled,
	// or when the rerun's fetchers, started before its check of earlier batches, resumed the
	// old batch and finished it (the origin answers at once now). A finished batch is not
	// replaced, so the rerun says nothing of it then.
	oldFinished := strings.Contains(res.stderr, "succeeded   4  (3 cached)")
	if !oldFinished && !strings.Contains(res.stderr, "succeeded   4  (2 cached)") {
		t.Errorf("summary:\n%s", res.stderr)
	}
	if !oldFinished && (!strings.Contains(res.stderr, "the input differs from the interrupted run in "+out) || !strings.Contains(res.stderr, "2 of 3 done): that run is replaced by this one; its finished papers are reused")) {
		t.Errorf("the rerun does not say what it does:\n%s", res.stderr)
	}
	for _, p := range []string{"/fast/1.pdf", "/fast/2.pdf", "/fast/3.pdf", "/slow/1.pdf"} {
		if n := o.hits(p); n != 1 {
			t.Errorf("%s downloaded %d times", p, n)
		}
	}
}

// interruptAfter runs `get` with args (which include --json), waits until n papers succeeded
// (passing each succeeded record to check) and a slow download hangs, sends SIGINT, and checks
// that the run exits with status 3 and its slow requests left the origin. It returns the run's standard error.
func interruptAfter(t *testing.T, o *origin, args []string, n int, check func(map[string]any)) string {
	t.Helper()
	return interruptWhen(t, o, args, n, func(rec map[string]any) bool {
		if rec["state"] != "succeeded" {
			return false
		}
		if check != nil {
			check(rec)
		}
		return true
	})
}

// interruptWhen is interruptAfter counting the paper records for which counts is true.
func interruptWhen(t *testing.T, o *origin, args []string, n int, counts func(map[string]any) bool) string {
	t.Helper()
	g := startGet(t, args)
	seen := 0
	sc := bufio.NewScanner(g.stdout)
	for seen < n && sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["type"] == "paper" && counts(rec) {
			seen++
		}
	}
	if seen < n {
		t.Fatalf("only %d of %d papers before the output ended\n%s", seen, n, g.stderr.String())
	}
	<-o.slowIn // at least one slow download is in flight
	if err := g.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := g.wait(t); code != 3 {
		t.Fatalf("interrupted run: exit %d, want 3\n%s", code, g.stderr.String())
	}
	o.waitGateEmpty(t)
	return g.stderr.String()
}
