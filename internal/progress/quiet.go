package progress

import (
	"fmt"
	"io"
	"sync"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// quiet prints only failed papers and messages.
type quiet struct {
	tr  *Tracker
	mu  sync.Mutex
	out io.Writer
}

func newQuiet(opts Options, tr *Tracker) *quiet { return &quiet{tr: tr, out: opts.Out} }

// Update implements Display.
func (q *quiet) Update(resp *pb.WatchBatchResponse) {
	q.tr.Observe(resp)
	for _, u := range resp.GetPaperUpdates() {
		if u.GetState() == pb.PaperState_PAPER_STATE_FAILED {
			q.Message(failureLine(u))
		}
	}
}

// Message implements Display.
func (q *quiet) Message(msg string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	fmt.Fprintln(q.out, msg)
}

// Snapshot implements Display.
func (q *quiet) Snapshot() Snapshot { return q.tr.Snapshot() }

// Close implements Display.
func (q *quiet) Close() {}
