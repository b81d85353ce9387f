package main_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paperfetch/paperfetch/internal/syncbuf"
)

// The short flags -o, -j and -q work like their long forms, and --quiet prints only the
// failures (errors) and the summary: no progress lines, no host lines, no chatter.
func TestGetShortFlagsQuiet(t *testing.T) {
	o := newOrigin(t)
	out := filepath.Join(t.TempDir(), "out")
	args := []string{"get", "-o", out, "-j", "2", "-q", "--allow-private-networks", "--per-host-delay", "200ms", "--retries", "0",
		"--arxiv-base", o.URL, o.URL + "/files/q1.pdf", o.URL + "/files/q2.pdf", o.URL + "/files/q3.pdf", "2301.00005", o.URL + "/missing/q.pdf"}
	res := run(t, "", args...)
	if res.code != 1 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "2301.00005.pdf")); err != nil {
		t.Fatalf("-o: %v", err)
	}
	if res.stdout != "" {
		t.Errorf("--quiet wrote to standard output: %q", res.stdout)
	}
	for _, line := range strings.Split(res.stderr, "\n") {
		if strings.HasPrefix(line, "progress ") || strings.HasPrefix(line, "host ") || strings.HasPrefix(line, "resuming") {
			t.Errorf("-q printed %q:\n%s", line, res.stderr)
		}
	}
	for _, want := range []string{"failed q-", "  succeeded   4\n", "To retry the failed papers"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("-q lacks %q:\n%s", want, res.stderr)
		}
	}
	// The rerun (everything cached, the failure tried again) is as quiet.
	res = run(t, "", args...)
	if res.code != 1 || strings.Contains(res.stderr, "progress ") || res.stdout != "" {
		t.Errorf("quiet rerun: exit %d\n%s", res.code, res.stderr)
	}
}

// A second `get` into an output folder that a running `get` uses is refused in one sentence
// (exit 2), and the first run is not disturbed.
func TestGetOutputFolderInUse(t *testing.T) {
	o := newOrigin(t)
	out := filepath.Join(t.TempDir(), "out")
	first := startGet(t, append(testFlags(o, out), "--json", o.URL+"/slow/lock.pdf"))
	<-o.slowIn
	res := run(t, "", append(testFlags(o, out), o.URL+"/files/other.pdf")...)
	want := "paperfetch get: another paperfetch get is already downloading into " + out + "; wait for it to finish, or use another --out\n"
	if res.code != 2 || res.stderr != want {
		t.Errorf("second get: exit %d, stderr %q; want exit 2 and %q", res.code, res.stderr, want)
	}
	o.open()
	if code := first.wait(t); code != 0 {
		t.Errorf("the first run: exit %d\n%s", code, first.stderr.String())
	}
}

