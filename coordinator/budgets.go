package coordinator

import (
	"context"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/status"
)

// Per-stream budgets of the fetcher gateway. Fetcher traffic goes through its own inbox
// (gwInbox), which the loop drains in turns with the clients' inbox: a flood of fetcher
// messages never makes a client call fail with "inbox is full" nor starves it. Within the
// gateway inbox, each Work stream has
//
//   - a message rate: StreamRate + StreamRatePerSlot×slots messages per second (each event
//     of a batch, step 9 of the Work protocol, counts as a message), with bursts of twice that (defaults 100 + 1000/slot: an honest fetcher sends a started, a few
//     progress events, a terminal event and a share of a Credits message per download, and a
//     slot fetching small PDFs from a fast origin finishes a few hundred downloads a second;
//     the default of 5/slot throttled `paperfetch get` to 60 papers/s); beyond it the
//     stream's receiver waits, so gRPC flow control throttles the sender;
//   - an inbox share: at most streamShare(slots) places of the gateway inbox hold its messages
//     at once (the receiver waits for the loop to apply one), so a few streams cannot fill it for
//     the others. A batch of n events takes min(n, share) places, so the events waiting for
//     one stream stay within share + MaxWorkBatch - 1 (a batch takes the whole share at most,
//     which the loop frees as it applies the earlier messages: the one receiver never waits
//     for places it holds itself).
//
// Waiting uses the coordinator's clock. Throttled messages are counted in
// paperfetch_coordinator_fetcher_throttled_total.

// streamShare is how many messages of one stream may wait in the gateway inbox.
func (c *Coordinator) streamShare(slots int) int {
	return max(16, min(2*slots+16, c.cfg.InboxSize/4))
}

// budget is one stream's rate limiter and inbox share; only its receiver goroutine uses it
// (release is called by the loop).
type budget struct {
	c    *Coordinator
	conn *fetcherConn
	lim  *rate.Limiter
}

func (g *gateway) newBudget(conn *fetcherConn, slots int) *budget {
	cfg := &g.c.cfg
	r := cfg.StreamRate + cfg.StreamRatePerSlot*float64(slots)
	return &budget{c: g.c, conn: conn, lim: rate.NewLimiter(rate.Limit(r), max(1, int(2*r)))}
}

// take waits until the stream may post one more message, of n events (a batch: step 9 of
// the Work protocol; 1 for any other message): each counts against the rate as a message of
// its own, and the message takes min(n, share) places in the inbox, which it returns (the
// loop frees them with release when it applies the message). On an error it holds none.
func (b *budget) take(ctx context.Context, n int) (int, error) {
	clk := b.c.cfg.Clock
	now := clk.Now()
	n = max(n, 1)
	places := min(n, cap(b.conn.share))
	var d time.Duration
	for n > 0 {
		// At most a burst at a time (a batch may be larger than the burst of a small rate,
		// which ReserveN would refuse): the last reservation's delay is the batch's.
		k := min(n, b.lim.Burst())
		d = b.lim.ReserveN(now, k).DelayFrom(now)
		n -= k
	}
	if d > 0 {
		b.c.m.throttled.Inc()
		if err := b.wait(ctx, d); err != nil {
			return 0, err
		}
	}
	throttled := false
	for i := range places {
		select {
		case b.conn.share <- struct{}{}:
			continue
		default:
		}
		if !throttled {
			b.c.m.throttled.Inc()
			throttled = true
		}
		var err error
		select {
		case b.conn.share <- struct{}{}:
			continue
		case <-ctx.Done():
			err = status.FromContextError(ctx.Err()).Err()
		case <-b.c.done:
			err = errStopped
		}
		b.conn.release(i)
		return 0, err
	}
	return places, nil
}

func (b *budget) wait(ctx context.Context, d time.Duration) error {
	t := b.c.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-b.c.done:
		return errStopped
	}
}

// release frees n inbox places of the stream: those of an applied message (called by the
// loop), or those a failed take held.
func (c *fetcherConn) release(n int) {
	for range n {
		select {
		case <-c.share:
		default:
			return
		}
	}
}
