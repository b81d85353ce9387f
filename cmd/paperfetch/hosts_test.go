package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A host that answers 503 with Retry-After is shown as paused, with until when and why, in
// the progress lines (not only in the log).
func TestGetShowsPausedHost(t *testing.T) {
	busy := busyOrigin(t, 3)
	o := newOrigin(t)
	out := filepath.Join(t.TempDir(), "out")
	res := run(t, "", append(testFlags(o, out), "--retries", "3", busy.URL+"/files/a.pdf", busy.URL+"/files/b.pdf")...)
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	host := strings.TrimPrefix(busy.URL, "http://")
	if !strings.Contains(res.stderr, "host "+host+" state=paused until=") || !strings.Contains(res.stderr, "cause=retry_after") {
		t.Errorf("no paused host line:\n%s", res.stderr)
	}
}

// The live display explains a paused host in one line that fits the terminal, at 80 and at
// 200 columns, and its overall bar keeps its width.
func TestTerminalShowsPausedHost(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed")
	}
	for _, cols := range []int{80, 200} {
		t.Run(fmt.Sprint(cols), func(t *testing.T) {
			busy := busyOrigin(t, 30)
			o := newOrigin(t)
			dir := t.TempDir()
			socket := fmt.Sprintf("paperfetch-hosts-%d-%d", os.Getpid(), cols)
			args := append(testFlags(o, filepath.Join(dir, "out")), "--retries", "3", busy.URL+"/files/a.pdf", o.URL+"/slow/1.pdf", o.URL+"/files/c.pdf")
			script := fmt.Sprintf("%s %s; echo EXIT=$?; sleep 600", bin, strings.Join(args, " "))
			tmux(t, socket, "new-session", "-d", "-s", "pf", "-x", fmt.Sprint(cols), "-y", "30", script)
			t.Cleanup(func() { _ = exec.Command("tmux", "-L", socket, "kill-server").Run() })
			host := strings.TrimPrefix(busy.URL, "http://")
			pane := waitPane(t, socket, "the paused host line", func(p string) bool {
				return strings.Contains(p, host+" paused for") && strings.Contains(p, "papers 1/3")
			})
			for _, line := range strings.Split(pane, "\n") {
				if strings.Contains(line, "paused for") && !strings.Contains(line, "Retry-After") && cols >= 200 {
					t.Errorf("the paused line does not say why: %q", line)
				}
				if n := len([]rune(line)); n > cols {
					t.Errorf("line of %d runes on %d columns: %q", n, cols, line)
				}
			}
			barEnd := func(p string) int {
				for _, line := range strings.Split(p, "\n") {
					if strings.HasPrefix(line, "papers ") {
						return strings.Index(line, "]")
					}
				}
				return -1
			}
			first := barEnd(pane)
			o.open()
			pane = waitPane(t, socket, "the slow download done", func(p string) bool { return strings.Contains(p, "papers 2/3") })
			if got := barEnd(pane); got != first || got < 0 {
				t.Errorf("the overall bar moved from column %d to %d:\n%s", first, got, pane)
			}
			if strings.Contains(pane, "0 B/s") {
				t.Errorf("a 0 B/s row:\n%s", pane)
			}
		})
	}
}