// A PDF placed with --link is the cached copy: editing it damages the cache. The rerun notices
// (size and SHA-256 of the cached copy), says so, does not report the damaged copy as cached
// with its old checksum, and the run after it downloads the paper again; no temporary file is
// left behind.
func TestGetLinkEditedCache(t *testing.T) {
	o := newOrigin(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	rep := filepath.Join(dir, "r.json")
	args := append(testFlags(o, out), "--link", "--report", rep, "2301.00007")
	if res := run(t, "", args...); res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	pdf := filepath.Join(out, "2301.00007.pdf")
	f, err := os.OpenFile(pdf, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("% my notes\n")
	_ = f.Close()
	var res result
	for i := 0; i < 2; i++ { // the damage is found by the first rerun, at the latest by the second
		res = run(t, "", args...)
		if got, _ := os.ReadFile(pdf); res.code == 0 && string(got) == string(body("/pdf/2301.00007")) {
			break
		}
		if !strings.Contains(res.stderr, "is damaged") || !strings.Contains(res.stderr, "a new run downloads the paper again") ||
			!strings.Contains(res.stderr, "  errors      1 PDF could not be written to the output folder\n") ||
			!strings.Contains(res.stderr, "\nRun the same command again to write the missing PDF.\n") {
			t.Errorf("rerun %d: exit %d, nothing says the cached copy is damaged:\n%s", i+1, res.code, res.stderr)
		}
	}
	if got, _ := os.ReadFile(pdf); res.code != 0 || string(got) != string(body("/pdf/2301.00007")) {
		t.Fatalf("after two reruns: exit %d, the PDF is not the original\n%s", res.code, res.stderr)
	}
	if n := o.hits("/pdf/2301.00007"); n != 2 {
		t.Errorf("downloaded %d times, want twice (again after the damage)", n)
	}
	r := readReport(t, rep)
	if len(r.Papers) != 1 || r.Papers[0].SHA256 != sha("/pdf/2301.00007") {
		t.Errorf("report %+v", r.Papers)
	}
	assertNoTempFiles(t, out)
}

// assertNoTempFiles fails when a temporary or partial file is left in dir.
func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") || strings.HasSuffix(e.Name(), ".part") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

// Ctrl-C writes the report and OUT/failed.txt of what is done so far, and says how to resume.
func TestGetInterruptWritesFailedAndReport(t *testing.T) {
	o := newOrigin(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	rep := filepath.Join(dir, "r.json")
	args := append(testFlags(o, out), "--retries", "0", "--json", "--report", rep,
		o.URL+"/fast/1.pdf", o.URL+"/fast/2.pdf", o.URL+"/missing/1.pdf", o.URL+"/slow/1.pdf")
	// The paper records of --json carry the path, URL and SHA-256 of a success and the URL and
	// reason of a failure.
	var failedRec map[string]any
	stderr := interruptWhen(t, o, args, 3, func(rec map[string]any) bool {
		if rec["state"] == "failed" {
			failedRec = rec
		}
		return true
	})
	if want := "Interrupted: 3 of 4 papers done (1 failed, listed in " + filepath.Join(out, "failed.txt") + "). Run the same command again to resume."; !strings.Contains(stderr, want) {
		t.Errorf("stderr:\n%s", stderr)
	}
	if failedRec == nil || failedRec["reason"] != "not_found" || failedRec["url"] != o.URL+"/missing/1.pdf" {
		t.Errorf("failed paper record: %v", failedRec)
	}
	data, err := os.ReadFile(filepath.Join(out, "failed.txt"))
	if err != nil || !strings.Contains(string(data), o.URL+"/missing/1.pdf") || strings.Contains(string(data), "slow") {
		t.Errorf("failed.txt after Ctrl-C: %v\n%s", err, data)
	}
	r := readReport(t, rep)
	if len(r.Papers) != 4 || r.Summary.Succeeded != 2 || r.Summary.Failed != 1 {
		t.Errorf("report after Ctrl-C: %+v", r)
	}
	assertNoTempFiles(t, out)
}

// running is a `paperfetch` started in the background.
type running struct {
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr *syncbuf.Buffer
	cancel context.CancelFunc
}

// startGet starts the binary with args; its standard output is a pipe to read.
func startGet(t *testing.T, args []string) *running {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "PAPERFETCH_COORDINATOR=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	g := &running{cmd: cmd, stdout: stdout, stderr: &syncbuf.Buffer{}, cancel: cancel}
	cmd.Stderr = g.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	return g
}

// wait drains the output and returns the exit status.
func (g *running) wait(t *testing.T) int {
	t.Helper()
	_, _ = io.Copy(io.Discard, g.stdout)
	err := g.cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("wait: %v", err)
	return -1
}

// The input forms a researcher pastes: arXiv abs and pdf URLs (fetched from --arxiv-base, named
// by the id), quoted and <>-wrapped URLs, a fragment that does not make a second paper, a
// semicolon-separated CSV export; a skipped line makes the run exit 1 even when every paper
// succeeded, and the summary says so.
func TestGetInputForms(t *testing.T) {
	o := newOrigin(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	list := filepath.Join(dir, "list.txt")
	lines := []string{
		"https://arxiv.org/abs/2301.00011",
		"http://arxiv.org/pdf/2301.00012v2.pdf",
		`"` + o.URL + `/files/quoted.pdf"`,
		"'" + o.URL + "/files/single.pdf'",
		"<" + o.URL + "/files/angle.pdf>",
		o.URL + "/files/angle.pdf#page=3",
		"not a paper at all",
	}
	if err := os.WriteFile(list, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	csv := filepath.Join(dir, "export.csv")
	if err := os.WriteFile(csv, []byte("Key;Title;Url\nsemi-1;A title; "+o.URL+"/files/semi.pdf\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep := filepath.Join(dir, "r.json")
	res := run(t, "", append(testFlags(o, out), "--report", rep, list, csv)...)
	if res.code != 1 {
		t.Fatalf("exit %d, want 1 (a line was skipped)\n%s", res.code, res.stderr)
	}
	for _, want := range []string{"list.txt:7: ", "  succeeded   6\n", "  input       1 malformed entry skipped"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, res.stderr)
		}
	}
	r := readReport(t, rep)
	got := map[string]string{}
	for _, p := range r.Papers {
		got[p.ID] = p.State + " " + strings.Join(p.URLs, ",")
	}
	for id, want := range map[string]string{
		"2301.00011":   "succeeded " + o.URL + "/pdf/2301.00011",
		"2301.00012v2": "succeeded " + o.URL + "/pdf/2301.00012v2",
		"semi-1":       "succeeded " + o.URL + "/files/semi.pdf",
	} {
		if got[id] != want {
			t.Errorf("paper %s: %q, want %q", id, got[id], want)
		}
	}
	if len(r.Papers) != 6 {
		t.Errorf("%d papers, want 6: %v", len(r.Papers), got)
	}
	for _, name := range []string{"2301.00011.pdf", "2301.00012v2.pdf", "semi-1.pdf"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Error(err)
		}
	}
}

// A read-only output file system stops the run at once with exit status 4 and a sentence that
// says so, like a full disk.
func TestGetReadOnlyFileSystem(t *testing.T) {
	mnt := mountTmpfs(t, "4m")
	o := newOrigin(t)
	out := filepath.Join(mnt, "out")
	if res := run(t, "", append(testFlags(o, out), o.URL+"/files/ro1.pdf")...); res.code != 0 {
		t.Fatalf("first run: exit %d\n%s", res.code, res.stderr)
	}
	if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot remount read-only (%v): %s", err, out)
	}
	res := run(t, "", append(testFlags(o, out), o.URL+"/files/ro1.pdf", o.URL+"/files/ro2.pdf")...)
	if res.code != 4 || !strings.Contains(res.stderr, "read-only file system") || strings.Count(strings.TrimSpace(res.stderr), "\n") > 3 {
		t.Errorf("exit %d, want 4 and a short message\n%s", res.code, res.stderr)
	}
}

// Through --proxy (a forward proxy, then an EZproxy-style prefix), with --header and --email:
// every download goes to the proxy, carries the header, and the User-Agent names the contact.
func TestGetProxyHeaderEmail(t *testing.T) {
	var mu sync.Mutex
	var seen []*http.Request
	px := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Clone(context.Background()))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/pdf")
		_, _ = w.Write(body(r.URL.String()))
	}))
	t.Cleanup(px.Close)
	dir := t.TempDir()
	base := []string{"get", "--allow-cidr", "127.0.0.1/32", "--per-host-delay", "0s", "--retries", "0",
		"--header", "X-Api-Key: k-123", "--email", "librarian@example.org"}
	res := run(t, "", append(base, "--out", filepath.Join(dir, "fwd"), "--proxy", px.URL, "http://papers.example.org/a.pdf")...)
	if res.code != 0 {
		t.Fatalf("forward proxy: exit %d\n%s", res.code, res.stderr)
	}
	res = run(t, "", append(base, "--out", filepath.Join(dir, "ez"), "--proxy", px.URL+"/login?url=", "http://papers.example.org/b.pdf")...)
	if res.code != 0 {
		t.Fatalf("prefix proxy: exit %d\n%s", res.code, res.stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("the proxy saw %d requests", len(seen))
	}
	if got := seen[0].URL.String(); got != "http://papers.example.org/a.pdf" {
		t.Errorf("forward proxy request for %q", got)
	}
	if got := seen[1].URL.Query().Get("url"); seen[1].URL.Path != "/login" || got != "http://papers.example.org/b.pdf" {
		t.Errorf("prefix proxy request for %q", seen[1].URL)
	}
	for _, r := range seen {
		if r.Header.Get("X-Api-Key") != "k-123" || !strings.Contains(r.UserAgent(), "librarian@example.org") {
			t.Errorf("request headers %v", r.Header)
		}
	}
}

