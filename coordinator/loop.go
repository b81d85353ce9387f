package coordinator

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/paperfetch/paperfetch/internal/clock"
)

// loop is the owner loop: the one goroutine that drives the engine and performs its I/O. Run
// calls run; the tests call iterate, the very same iteration, on a bbolt or in-memory store.
type loop struct {
	e      *engine
	st     *store  // where the engine's writes are committed
	stored storage // the engine's kvSnapshot of st, released before each commit
	m      *metrics
	log    *slog.Logger

	inbox   <-chan message // client requests (CoordinatorService)
	gwInbox <-chan message // fetcher traffic (Work streams, verifiers, collector)

	// The engine's hand-offs to the verifiers and the collector, never blocking: what does
	// not fit waits for the next iteration (every verifier or collector answer starts one).
	verifyCh    chan<- verifyJob
	gcCh        chan<- []string // nil: no collector
	verifyQueue []verifyJob
	gcQueue     []string

	// held is client requests taken from the inbox during a commit that are not reads: they
	// are applied first by the next iteration, in their order (commitServingReads).
	held []message

	// window is Config.CommitWindow: the least time between the starts of two commits while
	// fetcher traffic alone waits (gather). lastCommit is when the last commit started, on the
	// coordinator's clock (zero: none yet).
	window     time.Duration
	lastCommit time.Time
}

// run iterates until ctx is done or a commit fails: it waits for a message, a timer (the
// engine's next wake-up) or the watchers' ticker while the engine has nothing pending, then,
// under load, gathers fetcher traffic for the rest of the commit window (gather) before the
// iteration.
func (l *loop) run(ctx context.Context, clk clock.Clock, watchInterval time.Duration) error {
	e := l.e
	timer := clk.NewTimer(time.Hour)
	defer timer.Stop()
	ticker := clk.NewTicker(watchInterval)
	defer ticker.Stop()
	armed := time.Time{}
	for {
		if ctx.Err() != nil {
			return nil
		}
		// Client requests held during the last commit are not kept waiting by the window.
		window := len(l.held) == 0
		if !e.pending() && len(l.held) == 0 {
			if w := e.nextWake(); !w.Equal(armed) {
				armed = w
				d := time.Hour
				if !w.IsZero() {
					d = max(w.Sub(clk.Now()), 0)
				}
				timer.Stop()
				timer.Reset(d)
			}
			select {
			case <-ctx.Done():
				return nil
			case m := <-l.inbox:
				m.apply(e, clk.Now())
				window = !clientWrites(m)
			case m := <-l.gwInbox:
				m.apply(e, clk.Now())
			case <-timer.C():
				armed = time.Time{}
			case <-ticker.C():
				now := clk.Now()
				e.publish(now, true)
				l.m.update(e)
				window = false
			}
		}
		if window {
			l.gather(ctx, clk)
		}
		if err := l.iterate(clk.Now()); err != nil {
			return err
		}
	}
}

// gather is the group-commit window (Config.CommitWindow). While the last commit started less
// than the window ago, it keeps applying fetcher traffic (Work stream events, verifier and
// collector answers) as it arrives, so that the next commit carries all of it instead of
// following the last one as soon as it returned: under load the loop commits at most once per
// window, and when the last commit is older than the window (light load) nothing waits. It
// hands the completions it applies to the verifiers at once (a check reads the blob store,
// never the coordinator's store, and its answer then joins the same commit). It returns when
// the window ends on clk, when a client request that is not a read arrives (applied: a client
// waiting for its write is never held; reads are answered at once, as during a commit), after
// maxDrain messages, or when ctx is done. Nothing is sent before the commit that follows, so
// persist-before-send is unchanged; an Assign or an Ack waits at most the window longer.
func (l *loop) gather(ctx context.Context, clk clock.Clock) {
	if l.window <= 0 || l.lastCommit.IsZero() {
		return
	}
	d := l.lastCommit.Add(l.window).Sub(clk.Now())
	if d <= 0 {
		return
	}
	e := l.e
	l.handOffVerifies()
	t := clk.NewTimer(d)
	defer t.Stop()
	for range maxDrain {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			return
		case m := <-l.gwInbox:
			m.apply(e, clk.Now())
			l.handOffVerifies()
		case m := <-l.inbox:
			m.apply(e, clk.Now())
			if clientWrites(m) {
				return
			}
		}
	}
}

// clientWrites reports whether the client request m waits for a commit: every request but the
// reads answered at once (readRequest).
func clientWrites(m message) bool {
	r, ok := m.(readRequest)
	return !ok || !r.duringCommit()
}

// handOffVerifies queues the completions applied so far for the verifiers and hands them over
// without blocking, before the iteration's commit (gather).
func (l *loop) handOffVerifies() {
	e := l.e
	if len(e.verifyOut) == 0 {
		return
	}
	l.verifyQueue = append(l.verifyQueue, e.verifyOut...)
	clear(e.verifyOut)
	e.verifyOut = e.verifyOut[:0]
	l.pushVerifies()
}

