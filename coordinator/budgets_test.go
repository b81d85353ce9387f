package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/paperfetch/paperfetch/internal/clock"
	"github.com/paperfetch/paperfetch/internal/validate"
)

// An honest fetcher is never throttled: a stream of 8 slots whose downloads of small PDFs end
// every 4 ms per slot (250 a second each; a started, a progress, a terminal event and a
// Credits message per download) sends 8,000 messages a second within its default budget.
// The old default (50 + 5/slot) held such a stream to 90 messages a second, so `paperfetch
// get` ran at 60 papers/s.
func TestStreamBudgetAdmitsAnHonestFastFetcher(t *testing.T) {
	cfg := DefaultConfig().withDefaults()
	g := &gateway{c: &Coordinator{cfg: cfg}}
	b := g.newBudget(&fetcherConn{}, 8)
	start := time.Unix(1_700_000_000, 0)
	const perSecond = 8 * 250 * 4
	for i := range 3 * perSecond {
		now := start.Add(time.Duration(i) * time.Second / perSecond)
		if d := b.lim.ReserveN(now, 1).DelayFrom(now); d > 0 {
			t.Fatalf("message %d (at %s) throttled for %s", i, now.Sub(start), d)
		}
	}
	// A flood far beyond it is throttled.
	now := start.Add(3 * time.Second)
	throttled := false
	for range 1_000_000 {
		if b.lim.ReserveN(now, 1).DelayFrom(now) > 0 {
			throttled = true
			break
		}
	}
	if !throttled {
		t.Fatal("a flood at one instant was not throttled")
	}
}

// Every event of a batch (step 9 of the Work protocol) counts against the stream's rate as a
// message of its own: a batch cannot carry more events than the rate allows messages.
func TestStreamBudgetCountsBatchedEvents(t *testing.T) {
	cfg := DefaultConfig().withDefaults()
	cfg.StreamRate, cfg.StreamRatePerSlot = 10, 0 // bursts of 20
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	cfg.Clock = clk
	g := &gateway{c: &Coordinator{cfg: cfg}}
	b := g.newBudget(&fetcherConn{share: make(chan struct{}, 4)}, 1)
	if _, err := b.take(context.Background(), 20); err != nil {
		t.Fatal(err)
	}
	if tokens := b.lim.TokensAt(clk.Now()); tokens > 0.5 {
		t.Fatalf("a batch of 20 events left %.1f of the burst of 20: it counted as fewer messages", tokens)
	}
}

// A batch larger than the stream's burst (a small rate) is admitted once the rate allows its
// events, never refused nor held forever.
func TestStreamBudgetAdmitsBatchLargerThanBurst(t *testing.T) {
	cfg := DefaultConfig().withDefaults()
	cfg.StreamRate, cfg.StreamRatePerSlot = 10, 0 // bursts of 20
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	cfg.Clock = clk
	m, _ := newMetrics(nil, func() float64 { return 0 })
	g := &gateway{c: &Coordinator{cfg: cfg, m: m, done: make(chan struct{})}}
	b := g.newBudget(&fetcherConn{share: make(chan struct{}, 4)}, 1)
	n := validate.MaxWorkBatch
	done := make(chan error, 1)
	go func() {
		_, err := b.take(context.Background(), n)
		done <- err
	}()
	if err := clk.WaitForWaiters(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	// The burst's 20 events at once, the other 44 at 10 a second.
	clk.Advance(time.Duration(n-20) * time.Second / 10)
	if err := wait(t, "the batch admitted", done); err != nil {
		t.Fatal(err)
	}
	if tokens := b.lim.TokensAt(clk.Now()); tokens > 0.5 {
		t.Fatalf("a batch of %d events left %.1f tokens: it counted as fewer messages", n, tokens)
	}
}

// A batch takes a place in the stream's inbox share per event, up to the whole share: the
// events waiting for one stream stay bounded by the share (plus one batch), not by the share
// times MaxWorkBatch. The places come back when the loop applies the message.
func TestStreamBudgetBatchTakesInboxPlacesPerEvent(t *testing.T) {
	cfg := DefaultConfig().withDefaults()
	cfg.StreamRate, cfg.StreamRatePerSlot = 1e6, 0 // the rate never waits here
	m, _ := newMetrics(nil, func() float64 { return 0 })
	g := &gateway{c: &Coordinator{cfg: cfg, m: m, done: make(chan struct{})}}
	conn := &fetcherConn{share: make(chan struct{}, 16)}
	b := g.newBudget(conn, 1)
	ctx := ctxT(t)
	small, err := b.take(ctx, 3)
	if err != nil || small != 3 || len(conn.share) != 3 {
		t.Fatalf("a batch of 3 took %d places (share %d used), err %v; want 3", small, len(conn.share), err)
	}
	conn.release(small)
	places, err := b.take(ctx, validate.MaxWorkBatch)
	if err != nil || places != 16 || len(conn.share) != 16 {
		t.Fatalf("a batch of %d took %d places (share %d used), err %v; want the whole share of 16", validate.MaxWorkBatch, places, len(conn.share), err)
	}
	// The share is full: the next message waits until the batch is applied.
	next := make(chan error, 1)
	go func() {
		_, err := b.take(ctx, 1)
		next <- err
	}()
	select {
	case err := <-next:
		t.Fatalf("a message was admitted while a batch held the whole share (err %v)", err)
	default:
	}
	conn.release(places)
	if err := wait(t, "the next message admitted", next); err != nil {
		t.Fatal(err)
	}
	// A take that ends before it has its places returns those it held.
	conn.release(1)
	cctx, cancel := context.WithCancel(ctx)
	for range 10 {
		conn.share <- struct{}{}
	}
	go func() {
		_, err := b.take(cctx, validate.MaxWorkBatch)
		next <- err
	}()
	cancel()
	if err := wait(t, "the cancelled take", next); err == nil {
		t.Fatal("a take cancelled without its places succeeded")
	}
	if len(conn.share) != 10 {
		t.Fatalf("a cancelled take left %d places used, want the 10 held before it", len(conn.share))
	}
}