// A host bound by --per-host-delay and a host throttled after 503s are named in the progress
// lines; the ETA is never below what the per-host delay allows.
func TestGetShowsDelayBoundAndThrottledHosts(t *testing.T) {
	o := newOrigin(t)
	busy := busyOrigin(t, 1)
	out := filepath.Join(t.TempDir(), "out")
	args := append(testFlags(o, out), "--per-host-delay", "700ms", "--per-host-concurrency", "4", "--retries", "3")
	for i := range 6 {
		args = append(args, fmt.Sprintf("%s/files/d%d.pdf", o.URL, i))
	}
	args = append(args, busy.URL+"/files/t1.pdf", busy.URL+"/files/t2.pdf")
	res := run(t, "", args...)
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	host := strings.TrimPrefix(o.URL, "http://")
	if !regexp.MustCompile(`(?m)^host ` + regexp.QuoteMeta(host) + ` state=delay_bound delay=700ms remaining=\d+ min_left=\S+$`).MatchString(res.stderr) {
		t.Errorf("no delay_bound line for %s:\n%s", host, res.stderr)
	}
	busyHost := strings.TrimPrefix(busy.URL, "http://")
	if !strings.Contains(res.stderr, "host "+busyHost+" state=throttled limit=") && !strings.Contains(res.stderr, "host "+busyHost+" state=paused") {
		t.Errorf("no throttled or paused line for %s:\n%s", busyHost, res.stderr)
	}
}