// iterate is one iteration: apply what waits in the inboxes (at most maxDrain of each), tick,
// schedule, then carry out the engine's ready: commit its writes, publish the views reads see
// (readview.go), deliver its messages and replies and hand its work to the verifiers and the
// collector, and tell the engine. Reads reply as they are applied, from committed state.
func (l *loop) iterate(now time.Time) error {
	start := time.Now()
	e := l.e
	// Requests held during the last commit come first, in their order.
	for _, m := range l.held {
		m.apply(e, now)
	}
	clear(l.held)
	l.held = l.held[:0]
	// Client requests and fetcher traffic have their own inboxes and take turns, so that
	// fetchers, however busy, neither fill the clients' inbox nor crowd them out of an
	// iteration (budgets.go).
	for i := 0; i < maxDrain; i++ {
		took := false
		select {
		case m := <-l.inbox:
			m.apply(e, now)
			took = true
		default:
		}
		select {
		case m := <-l.gwInbox:
			m.apply(e, now)
			took = true
		default:
		}
		if !took {
			break
		}
	}
	e.tick(now)
	e.schedule(now)
	rd := e.takeReady()
	views := e.takeViews(now)
	released, err := l.commitServingReads(rd.writes, now)
	if err != nil {
		l.log.Error("store commit failed; stopping the coordinator", "err", err)
		return err // the process names the loop ("coordinator loop: commit store: ...")
	}
	// Reads see the iteration's changes from now on: before its replies go out.
	e.publishViews(views)
	l.gcQueue = append(l.gcQueue, rd.collect...)
	l.gcQueue = append(l.gcQueue, e.committed(released)...)
	l.verifyQueue = append(l.verifyQueue, rd.verify...)
	broken := l.deliver(rd)
	e.applied(rd, broken, now)
	l.m.loopSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// commitServingReads ends the engine's kvSnapshot and writes w in one transaction, on a
// goroutine of its own that it waits for. Meanwhile it answers the read requests that arrive
// in the clients' inbox (readRequest: they see committed state only, readview.go) and holds
// every other request for the next iteration, at most maxDrain of them; fetcher traffic waits
// in its inbox. The engine does not change during the commit, so the commit's writes and
// what the iteration sends afterwards are exactly what takeReady handed over. It returns the
// blobs whose last reference the transaction deleted.
func (l *loop) commitServingReads(w *writeSet, now time.Time) ([]string, error) {
	l.stored.release()
	if w.empty() {
		return nil, nil
	}
	start := time.Now()
	l.lastCommit = now
	n := w.size()
	done := make(chan error, 1)
	go func() { done <- l.st.commit(w) }()
	var err error
	inbox := l.inbox
wait:
	for {
		select {
		case err = <-done:
			break wait
		case m := <-inbox:
			if !clientWrites(m) {
				m.apply(l.e, now)
				continue
			}
			l.held = append(l.held, m)
			if len(l.held) >= maxDrain {
				inbox = nil
			}
		}
	}
	l.m.commitSeconds.Observe(time.Since(start).Seconds())
	l.m.commitRecords.Observe(float64(n))
	if err != nil {
		return nil, err
	}
	return w.released, nil
}

// deliver sends rd's messages and replies and hands the queued work to the verifiers and the
// collector, without ever blocking. A stream whose send buffer is full is broken (the fetcher
// reconnects); deliver returns those streams.
func (l *loop) deliver(rd ready) (broken []*fetcherConn) {
	for _, o := range rd.messages {
		if len(broken) > 0 && slices.Contains(broken, o.c) {
			continue
		}
		if !o.c.send(o.m) {
			o.c.kill(errStreamOverflow)
			broken = append(broken, o.c)
		}
	}
	for _, r := range rd.replies {
		r()
	}
	l.pushVerifies()
	l.pushCollections()
	return broken
}

// pushVerifies hands queued completions to the verifiers without blocking.
func (l *loop) pushVerifies() {
	n := 0
push:
	for n < len(l.verifyQueue) {
		select {
		case l.verifyCh <- l.verifyQueue[n]:
			n++
		default:
			break push
		}
	}
	rest := copy(l.verifyQueue, l.verifyQueue[n:])
	clear(l.verifyQueue[rest:])
	l.verifyQueue = l.verifyQueue[:rest]
}

// pushCollections hands queued blob keys to the collector, gcBatch at a time, without blocking.
func (l *loop) pushCollections() {
	for len(l.gcQueue) > 0 && l.gcCh != nil {
		n := min(len(l.gcQueue), gcBatch)
		job := append([]string(nil), l.gcQueue[:n]...)
		select {
		case l.gcCh <- job:
			l.gcQueue = l.gcQueue[n:]
		default:
			return
		}
	}
	if len(l.gcQueue) == 0 {
		l.gcQueue = nil
	}
}

// newLoop returns the loop of a new engine over st (load it before running).
func newLoop(cfg Config, st *store, m *metrics, inbox, gwInbox <-chan message) *loop {
	stored := newKVSnapshot(st.kv)
	return &loop{
		e:  newEngine(cfg, stored, leaseIDs{storeID: st.id, key: st.leaseKey}, m),
		st: st, stored: stored, m: m, log: cfg.Logger,
		inbox: inbox, gwInbox: gwInbox, window: cfg.CommitWindow,
	}
}
