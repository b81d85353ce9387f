package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/progress"
)

// reportEntry is one paper in the --report file.
type reportEntry struct {
	ID       string   `json:"id"`
	State    string   `json:"state"`
	Path     string   `json:"path,omitempty"`
	SHA256   string   `json:"sha256,omitempty"`
	Size     int64    `json:"size"`
	Attempts int32    `json:"attempts"`
	URLs     []string `json:"urls"`
	DOI      string   `json:"doi,omitempty"`
	FinalURL string   `json:"final_url,omitempty"`
	Source   string   `json:"source,omitempty"`
	Cached   bool     `json:"cached"`
	Reason   string   `json:"reason,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// summary is the outcome of a batch, printed at the end and written to the report.
type summary struct {
	BatchID         string           `json:"batch_id"`
	State           string           `json:"state"`
	Total           int64            `json:"total"`
	Succeeded       int64            `json:"succeeded"`
	Cached          int64            `json:"cached"`
	Failed          int64            `json:"failed"`
	Cancelled       int64            `json:"cancelled"`
	Pending         int64            `json:"pending"`
	FailedByReason  map[string]int64 `json:"failed_by_reason,omitempty"`
	BySource        map[string]int64 `json:"succeeded_by_source,omitempty"`
	BytesStored     int64            `json:"bytes_stored"`
	BytesDownloaded int64            `json:"bytes_downloaded"`
	ElapsedSeconds  float64          `json:"elapsed_seconds"`
	BytesPerSecond  float64          `json:"bytes_per_second"`
	PapersPerSecond float64          `json:"papers_per_second"`
	Out             string           `json:"out,omitempty"`
	Report          string           `json:"report,omitempty"`
	PlaceErrors     int64            `json:"place_errors,omitempty"`
	InputErrors     int              `json:"input_errors,omitempty"`
	FailedList      string           `json:"failed_list,omitempty"`
}

// add counts one paper.
func (s *summary) add(p *pb.Paper) {
	s.Total++
	switch p.GetState() {
	case pb.PaperState_PAPER_STATE_SUCCEEDED:
		s.Succeeded++
		s.BytesStored += p.GetSize()
		if p.GetCached() {
			s.Cached++
		}
		if src := p.GetSource(); src != "" {
			if s.BySource == nil {
				s.BySource = map[string]int64{}
			}
			s.BySource[src]++
		}
	case pb.PaperState_PAPER_STATE_FAILED:
		s.Failed++
		if s.FailedByReason == nil {
			s.FailedByReason = map[string]int64{}
		}
		s.FailedByReason[cmpOr(progress.ReasonName(p.GetLastFailureReason()), "unknown")]++
	case pb.PaperState_PAPER_STATE_CANCELLED:
		s.Cancelled++
	default:
		s.Pending++
	}
}

// addPlaced counts the succeeded papers of the placers' tally, as add counts each.
func (s *summary) addPlaced(t *placedTally) {
	s.Total += t.papers
	s.Succeeded += t.papers
	s.BytesStored += t.bytes
	s.Cached += t.cached
	for src, n := range t.bySource {
		if s.BySource == nil {
			s.BySource = map[string]int64{}
		}
		s.BySource[src] += n
	}
}

// finish computes the rates.
func (s *summary) finish(elapsed time.Duration) {
	s.ElapsedSeconds = elapsed.Seconds()
	if elapsed > 0 {
		s.BytesPerSecond = float64(s.BytesDownloaded) / elapsed.Seconds()
		s.PapersPerSecond = float64(s.Succeeded+s.Failed+s.Cancelled) / elapsed.Seconds()
	}
}

// countsLine formats counts by name, largest first: "openalex 3, landing_page 2".
func countsLine(m map[string]int64) string {
	names := make([]string, 0, len(m))
	for r := range m {
		names = append(names, r)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := m[names[i]], m[names[j]]
		return a > b || a == b && names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, r := range names {
		parts[i] = fmt.Sprintf("%s %d", r, m[r])
	}
	return strings.Join(parts, ", ")
}

// print writes the human summary table.
func (s *summary) print(w io.Writer) {
	tw := func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %-11s %s\n", label, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(w, "\nBatch %s: %s\n", s.BatchID, s.State)
	ok := fmt.Sprintf("%d", s.Succeeded)
	if s.Cached > 0 {
		ok += fmt.Sprintf("  (%d cached)", s.Cached)
	}
	tw("succeeded", "%s", ok)
	if len(s.BySource) > 1 || len(s.BySource) == 1 && s.BySource["url"] == 0 {
		tw("from", "%s", countsLine(s.BySource)) // DOIs: which routes produced the PDFs
	}
	if s.Failed > 0 {
		tw("failed", "%d  (%s)", s.Failed, countsLine(s.FailedByReason))
	} else {
		tw("failed", "0")
	}
	if s.Cancelled > 0 {
		tw("cancelled", "%d", s.Cancelled)
	}
	if s.Pending > 0 {
		tw("unfinished", "%d", s.Pending)
	}
	tw("total", "%d", s.Total)
	tw("bytes", "%s downloaded, %s stored", progress.FormatBytes(s.BytesDownloaded), progress.FormatBytes(s.BytesStored))
	tw("elapsed", "%s  (%s, %.1f papers/s)", progress.FormatDuration(time.Duration(s.ElapsedSeconds*float64(time.Second))), progress.FormatRate(s.BytesPerSecond), s.PapersPerSecond)
	if s.Out != "" {
		tw("output", "%s", s.Out)
	}
	if s.Report != "" {
		tw("report", "%s", s.Report)
	}
	if s.InputErrors > 0 {
		tw("input", "%d malformed entr%s skipped", s.InputErrors, plural(s.InputErrors, "y", "ies"))
	}
	if s.PlaceErrors > 0 {
		tw("errors", "%d PDF%s could not be written to the output folder", s.PlaceErrors, plural(int(s.PlaceErrors), "", "s"))
	}
	if s.FailedList != "" {
		tw("failed list", "%s", s.FailedList)
		fmt.Fprintf(w, "\nTo retry the failed papers: paperfetch get --out %s %s\n", shellQuote(s.Out), shellQuote(s.FailedList))
	}
	if s.PlaceErrors > 0 {
		fmt.Fprintf(w, "\nRun the same command again to write the missing PDF%s.\n", plural(int(s.PlaceErrors), "", "s"))
	}
	if s.InputErrors > 0 {
		fmt.Fprintf(w, "\n%d input entr%s skipped (see the messages above): exit status 1.\n", s.InputErrors, plural(s.InputErrors, "y was", "ies were"))
	}
}

// reportWriter streams the --report JSON file: {"batch_id": ..., "papers": [...], "summary":
// {...}}. It writes to a temporary file renamed into place by Close, so a report is never half
// written; "-" writes to standard output.
type reportWriter struct {
	path  string
	tmp   string
	f     *os.File
	bw    *bufio.Writer
	count int
	err   error
}

// newReportWriter starts a report for batchID at path.
func newReportWriter(path, batchID string, stdout io.Writer, started time.Time) (*reportWriter, error) {
	r := &reportWriter{path: path}
	var w io.Writer = stdout
	if path != "-" {
		r.tmp = filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
		f, err := os.Create(r.tmp)
		if err != nil {
			return nil, fmt.Errorf("create report: %w", err)
		}
		r.f, w = f, f
	}
	r.bw = bufio.NewWriterSize(w, 256<<10)
	head, _ := json.Marshal(map[string]any{"batch_id": batchID, "started_at": started.UTC().Format(time.RFC3339)})
	r.write(string(head[:len(head)-1]) + `,"papers":[`)
	return r, nil
}

func (r *reportWriter) write(s string) {
	if r.err == nil {
		_, r.err = r.bw.WriteString(s)
	}
}

// add appends one paper.
func (r *reportWriter) add(e reportEntry) {
	b, err := json.Marshal(e)
	if err != nil {
		r.err = err
		return
	}
	if r.count > 0 {
		r.write(",")
	}
	r.write("\n  " + string(b))
	r.count++
}

// close writes the summary and puts the report in place.
func (r *reportWriter) close(s *summary) error {
	b, err := json.MarshalIndent(s, "  ", "  ")
	if err != nil && r.err == nil {
		r.err = err
	}
	r.write("\n],\n\"finished_at\":\"" + time.Now().UTC().Format(time.RFC3339) + "\",\n\"summary\":" + string(b) + "}\n")
	if r.err == nil {
		r.err = r.bw.Flush()
	}
	if r.f != nil {
		if r.err == nil {
			r.err = r.f.Sync()
		}
		if err := r.f.Close(); err != nil && r.err == nil {
			r.err = err
		}
		if r.err == nil {
			r.err = os.Rename(r.tmp, r.path)
		} else {
			_ = os.Remove(r.tmp)
		}
	}
	if r.err != nil {
		return fmt.Errorf("write report %s: %w", r.path, r.err)
	}
	return nil
}

// abort discards an unfinished report.
func (r *reportWriter) abort() {
	if r.f != nil {
		_ = r.f.Close()
		_ = os.Remove(r.tmp)
	}
}

// writeJSONLine writes v as one JSON line.
func writeJSONLine(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	_, _ = w.Write(append(b, '\n'))
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
