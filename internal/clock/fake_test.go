package clock

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestFakeTimerFiresOnlyWhenDue(t *testing.T) {
	f := NewFake(time.Unix(1000, 0))
	tm := f.NewTimer(10 * time.Second)
	f.Advance(9 * time.Second)
	select {
	case <-tm.C():
		t.Fatal("timer fired early")
	default:
	}
	f.Advance(time.Second)
	select {
	case got := <-tm.C():
		if want := time.Unix(1010, 0); !got.Equal(want) {
			t.Fatalf("fired with %v, want %v", got, want)
		}
	default:
		t.Fatal("timer did not fire")
	}
	if f.Waiters() != 0 {
		t.Fatalf("fired timer still counted as waiting")
	}
}

func TestFakeTimerStopAndReset(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	tm := f.NewTimer(time.Second)
	if !tm.Stop() {
		t.Fatal("Stop of an active timer returned false")
	}
	f.Advance(2 * time.Second)
	select {
	case <-tm.C():
		t.Fatal("stopped timer fired")
	default:
	}
	if tm.Reset(time.Second) {
		t.Fatal("Reset of a stopped timer reported it active")
	}
	f.Advance(time.Second)
	select {
	case <-tm.C():
	default:
		t.Fatal("reset timer did not fire")
	}
}

func TestFakeTickerDropsTicksWhenFull(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	tk := f.NewTicker(time.Second)
	defer tk.Stop()
	f.Advance(5 * time.Second)
	<-tk.C()
	select {
	case <-tk.C():
		t.Fatal("ticker buffered more than one tick")
	default:
	}
	f.Advance(time.Second)
	select {
	case got := <-tk.C():
		if !got.Equal(time.Unix(6, 0)) {
			t.Fatalf("tick at %v, want 6s", got)
		}
	default:
		t.Fatal("ticker did not tick")
	}
}

func TestFakeWaitForWaiters(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	armed := make(chan Ticker)
	go func() { armed <- f.NewTicker(time.Second) }()
	if err := f.WaitForWaiters(ctx, 1); err != nil {
		t.Fatalf("WaitForWaiters: %v", err)
	}
	if n := f.Waiters(); n != 1 {
		t.Fatalf("%d waiters after WaitForWaiters(1)", n)
	}
	tk := <-armed
	defer tk.Stop()

	short, cancelShort := context.WithCancel(t.Context())
	cancelShort()
	if err := f.WaitForWaiters(short, 2); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitForWaiters with a cancelled context = %v", err)
	}
}

func TestFakeAfterFunc(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	fired := make(chan time.Time, 4)
	var tm Timer
	tm = f.AfterFunc(time.Second, func() { fired <- f.Now() })
	f.Advance(999 * time.Millisecond)
	if f.Waiters() != 1 {
		t.Fatal("AfterFunc timer not counted as waiting")
	}
	f.Advance(time.Millisecond)
	if got := <-fired; !got.Equal(time.Unix(1, 0)) {
		t.Fatalf("fired at %v", got)
	}
	if f.Waiters() != 0 {
		t.Fatal("fired AfterFunc timer still counted as waiting")
	}
	if tm.Reset(time.Second) {
		t.Fatal("Reset of a fired timer reported it active")
	}
	if !tm.Stop() {
		t.Fatal("Stop of a reset timer returned false")
	}
	f.Advance(time.Hour)
	tm.Reset(time.Second)
	f.Advance(time.Second)
	if got := <-fired; !got.Equal(time.Unix(3602, 0)) {
		t.Fatalf("fired at %v after Reset", got)
	}
	select {
	case got := <-fired:
		t.Fatalf("stopped timer fired at %v", got)
	default:
	}
}
