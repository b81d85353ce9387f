package coordinator

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/paperfetch/paperfetch/internal/clock"
)

// commitSignalKV is a kvStore that reports every commit on commits (before it returns, so
// before the loop goes on).
type commitSignalKV struct {
	kvStore
	commits chan struct{}
}

func (k *commitSignalKV) update(fn func(kvTx) error) error {
	err := k.kvStore.update(fn)
	k.commits <- struct{}{}
	return err
}

// writeMsg stands for traffic that changes durable state: applying it adds a host record to
// the iteration's writes, then reports its index on applied.
type writeMsg struct {
	idx     uint32
	applied chan<- uint32
}

func (m writeMsg) apply(e *engine, _ time.Time) {
	e.ws.hosts = append(e.ws.hosts, hostWrite{idx: m.idx, name: fmt.Sprintf("h%d.example", m.idx)})
	m.applied <- m.idx
}

// readMsg stands for a client read (readRequest): it reports on applied.
type readMsg struct{ applied chan<- uint32 }

func (m readMsg) apply(*engine, time.Time) { m.applied <- 0 }
func (readMsg) duringCommit() bool         { return true }

// verifyMsg stands for a fetcher's completion: it queues a check for the verifiers.
type verifyMsg struct{ key string }

func (m verifyMsg) apply(e *engine, _ time.Time) {
	e.verifyOut = append(e.verifyOut, verifyJob{key: m.key, size: 1})
}

// windowLoop is a loop running on a bbolt store (no fsync) and a fake clock, fed through its
// inboxes by the test.
type windowLoop struct {
	t       *testing.T
	clk     *clock.Fake
	st      *store
	l       *loop
	inbox   chan message
	gw      chan message
	verify  chan verifyJob
	commits chan struct{}
	applied chan uint32
	stop    func() // cancels the loop's context and waits for run to return (once)
}

