package cli

import (
	"context"
	"hash/fnv"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// Bounds of the placer pool of `get` (docs/cli.md).
const (
	// placeWorkers is how many output files `get` places at once.
	placeWorkers = 2
	// placeQueue is how many succeeded papers may wait for a placer. When it is full the watch
	// stream waits for a free place; the coordinator coalesces the stream's updates meanwhile
	// (its watcher mailbox), so no download and no state change waits on placing.
	placeQueue = 1024
	// placeChunk is the most papers handed to a placer at once. The papers of one watch update
	// are split among the placers (at most placeChunk each): one hand-over per placer and
	// update, not one per paper (each hand-over may wake a thread: futex calls, system time).
	placeChunk = 64
	// maxTallySources bounds the routes (Paper.source) the placers count the placed papers by
	// (placedTally.bySource); the coordinator has six. A run with more lists its succeeded
	// papers again at the end, as one that does not count them.
	maxTallySources = 16
)

// placer places the PDFs of succeeded papers off the watch stream: add queues the papers of a
// watch update for its workers and returns at once while the queue has room. A paper already
// queued or being placed (the watch may report a succeeded paper again, in a later update)
// is not queued again: the materializer copies a new paper's blob without first looking for
// its file, so a second placement would copy it twice. A placed file is
// verified as before (size and SHA-256, materializer); the papers placed by this run are
// remembered (a 64-bit hash of the id each, with 64 bits of the SHA-256 of what was placed: 2.4 MB
// of heap for 100,000 papers, as much as the hashes alone) so that the final pass does not read their files again. The workers
// stop placing when ctx is done (what is still queued is then left to the next run); close waits
// for them. The placers also count what they placed (tally): a final pass that finds every
// succeeded paper of the batch among them does not list those papers again.
type placer struct {
	place   placeFunc
	fail    func(paperID string, err error) // a placement failed (not called once ctx is done)
	workers int
	jobs    chan []*pb.PaperUpdate // chunks of at most placeChunk papers
	wg      sync.WaitGroup
	key     func(id string) uint64 // idKey; a test sets a colliding one

	mu     sync.Mutex
	placed map[uint64]uint64 // idKey -> contentKey of the papers placed (and verified) by this run
	// queued: idKey -> contentKey of the papers queued or being placed: at most what the queue
	// holds, what the workers hold and what add holds, about placeQueue + (workers+1)·placeChunk.
	queued map[uint64]uint64
	tally  placedTally
}

// placedTally counts the papers the placers placed, as the final pass would count them by
// listing the batch (summary.add), with the file each went to: one entry of 8 bytes a paper
// in names (0.8 MB for 100,000 papers).
type placedTally struct {
	papers, cached, bytes int64
	bySource              map[string]int64 // paper count by route; at most maxTallySources
	names                 []uint64         // nameKey of the base name of each placed file
	// incomplete: a placed paper could not be counted (its update gave no route or no
	// SHA-256, or there were more than maxTallySources routes): the tally says nothing.
	incomplete bool
}

// count adds a paper placed at path.
func (t *placedTally) count(u *pb.PaperUpdate, path string) {
	src := u.GetSource()
	if _, ok := t.bySource[src]; src == "" || !ok && len(t.bySource) >= maxTallySources {
		t.incomplete = true
		return
	}
	if t.bySource == nil {
		t.bySource = map[string]int64{}
	}
	t.bySource[src]++
	t.papers++
	t.bytes += u.GetSize()
	if u.GetCached() {
		t.cached++
	}
	t.names = append(t.names, nameKey(filepath.Base(path)))
}

// nameKey is the 64-bit FNV-1a hash of a file name (as idKey of an id).
func nameKey(name string) uint64 { return idKey(name) }

// idKey is the 64-bit FNV-1a hash of a paper id: the placed set holds these (the ids themselves
// cost about 150 bytes a paper). Two ids may share one (a chance of about n²/2⁶⁵, 3·10⁻¹⁰ for
// 100,000 papers), so a key alone never says that a paper was placed: its entry also holds the
// contentKey of what was placed, and done wants both to match. Two papers with the same key
// then both get placed (the later one's entry replaces the other's, whose file the final pass
// reads again); a false "done" needs another 64-bit match, of the SHA-256 of different content.
func idKey(id string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return h.Sum64()
}

// contentKey is the first 64 bits of a hex SHA-256, or 0 when sha is not one (unknown: never
// done).
func contentKey(sha string) uint64 {
	if len(sha) < 16 {
		return 0
	}
	k, err := strconv.ParseUint(sha[:16], 16, 64)
	if err != nil {
		return 0
	}
	return k
}

// placeFunc places the succeeded paper of a watch update and returns the file's path.
type placeFunc func(context.Context, *pb.PaperUpdate) (string, error)

// newPlacer starts workers placers taking papers from a queue of about queue papers (in
// chunks of at most placeChunk) until close; place places one paper, fail is told about each
// failure. The workers stop placing when ctx is done.
func newPlacer(ctx context.Context, workers, queue int, place placeFunc, fail func(string, error)) *placer {
	p := &placer{place: place, fail: fail, workers: workers, key: idKey, jobs: make(chan []*pb.PaperUpdate, max(1, queue/placeChunk)), placed: map[uint64]uint64{}, queued: map[uint64]uint64{}}
	for range workers {
		p.wg.Go(func() { p.work(ctx) })
	}
	return p
}

// work places queued papers until the queue is closed; once ctx is done it only drains it.
func (p *placer) work(ctx context.Context) {
	for chunk := range p.jobs {
		for _, u := range chunk {
			if ctx.Err() != nil {
				break
			}
			path, err := p.place(ctx, u)
			k, c := p.key(u.GetPaperId()), contentKey(u.GetSha256())
			p.mu.Lock()
			if q, ok := p.queued[k]; ok && q == c {
				delete(p.queued, k)
			}
			if err == nil {
				switch v, ok := p.placed[k]; {
				case c == 0: // not deduplicated (add): it may be placed, and counted, twice
					p.tally.incomplete = true
				case !ok || v != c: // placed once (add does not queue a placed paper again)
					p.tally.count(u, path)
				}
				p.placed[k] = c
			}
			p.mu.Unlock()
			if err != nil && ctx.Err() == nil {
				p.fail(u.GetPaperId(), err)
			}
		}
	}
}

// add queues the succeeded papers of one watch update, split among the workers. It waits only
// while the queue is full, and not once ctx is done. A paper this run already placed, or
// queued and not placed yet, is not queued again (a reconnected watch stream repeats it, and a
// later update may report it again).
func (p *placer) add(ctx context.Context, us []*pb.PaperUpdate) {
	todo := make([]*pb.PaperUpdate, 0, len(us))
	p.mu.Lock()
	for _, u := range us {
		k, c := p.key(u.GetPaperId()), contentKey(u.GetSha256())
		if c != 0 {
			if v, ok := p.placed[k]; ok && v == c {
				continue
			}
			if v, ok := p.queued[k]; ok && v == c {
				continue
			}
			p.queued[k] = c
		}
		todo = append(todo, u)
	}
	p.mu.Unlock()
	size := min(placeChunk, max(1, (len(todo)+p.workers-1)/p.workers))
	for len(todo) > 0 {
		n := min(size, len(todo))
		select {
		case p.jobs <- todo[:n:n]:
		case <-ctx.Done():
			return
		}
		todo = todo[n:]
	}
}

// close stops taking papers and waits until the queued ones are placed (or dropped: ctx done).
func (p *placer) close() {
	close(p.jobs)
	p.wg.Wait()
}

// placedAll returns the tally of what the placers placed, once they are closed, with its
// names sorted; ok is false when it is incomplete.
func (p *placer) placedAll() (t placedTally, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t = p.tally
	t.names = slices.Clone(t.names)
	slices.Sort(t.names)
	return t, !t.incomplete
}

// done reports whether this run placed the paper paperID with the SHA-256 sha (and verified the
// file it wrote); see idKey for why a collision of ids does not make it say yes.
func (p *placer) done(paperID, sha string) bool {
	k, c := p.key(paperID), contentKey(sha)
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.placed[k]
	return ok && c != 0 && v == c
}
