package cli

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paperfetch/paperfetch/internal/syncbuf"
)

// mountTmpfs mounts a tmpfs of size at dir (root only: the test is skipped otherwise).
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v): %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
}

// fill writes a file into dir until its file system is full.
func fill(dir string) {
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		return
	}
	defer f.Close()
	block := make([]byte, 64<<10)
	for {
		if _, err := f.Write(block); err != nil {
			break
		}
	}
	small := make([]byte, 512)
	for {
		if _, err := f.Write(small); err != nil {
			return
		}
	}
}

// When the embedded coordinator stops by itself (here: its store's file system is full, while
// the blobs and the PDFs still have room), `get` stops at once with the reason instead of
// waiting for a coordinator that will not come back. (Before, the watch reconnected forever:
// `get` hung, printing the same progress line.)
func TestGetStopsWhenTheCoordinatorStops(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	state := filepath.Join(out, ".paperfetch")
	mountTmpfs(t, state, "1m")
	mountTmpfs(t, filepath.Join(state, "blobs"), "64m")
	var once sync.Once
	// The request of paper 10 (the batch is sealed and downloading by then) fills the state
	// folder: the coordinator's next commit fails.
	srv := pdfOrigin(t, func(id string, _ *http.Request) bool {
		if id == "10" {
			once.Do(func() { fill(state) })
		}
		return true
	})
	var stdout, stderr syncbuf.Buffer
	a := &app{env: Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, LookupEnv: func(string) (string, bool) { return "", false }}}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- a.get(ctx, append(getArgs(out, "--quiet"), writeList(t, srv, 20))) }()
	bound := time.NewTimer(60 * time.Second) // a failure bound, not a synchronisation
	defer bound.Stop()
	var err error
	select {
	case err = <-done:
	case <-bound.C:
		cancel()
		<-done
		t.Fatalf("get still running 60 s after its coordinator stopped\n%s", stderr.String())
	}
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != ExitStorage {
		t.Fatalf("get: %v, want exit %d (storage full)\n%s", err, ExitStorage, stderr.String())
	}
	if !strings.Contains(stderr.String(), "no space left") {
		t.Errorf("stderr does not say why:\n%s", stderr.String())
	}
}
