package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// tmux runs tmux on a private server socket.
func tmux(t *testing.T, socket string, args ...string) string {
	t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", socket}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// waitPane polls the pane until cond holds. tmux is another process with no way to notify us,
// so this is the one place where the tests poll.
func waitPane(t *testing.T, socket string, what string, cond func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var pane string
	for time.Now().Before(deadline) {
		pane = tmux(t, socket, "capture-pane", "-p", "-t", "pf")
		if cond(pane) {
			return pane
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; the pane shows:\n%s", what, pane)
	return ""
}

var (
	overallBar  = regexp.MustCompile(`papers +\d+/12 +\[[=> -]*\] +[0-9.]+ [KM]?i?B +[0-9.]+ [KM]?i?B/s`)
	downloadBar = regexp.MustCompile(`(?m)^  \d-[0-9a-f]{8} +\[`)
)

// TestTerminalDisplay runs `get` under a real pseudo-terminal (a tmux pane) and checks the live
// display: an overall bar with counts, bytes and speed, and a line per running download; then
// the final bar and the summary.
func TestTerminalDisplay(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed")
	}
	o := newOrigin(t)
	dir := t.TempDir()
	list := filepath.Join(dir, "list.txt")
	var lines []string
	for i := range 8 {
		lines = append(lines, fmt.Sprintf("%s/fast/%d.pdf", o.URL, i))
	}
	for i := range 4 {
		lines = append(lines, fmt.Sprintf("%s/slow/%d.pdf", o.URL, i))
	}
	if err := os.WriteFile(list, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	socket := fmt.Sprintf("paperfetch-test-%d", os.Getpid())
	args := append(testFlags(o, filepath.Join(dir, "out")), "--concurrency", "8", list)
	script := fmt.Sprintf("%s %s; echo EXIT=$?; sleep 600", bin, strings.Join(args, " "))
	tmux(t, socket, "new-session", "-d", "-s", "pf", "-x", "120", "-y", "30", script)
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", socket, "kill-server").Run() })

	// While the slow downloads hang: the overall bar, and a line per running download.
	pane := waitPane(t, socket, "the live display", func(p string) bool {
		return overallBar.MatchString(p) && len(downloadBar.FindAllString(p, -1)) == 4 && strings.Contains(p, "papers  8/12")
	})
	if strings.Contains(pane, "progress done=") {
		t.Errorf("plain progress lines on a terminal:\n%s", pane)
	}
	o.open()
	pane = waitPane(t, socket, "the end of the run", func(p string) bool { return strings.Contains(p, "EXIT=") })
	for _, want := range []string{"papers 12/12", "Batch get-", "  succeeded   12\n", "EXIT=0"} {
		if !strings.Contains(pane, want) {
			t.Errorf("final screen lacks %q:\n%s", want, pane)
		}
	}
	if downloadBar.MatchString(pane) {
		t.Errorf("download lines left on the screen:\n%s", pane)
	}
}

// On a short terminal the display shows as many download rows as fit and counts the others
// ("+N more running") beside the overall bar, never without rows; every line fits 80 columns.
func TestTerminalMoreRunning(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed")
	}
	o := newOrigin(t)
	dir := t.TempDir()
	var args []string
	for i := range 6 {
		args = append(args, fmt.Sprintf("%s/slow/%d.pdf", o.URL, i))
	}
	socket := fmt.Sprintf("paperfetch-more-%d", os.Getpid())
	script := fmt.Sprintf("%s %s; echo EXIT=$?; sleep 600", bin, strings.Join(append(append(testFlags(o, filepath.Join(dir, "out")), "--concurrency", "8"), args...), " "))
	tmux(t, socket, "new-session", "-d", "-s", "pf", "-x", "80", "-y", "10", script)
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", socket, "kill-server").Run() })
	row := regexp.MustCompile(`(?m)^  \d-[0-9a-f]{8} +\[.*\] +connecting`)
	pane := waitPane(t, socket, "3 rows and 3 more", func(p string) bool {
		return strings.Contains(p, "(+3 more running)") || strings.Contains(p, "(+3 more runn…")
	})
	if n := len(row.FindAllString(pane, -1)); n != 3 {
		t.Errorf("%d download rows beside \"+3 more running\", want 3:\n%s", n, pane)
	}
	for _, line := range strings.Split(pane, "\n") {
		if n := len([]rune(line)); n > 80 {
			t.Errorf("line of %d runes: %q", n, line)
		}
	}
	o.open()
	pane = waitPane(t, socket, "the end of the run", func(p string) bool { return strings.Contains(p, "EXIT=") })
	if !strings.Contains(pane, "EXIT=0") || strings.Contains(pane, "more running") {
		t.Errorf("final screen:\n%s", pane)
	}
}
