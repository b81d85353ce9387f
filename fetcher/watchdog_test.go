package fetcher

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/paperfetch/paperfetch/internal/clock"
)

// watchdogUnderTest starts a watchdog on a fake clock; the test stops it.
func watchdogUnderTest(t *testing.T, timeout, stall time.Duration) (*clock.Fake, context.Context, *watchdog) {
	t.Helper()
	clk := clock.NewFake(time.Unix(1_000_000, 0))
	ctx, cancel := context.WithCancelCause(context.Background())
	t.Cleanup(func() { cancel(nil) })
	return clk, ctx, startWatchdog(clk, cancel, timeout, stall)
}

// advance moves clk by d once the watchdog's timer is armed, and waits until the watchdog has
// either armed it again (the download goes on) or cancelled ctx.
func advance(t *testing.T, clk *clock.Fake, ctx context.Context, d time.Duration) {
	t.Helper()
	wctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if err := clk.WaitForWaiters(wctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(d)
	armed := make(chan error, 1)
	go func() { armed <- clk.WaitForWaiters(wctx, 1) }()
	select {
	case err := <-armed:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
	}
}

func TestWatchdogDeadline(t *testing.T) {
	clk, ctx, w := watchdogUnderTest(t, 10*time.Second, 4*time.Second)
	defer w.stop()
	for range 9 { // stall checks every second; no byte yet, so no stall
		advance(t, clk, ctx, time.Second)
	}
	if err := context.Cause(ctx); err != nil {
		t.Fatalf("cancelled before the deadline: %v", err)
	}
	advance(t, clk, ctx, time.Second)
	if err := context.Cause(ctx); !errors.Is(err, errDeadline) {
		t.Fatalf("cause %v, want errDeadline", err)
	}
}

func TestWatchdogStall(t *testing.T) {
	clk, ctx, w := watchdogUnderTest(t, 0, 8*time.Second)
	defer w.stop()
	for range 10 { // not armed: waiting for headers is not a stall
		advance(t, clk, ctx, 2*time.Second)
	}
	w.touch()
	for range 3 {
		advance(t, clk, ctx, 2*time.Second)
	}
	w.touch() // bytes came: 6 s without any is not a stall
	for range 3 {
		advance(t, clk, ctx, 2*time.Second)
	}
	if err := context.Cause(ctx); err != nil {
		t.Fatalf("cancelled while bytes came: %v", err)
	}
	advance(t, clk, ctx, 2*time.Second)
	if err := context.Cause(ctx); !errors.Is(err, errStalled) {
		t.Fatalf("cause %v, want errStalled", err)
	}
}

func TestWatchdogStopped(t *testing.T) {
	clk, ctx, w := watchdogUnderTest(t, time.Second, time.Second)
	w.touch()
	w.stop()
	clk.Advance(time.Hour)
	if err := context.Cause(ctx); err != nil {
		t.Fatalf("a stopped watchdog cancelled: %v", err)
	}
	if n := clk.Waiters(); n != 0 {
		t.Fatalf("%d timers left armed", n)
	}
}
