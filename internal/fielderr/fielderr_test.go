package fielderr

import (
	"errors"
	"testing"
	"time"
)

func TestList(t *testing.T) {
	var l List
	if l.Err("x") != nil {
		t.Fatal("an empty list is an error")
	}
	inner := errors.New("Config.Inner is wrong")
	l.Positive("Config.A", "a", 0)
	l.Positive("Config.OK", "", time.Second)
	l.NonNegative("Config.B", "", -time.Second)
	l.Range("Config.C", "c", 11, 1, 10)
	l.Range("Config.OK2", "", 5, 1, 10)
	l.AtLeast("Config.OK3", "", 1, 1)
	l.Join(nil, inner)
	err := l.Err("coordinator: invalid configuration")
	want := "coordinator: invalid configuration: Config.A (--a) must be positive, got 0s; Config.B must not be negative, got -1s; " +
		"Config.C (--c) must be from 1 to 10, got 11; Config.Inner is wrong"
	if err == nil || err.Error() != want || !errors.Is(err, inner) {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	var fe *Error
	if !errors.As(err, &fe) || len(fe.Errs) != 4 {
		t.Fatalf("As: %v", fe)
	}
	if got := FlagMessage(fe.Errs[0]); got != "--a must be positive, got 0s" {
		t.Errorf("FlagMessage: %q", got)
	}
	if got := FlagMessage(fe.Errs[1]); got != "Config.B must not be negative, got -1s" {
		t.Errorf("FlagMessage without a flag: %q", got)
	}
}