// A rate measured while bytes flowed decays when nothing arrives, and the ETA becomes "?"
// instead of a frozen number.
func TestGetFrozenRateDecays(t *testing.T) {
	o := newOrigin(t)
	out := filepath.Join(t.TempDir(), "out")
	args := testFlags(o, out)
	for i := range 6 {
		args = append(args, fmt.Sprintf("%s/fast/r%d.pdf", o.URL, i))
	}
	args = append(args, o.URL+"/slow/r.pdf")
	g := startGet(t, args)
	<-o.slowIn
	deadline := time.After(time.Minute)
	var last string
	for {
		s := g.stderr.String()
		lines := strings.Split(strings.TrimSpace(s), "\n")
		last = lines[len(lines)-1]
		if strings.HasPrefix(last, "progress done=6/7") && strings.Contains(last, " rate=0B/s ") && strings.HasSuffix(last, " eta=?") {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("the rate did not decay to 0 with eta=? while nothing moved; last line %q\n%s", last, s)
		case <-time.After(200 * time.Millisecond): // another process: polled, like the tmux tests
		}
	}
	o.open()
	if code := g.wait(t); code != 0 {
		t.Errorf("exit %d\n%s", code, g.stderr.String())
	}
}

// An https paper through a forward proxy goes through a CONNECT tunnel to the origin (TLS end
// to end, checked against the origin's certificate); the proxy names the host, the binary never
// resolves it.
func TestGetProxyHTTPSTarget(t *testing.T) {
	origin := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pdf")
		_, _ = w.Write(body(r.URL.Path))
	}))
	t.Cleanup(origin.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: origin.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSL_CERT_FILE", ca) // the binary trusts the test origin's certificate
	var mu sync.Mutex
	var tunnels []string
	px := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		mu.Lock()
		tunnels = append(tunnels, r.Host)
		mu.Unlock()
		up, err := net.Dial("tcp", origin.Listener.Addr().String()) // every host is the test origin
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			_ = up.Close()
			return
		}
		_, _ = rw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n")
		_ = rw.Flush()
		done := make(chan struct{})
		go func() {
			_, _ = io.Copy(up, rw)
			_ = up.Close()
			close(done)
		}()
		_, _ = io.Copy(conn, up)
		_ = conn.Close()
		<-done
	}))
	t.Cleanup(px.Close)
	out := filepath.Join(t.TempDir(), "out")
	res := run(t, "", "get", "--out", out, "--allow-cidr", "127.0.0.1/32", "--per-host-delay", "0s", "--retries", "0",
		"--proxy", px.URL, "https://example.com/papers/tls.pdf")
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	m, _ := filepath.Glob(filepath.Join(out, "tls-*.pdf"))
	if len(m) != 1 {
		t.Fatalf("output %v", m)
	}
	if got, _ := os.ReadFile(m[0]); !bytes.Equal(got, body("/papers/tls.pdf")) {
		t.Error("wrong content")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(tunnels) != 1 || tunnels[0] != "example.com:443" {
		t.Errorf("tunnels %v, want one to example.com:443", tunnels)
	}
}