// startWindowLoop runs a loop with the given CommitWindow until the test ends.
func startWindowLoop(t *testing.T, window time.Duration) *windowLoop {
	t.Helper()
	clk := clock.NewFake(t0)
	cfg := testConfig(t, func(c *Config) { c.Clock, c.NoSync, c.CommitWindow = clk, true, window })
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg = cfg.withDefaults()
	st, err := openStore(cfg.DataDir, time.Second, true)
	if err != nil {
		t.Fatal(err)
	}
	w := &windowLoop{t: t, clk: clk, st: st, inbox: make(chan message, 64), gw: make(chan message, 64),
		verify: make(chan verifyJob, 64), commits: make(chan struct{}, 1024), applied: make(chan uint32, 64)}
	st.kv = &commitSignalKV{kvStore: st.kv, commits: w.commits}
	m, _ := newMetrics(nil, func() float64 { return 0 })
	w.l = newLoop(cfg, st, m, w.inbox, w.gw)
	w.l.verifyCh = w.verify
	if err := w.l.e.load(clk.Now()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.l.run(ctx, clk, time.Hour) }()
	w.stop = sync.OnceFunc(func() {
		cancel()
		if err := wait(t, "run to return", done); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	t.Cleanup(func() {
		w.stop()
		w.l.stored.release()
		if err := st.close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return w
}

// send posts m to the fetcher inbox and waits until the loop applied it.
func (w *windowLoop) send(ch chan message, idx uint32) {
	w.t.Helper()
	ch <- writeMsg{idx: idx, applied: w.applied}
	w.wait("message applied", w.applied)
}

// wait receives from ch, failing the test after 20 s.
func wait[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func (w *windowLoop) wait(what string, ch <-chan uint32) {
	w.t.Helper()
	wait(w.t, what, ch)
}

func (w *windowLoop) waitCommit() {
	w.t.Helper()
	wait(w.t, "a commit", w.commits)
}

// noCommit fails the test if a commit happened since the last one received.
func (w *windowLoop) noCommit(when string) {
	w.t.Helper()
	select {
	case <-w.commits:
		w.t.Fatalf("%s: a store commit, want none before the window ends", when)
	default:
	}
}

// hostsStored counts the hosts first..last that are in the store.
func (w *windowLoop) hostsStored(first, last uint32) int {
	w.t.Helper()
	tx, end, err := w.st.kv.view()
	if err != nil {
		w.t.Fatal(err)
	}
	defer end()
	n := 0
	b := tx.bucket(bucketHosts)
	for i := first; i <= last; i++ {
		if b.Get(key32(i)) != nil {
			n++
		}
	}
	return n
}

// Fetcher traffic arriving less than the window after a commit started waits for the window's
// end and goes into one commit: before the window, each message applied while the loop was
// idle had a commit of its own (0.27 commits per paper in `paperfetch get`).
func TestCommitWindowGroupsFetcherTrafficInOneCommit(t *testing.T) {
	const window, n = 10 * time.Millisecond, 50
	w := startWindowLoop(t, window)
	w.send(w.gw, 1)
	w.waitCommit() // the first commit is not delayed: none started less than the window ago
	for i := uint32(2); i <= n; i++ {
		w.send(w.gw, i) // each one waits until the loop applied it
	}
	w.noCommit("fetcher traffic within the window")
	w.clk.Advance(window)
	w.waitCommit()
	if got := w.hostsStored(2, n); got != n-1 {
		t.Fatalf("after the window's commit %d of the %d writes are stored, want all", got, n-1)
	}
	// A message after the window (the last commit started a window ago) commits at once.
	w.clk.Advance(window)
	w.send(w.gw, n+1)
	w.waitCommit()
}

// A client request that writes ends the window at once: a client waiting for its write is not
// held. Reads are answered during the window without ending it.
func TestCommitWindowEndsForClientWrites(t *testing.T) {
	w := startWindowLoop(t, 10*time.Millisecond)
	w.send(w.gw, 1)
	w.waitCommit()
	w.send(w.gw, 2)
	w.inbox <- readMsg{applied: w.applied}
	w.wait("read answered", w.applied)
	// Fetcher traffic after the read: had the read ended the window, its commit would come
	// before this message is applied, so noCommit sees it whatever the timing.
	w.send(w.gw, 3)
	w.noCommit("a read within the window")
	w.send(w.inbox, 4)
	w.waitCommit() // the clock did not move
	if got := w.hostsStored(2, 4); got != 3 {
		t.Fatalf("%d of the 3 writes are stored, want all", got)
	}
	// A client write that finds the loop idle, less than the window after a commit, does not
	// open a window either.
	w.send(w.inbox, 5)
	w.waitCommit()
}

// Completions applied during the window go to the verifiers before its commit, so that the
// verifiers' answers join the same commit and the Ack waits for one window, not two.
func TestCommitWindowHandsCompletionsToVerifiersAtOnce(t *testing.T) {
	w := startWindowLoop(t, 10*time.Millisecond)
	w.send(w.gw, 1)
	w.waitCommit()
	w.gw <- verifyMsg{key: "k"}
	if j := wait(t, "the verify job", w.verify); j.key != "k" {
		t.Fatalf("verify job for %q, want k", j.key)
	}
	w.noCommit("a completion within the window")
}

// A window of 0 commits every message applied while the loop was idle on its own, as before
// the window existed.
func TestCommitWindowZeroCommitsAtOnce(t *testing.T) {
	w := startWindowLoop(t, 0)
	for i := uint32(1); i <= 3; i++ {
		w.send(w.gw, i)
		w.waitCommit()
	}
}

// Shutdown during a window: the loop returns at once, without waiting for the window's end on
// the clock (here it never comes), after committing what the window had applied, and leaves
// no timer armed.
func TestCommitWindowShutdownCommitsWhatItApplied(t *testing.T) {
	w := startWindowLoop(t, 10*time.Millisecond)
	w.send(w.gw, 1)
	w.waitCommit()
	w.send(w.gw, 2)
	w.send(w.gw, 3)
	w.noCommit("fetcher traffic within the window")
	w.stop()
	if got := w.hostsStored(2, 3); got != 2 {
		t.Fatalf("after the shutdown %d of the 2 writes applied in the window are stored, want both", got)
	}
	if n := w.clk.Waiters(); n != 0 {
		t.Fatalf("%d timers left armed after the loop returned", n)
	}
}
