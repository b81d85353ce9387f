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
}

// run iterates until ctx is done or a commit fails: it waits for a message, a timer (the
// engine's next wake-up) or the watchers' ticker while the engine has nothing pending.
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
			case m := <-l.gwInbox:
				m.apply(e, clk.Now())
			case <-timer.C():
				armed = time.Time{}
			case <-ticker.C():
				now := clk.Now()
				e.publish(now, true)
				l.m.update(e)
			}
		}
		if err := l.iterate(clk.Now()); err != nil {
			return err
		}
	}
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
			if r, ok := m.(readRequest); ok && r.duringCommit() {
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
		inbox: inbox, gwInbox: gwInbox,
	}
}
