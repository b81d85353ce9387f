package main_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/paperfetch/paperfetch/coordinator"
	"github.com/paperfetch/paperfetch/embedded"
)

// startCoordinator runs a coordinator with two fetchers on a loopback port, for the remote
// commands to talk to.
func startCoordinator(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := embedded.DefaultOptions()
	o.Dir, o.Fetchers, o.Concurrency, o.Listener = t.TempDir(), 2, 8, lis
	o.PerHostDelay, o.PerHostConcurrency, o.Retries = 0, 16, 1
	o.AllowPrivateNetworks = true
	o.TuneCoordinator = func(c *coordinator.Config) { c.NoSync = true }
	sys, err := embedded.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sys.Close(); err != nil {
			t.Error(err)
		}
	})
	return sys.Addr()
}

// TestRemoteCommands drives a running coordinator: submit, watch, status, ls, pull, cancel.
func TestRemoteCommands(t *testing.T) {
	o := newOrigin(t)
	addr := startCoordinator(t)
	dir := t.TempDir()
	list := filepath.Join(dir, "list.txt")
	input := fmt.Sprintf("%s/r/one.pdf\n%s/r/two.pdf\n2301.00009\n%s/missing.pdf\n", o.URL, o.URL, o.URL)
	if err := os.WriteFile(list, []byte(input), 0o644); err != nil {
		t.Fatal(err)
	}
	c := []string{"--coordinator", addr}

	res := run(t, "", append([]string{"submit", "--batch-id", "r1", "--arxiv-base", o.URL, "--label", "team=test", list}, c...)...)
	if res.code != 0 || res.stdout != "r1\n" || !strings.Contains(res.stderr, "submitted 4 papers as batch r1") {
		t.Fatalf("submit: %+v", res)
	}
	res = run(t, "", append([]string{"watch", "r1"}, c...)...)
	if res.code != 1 || !strings.Contains(res.stderr, "Batch r1: completed") || !strings.Contains(res.stderr, "not_found 1") {
		t.Fatalf("watch: %+v", res)
	}
	// Resubmitting the same batch is idempotent.
	res = run(t, "", append([]string{"submit", "--batch-id", "r1", "--arxiv-base", o.URL, list}, c...)...)
	if res.code != 0 || res.stdout != "r1\n" {
		t.Fatalf("resubmit: %+v", res)
	}

	res = run(t, "", append([]string{"status", "r1"}, c...)...)
	for _, want := range []string{"Batch r1: completed", "4/4 done: 3 succeeded (0 cached), 1 failed", "labels", "team=test"} {
		if res.code != 0 || !strings.Contains(res.stdout, want) {
			t.Errorf("status r1 lacks %q: %+v", want, res)
		}
	}
	res = run(t, "", append([]string{"status"}, c...)...)
	if res.code != 0 || !strings.Contains(res.stdout, "BATCH") || !strings.Contains(res.stdout, "r1 ") {
		t.Errorf("status: %+v", res)
	}
	res = run(t, "", append([]string{"ls"}, c...)...)
	if res.code != 0 || !strings.Contains(res.stdout, "r1 ") {
		t.Errorf("ls: %+v", res)
	}
	res = run(t, "", append([]string{"ls", "r1", "--state", "failed"}, c...)...)
	if lines := strings.Split(strings.TrimSpace(res.stdout), "\n"); res.code != 0 || len(lines) != 2 || !strings.Contains(lines[1], "failed") || !strings.Contains(lines[1], "not_found") {
		t.Errorf("ls --state failed: %+v", res)
	}
	res = run(t, "", append([]string{"ls", "r1", "--json"}, c...)...)
	if res.code != 0 || strings.Count(res.stdout, "\n") != 4 || !strings.Contains(res.stdout, `"paper_id":"2301.00009"`) {
		t.Errorf("ls --json: %+v", res)
	}
	res = run(t, "", append([]string{"status", "nope"}, c...)...)
	if res.code != 1 || !strings.Contains(res.stderr, "nope") {
		t.Errorf("status of an unknown batch: %+v", res)
	}

	// retry: the failed paper is queued again; the origin still answers 404, so it fails again.
	res = run(t, "", append([]string{"retry", "r1"}, c...)...)
	if res.code != 0 || res.stdout != "batch r1: running, 1 failed paper queued again\n" {
		t.Fatalf("retry: %+v", res)
	}
	res = run(t, "", append([]string{"watch", "r1"}, c...)...)
	if res.code != 1 || !strings.Contains(res.stderr, "Batch r1: completed") || !strings.Contains(res.stderr, "not_found 1") {
		t.Fatalf("watch after retry: %+v", res)
	}

	// pull: every succeeded paper, verified; a second pull finds them; a partial file resumes.
	out := filepath.Join(dir, "pulled")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	full := body("/pdf/2301.00009")
	if err := os.WriteFile(filepath.Join(out, "2301.00009.pdf.part"), full[:1000], 0o644); err != nil {
		t.Fatal(err)
	}
	res = run(t, "", append([]string{"pull", "r1", "--out", out}, c...)...)
	if res.code != 0 || !strings.Contains(res.stderr, "pulled 3 papers") {
		t.Fatalf("pull: %+v", res)
	}
	got, err := os.ReadFile(filepath.Join(out, "2301.00009.pdf"))
	if err != nil || !bytes.Equal(got, full) {
		t.Fatalf("pulled 2301.00009.pdf: %v", err)
	}
	res = run(t, "", append([]string{"pull", "r1", "--out", out}, c...)...)
	if res.code != 0 || !strings.Contains(res.stderr, "pulled 0 papers (0 B) into "+out+", 3 already there") {
		t.Fatalf("second pull: %+v", res)
	}

	// A corrupt partial file is detected by the checksum, removed, and the next pull succeeds.
	target := filepath.Join(out, "2301.00009.pdf")
	if err := os.Remove(target); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target+".part", []byte("%PDF-garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	res = run(t, "", append([]string{"pull", "r1", "--out", out}, c...)...)
	if res.code != 1 || !strings.Contains(res.stderr, "partial file removed") {
		t.Fatalf("pull over a corrupt partial file: %+v", res)
	}
	res = run(t, "", append([]string{"pull", "r1", "--out", out}, c...)...)
	if got, err := os.ReadFile(target); res.code != 0 || err != nil || !bytes.Equal(got, full) {
		t.Fatalf("pull after removing the corrupt part: %+v %v", res, err)
	}

	// cancel: a batch whose downloads hang is cancelled; watching it then exits 1.
	slow := filepath.Join(dir, "slow.txt")
	if err := os.WriteFile(slow, []byte(o.URL+"/slow/a.pdf\n"+o.URL+"/slow/b.pdf\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res = run(t, "", append([]string{"submit", "--batch-id", "r2", slow}, c...)...)
	if res.code != 0 {
		t.Fatalf("submit r2: %+v", res)
	}
	<-o.slowIn
	// pull of a running batch says it is incomplete (exit 1).
	res = run(t, "", append([]string{"pull", "r2", "--out", filepath.Join(dir, "r2")}, c...)...)
	if res.code != 1 || !strings.Contains(res.stderr, "batch r2 is still running (0 of 2 papers done): this pull is incomplete; run it again later, or with --wait") {
		t.Fatalf("pull of a running batch: %+v", res)
	}
	// watch and status of a batch that does not exist: one clear line.
	for _, cmd := range []string{"watch", "status"} {
		res = run(t, "", append([]string{cmd, "nope"}, c...)...)
		if res.code != 1 || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 || !strings.Contains(res.stderr, "nope") {
			t.Errorf("%s of an unknown batch: %+v", cmd, res)
		}
	}
	res = run(t, "", append([]string{"cancel", "r2"}, c...)...)
	if res.code != 0 || !strings.Contains(res.stdout, "batch r2: cancelled") {
		t.Fatalf("cancel: %+v", res)
	}
	res = run(t, "", append([]string{"watch", "--quiet", "r2"}, c...)...)
	if res.code != 1 || !strings.Contains(res.stderr, "Batch r2: cancelled") {
		t.Fatalf("watch of a cancelled batch: %+v", res)
	}
	res = run(t, "", append([]string{"retry", "r2"}, c...)...)
	if res.code != 1 || !strings.Contains(res.stderr, "cancelled") {
		t.Fatalf("retry of a cancelled batch: %+v", res)
	}

	// rm: the settled batch is deleted; it is then unknown.
	res = run(t, "", append([]string{"rm", "r2"}, c...)...)
	if res.code != 0 || !strings.Contains(res.stdout, "deleted batch r2 (2 papers)") {
		t.Fatalf("rm: %+v", res)
	}
	res = run(t, "", append([]string{"status", "r2"}, c...)...)
	if res.code == 0 || !strings.Contains(res.stderr, `batch "r2" does not exist`) {
		t.Fatalf("status of a deleted batch: %+v", res)
	}

	// The papers of a listing are an input as is: ls --json | submit -.
	res = run(t, "", append([]string{"ls", "r1", "--json"}, c...)...)
	if res.code != 0 {
		t.Fatalf("ls r1 --json: %+v", res)
	}
	res = run(t, res.stdout, append([]string{"submit", "--batch-id", "r3", "-"}, c...)...)
	if res.code != 0 || strings.Contains(res.stderr, "paperfetch:") {
		t.Fatalf("ls --json | submit -: %+v", res)
	}
	res = run(t, "", append([]string{"ls", "r3"}, c...)...)
	if res.code != 0 || strings.Count(res.stdout, "  cached") != 3 || !strings.Contains(res.stdout, "2301.00009") {
		t.Errorf("r3: %+v", res)
	}

	// The failed papers of a listing are an input as is: ls --state failed --json | submit -.
	res = run(t, "", append([]string{"ls", "r1", "--state", "failed", "--json"}, c...)...)
	if res.code != 0 || strings.Count(res.stdout, "\n") != 1 {
		t.Fatalf("ls r1 --state failed --json: %+v", res)
	}
	res = run(t, res.stdout, append([]string{"submit", "--wait", "--quiet", "--batch-id", "r4", "-"}, c...)...)
	if res.code != 1 || strings.Contains(res.stderr, "paperfetch:") || !strings.Contains(res.stderr, "submitted 1 paper as batch r4\n") || strings.Contains(res.stderr, "elapsed     0ms") || !strings.Contains(res.stderr, "  total       1\n") || !strings.Contains(res.stderr, "not_found 1") {
		t.Fatalf("ls --state failed --json | submit -: %+v", res)
	}

	// Watching a finished batch sums it up with its own duration (as status says), not the
	// watch's few milliseconds.
	res = run(t, "", append([]string{"status", "r4"}, c...)...)
	took := regexp.MustCompile(`\(took (\S+)\)`).FindStringSubmatch(res.stdout)
	if took == nil {
		t.Fatalf("status r4: %+v", res)
	}
	res = run(t, "", append([]string{"watch", "--quiet", "r4"}, c...)...)
	if !strings.Contains(res.stderr, "  elapsed     "+took[1]+"  (") {
		t.Errorf("watch of a finished batch: elapsed is not %s:\n%s", took[1], res.stderr)
	}

	// pull --wait of a running batch waits for it, then pulls everything.
	res = run(t, o.URL+"/slow/c.pdf\n", append([]string{"submit", "--batch-id", "r6", "-"}, c...)...)
	if res.code != 0 {
		t.Fatalf("submit r6: %+v", res)
	}
	<-o.slowIn
	pw := startGet(t, append([]string{"pull", "r6", "--wait", "--out", filepath.Join(dir, "r6")}, c...))
	for !strings.Contains(pw.stderr.String(), "waiting for batch r6 to finish") {
		time.Sleep(50 * time.Millisecond) // another process: polled
	}
	o.open()
	if code := pw.wait(t); code != 0 || !strings.Contains(pw.stderr.String(), "pulled 1 paper") {
		t.Fatalf("pull --wait: exit %d\n%s", code, pw.stderr.String())
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "r6", "c-*.pdf")); len(m) != 1 {
		t.Errorf("pull --wait: %v", m)
	} else if got, err := os.ReadFile(m[0]); err != nil || !bytes.Equal(got, body("/slow/c.pdf")) {
		t.Errorf("pull --wait: %v", err)
	}

	// submit --wait --json from standard input.
	res = run(t, o.URL+"/r/three.pdf\n", append([]string{"submit", "--wait", "--json", "-"}, c...)...)
	if res.code != 0 || !strings.Contains(res.stdout, `"type":"summary"`) || !strings.Contains(res.stdout, `"succeeded":1`) {
		t.Fatalf("submit --wait --json: %+v", res)
	}
}
