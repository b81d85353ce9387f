package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var dashboardLine = regexp.MustCompile(`^Dashboard: (http://127\.0\.0\.1:\d+/)$`)

// TestGetDashboard runs `get --dashboard 127.0.0.1:0`: the run prints its dashboard's URL, the
// page and /v1/ answer there while a download hangs (the batch and its downloading paper are
// visible), and the port closes when the run ends.
func TestGetDashboard(t *testing.T) {
	o := newOrigin(t)
	dir := t.TempDir()
	list := filepath.Join(dir, "list.txt")
	if err := os.WriteFile(list, []byte(o.URL+"/fast/1.pdf\n"+o.URL+"/slow/1.pdf\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(testFlags(o, filepath.Join(dir, "out")), "--dashboard", "127.0.0.1:0", list)...)
	cmd.Env = append(os.Environ(), "PAPERFETCH_COORDINATOR=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	var errOut strings.Builder
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := dashboardLine.FindStringSubmatch(sc.Text()); m != nil {
				urls <- m[1]
			}
			errOut.WriteString(sc.Text() + "\n")
		}
	}()
	var base string
	select {
	case base = <-urls:
	case <-drained:
		_ = cmd.Wait()
		t.Fatalf("no dashboard URL printed:\n%s", errOut.String())
	}
	get := func(path string) string {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "GET", base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s %v", path, resp.StatusCode, b, err)
		}
		return string(b)
	}
	if page := get(""); !strings.Contains(page, "app.js") {
		t.Fatalf("dashboard page: %s", page)
	}
	<-o.slowIn // the slow paper is downloading
	var batches struct {
		Batches []struct {
			BatchID string            `json:"batchId"`
			Labels  map[string]string `json:"labels"`
		} `json:"batches"`
	}
	if err := json.Unmarshal([]byte(get("v1/batches")), &batches); err != nil || len(batches.Batches) != 1 ||
		batches.Batches[0].Labels["created-by"] != "paperfetch get" {
		t.Fatalf("the run's batches: %+v %v", batches, err)
	}
	id := batches.Batches[0].BatchID
	if papers := get(fmt.Sprintf("v1/batches/%s/papers?states=PAPER_STATE_DOWNLOADING", id)); !strings.Contains(papers, "/slow/1.pdf") {
		t.Fatalf("downloading papers of %s: %s", id, papers)
	}
	o.open()
	<-drained
	if err := cmd.Wait(); err != nil {
		t.Fatalf("get: %v\n%s", err, errOut.String())
	}
	if resp, err := http.Get(base); err == nil { //nolint:noctx // a refused connection is the point
		resp.Body.Close()
		t.Fatalf("the dashboard still answers after the run: %d", resp.StatusCode)
	}
}
