package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/atomicfile"
	"github.com/paperfetch/paperfetch/internal/progress"
)

// failedListName is the file, in the output folder, listing the papers that failed.
const failedListName = "failed.txt"

// failedList writes OUT/failed.txt: one JSON line per failed paper (its id, URLs and expected
// checksum, so that the file is an input for the next run: `paperfetch get OUT/failed.txt`),
// each after a comment line with the reason. It is written to a temporary file renamed into
// place; a run without failures removes an old one.
type failedList struct {
	path, tmp string
	f         *os.File
	bw        *bufio.Writer
	err       error
}

// newFailedList starts OUT/failed.txt.
func newFailedList(out string) (*failedList, error) {
	l := &failedList{path: filepath.Join(out, failedListName)}
	l.tmp = atomicfile.TempName(l.path)
	f, err := os.OpenFile(l.tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", l.path, err)
	}
	l.f, l.bw = f, bufio.NewWriter(f)
	_, l.err = l.bw.WriteString("# Papers that failed; retry them with: paperfetch get --out " + shellQuote(out) + " " + shellQuote(l.path) + "\n")
	return l, nil
}

// failedEntry is a line of failed.txt, in the JSON Lines input format.
type failedEntry struct {
	ID       string            `json:"id"`
	URLs     []string          `json:"urls,omitempty"`
	DOI      string            `json:"doi,omitempty"`
	SHA256   string            `json:"sha256,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// add lists one failed paper.
func (l *failedList) add(p *pb.Paper) {
	if l.err != nil {
		return
	}
	s := p.GetSpec()
	b, err := json.Marshal(failedEntry{ID: s.GetPaperId(), URLs: s.GetUrls(), DOI: s.GetDoi(), SHA256: s.GetExpectedSha256(), Metadata: s.GetMetadata()})
	if err != nil {
		l.err = err
		return
	}
	reason := cmpOr(progress.ReasonName(p.GetLastFailureReason()), "unknown")
	msg := strings.ReplaceAll(p.GetLastError(), "\n", " ")
	_, l.err = fmt.Fprintf(l.bw, "# %s: %s\n%s\n", reason, msg, b)
}

// close puts the list in place when some papers failed (n > 0), or removes an old one; it
// returns the path written, or "".
func (l *failedList) close(n int64) string {
	if l.err == nil {
		l.err = l.bw.Flush()
	}
	if err := l.f.Close(); err != nil && l.err == nil {
		l.err = err
	}
	if l.err != nil || n == 0 {
		_ = os.Remove(l.tmp)
		if n == 0 {
			_ = os.Remove(l.path)
		}
		return ""
	}
	if err := renameInto(l.tmp, l.path); err != nil {
		return ""
	}
	return l.path
}

// abort discards the list being written (an old one stays).
func (l *failedList) abort() {
	_ = l.f.Close()
	_ = os.Remove(l.tmp)
}

// fileExists reports whether path is an existing regular file.
func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
