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
	if err := b.take(context.Background(), 20); err != nil {
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
	go func() { done <- b.take(context.Background(), n) }()
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
