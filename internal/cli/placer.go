package cli

import (
	"context"
	"sync"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Bounds of the placer pool of `get` (docs/cli.md).
const (
	// placeWorkers is how many output files `get` places at once.
	placeWorkers = 4
	// placeQueue is how many succeeded papers may wait for a placer. When it is full the watch
	// stream waits for a free place; the coordinator coalesces the stream's updates meanwhile
	// (its watcher mailbox), so no download and no state change waits on placing.
	placeQueue = 1024
)

// placer places the PDFs of succeeded papers off the watch stream: add queues a paper's
// update for one of its workers and returns at once while the queue has room. A placed file is
// verified as before (size and SHA-256, materializer); the ids of the papers placed by this
// run are remembered (a map entry each: a few MB for 100,000 papers) so that the final pass
// does not read their files again. The workers stop placing when ctx is done (what is still
// queued is then left to the next run); close waits for them.
type placer struct {
	place placeFunc
	fail  func(paperID string, err error) // a placement failed (not called once ctx is done)
	jobs  chan *pb.PaperUpdate
	wg    sync.WaitGroup

	mu     sync.Mutex
	placed map[string]struct{} // ids of the papers placed (and verified) by this run
}

// placeFunc places the succeeded paper of a watch update.
type placeFunc func(context.Context, *pb.PaperUpdate) error

// newPlacer starts workers placers taking papers from a queue of queue until close; place
// places one paper, fail is told about each failure. The workers stop placing when ctx is done.
func newPlacer(ctx context.Context, workers, queue int, place placeFunc, fail func(string, error)) *placer {
	p := &placer{place: place, fail: fail, jobs: make(chan *pb.PaperUpdate, queue), placed: map[string]struct{}{}}
	for range workers {
		p.wg.Go(func() { p.work(ctx) })
	}
	return p
}

// work places queued papers until the queue is closed; once ctx is done it only drains it.
func (p *placer) work(ctx context.Context) {
	for u := range p.jobs {
		if ctx.Err() != nil {
			continue
		}
		if err := p.place(ctx, u); err != nil {
			if ctx.Err() == nil {
				p.fail(u.GetPaperId(), err)
			}
			continue
		}
		p.mu.Lock()
		p.placed[u.GetPaperId()] = struct{}{}
		p.mu.Unlock()
	}
}

// add queues the succeeded paper of u. It waits only while the queue is full, and not once
// ctx is done. A paper this run already placed is not queued again (a reconnected watch
// stream repeats it).
func (p *placer) add(ctx context.Context, u *pb.PaperUpdate) {
	if p.done(u.GetPaperId()) {
		return
	}
	select {
	case p.jobs <- u:
	case <-ctx.Done():
	}
}

// close stops taking papers and waits until the queued ones are placed (or dropped: ctx done).
func (p *placer) close() {
	close(p.jobs)
	p.wg.Wait()
}

// done reports whether this run placed the paper (and verified the file it wrote).
func (p *placer) done(paperID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.placed[paperID]
	return ok
}
