package flagenv

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func TestApply(t *testing.T) {
	env := map[string]string{
		"PAPERFETCH_PER_HOST_DELAY": "3s",
		"PAPERFETCH_LISTEN":         "0.0.0.0:9",
		"PAPERFETCH_SLOTS":          "7",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	delay := fs.Duration("per-host-delay", time.Second, "")
	listen := fs.String("listen", ":1", "")
	slots := fs.Int("slots", 1, "")
	other := fs.String("other", "default", "")
	if err := fs.Parse([]string{"--listen", "cli:2"}); err != nil {
		t.Fatal(err)
	}
	if err := Apply(fs, lookup); err != nil {
		t.Fatal(err)
	}
	if *delay != 3*time.Second || *slots != 7 {
		t.Errorf("env not applied: delay=%v slots=%d", *delay, *slots)
	}
	if *listen != "cli:2" {
		t.Errorf("command line should win, got %q", *listen)
	}
	if *other != "default" {
		t.Errorf("unset variable changed a flag: %q", *other)
	}
}

func TestApplyBadValueNamesVariable(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Int("slots", 1, "")
	_ = fs.Parse(nil)
	err := Apply(fs, func(k string) (string, bool) { return "many", k == "PAPERFETCH_SLOTS" })
	if err == nil || !strings.Contains(err.Error(), "PAPERFETCH_SLOTS") {
		t.Fatalf("want an error naming the variable, got %v", err)
	}
}

func TestSetUsage(t *testing.T) {
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	var out strings.Builder
	fs.SetOutput(&out)
	fs.String("per-host-delay", "1s", "a `duration`")
	SetUsage(fs, "Tool does things.")
	if err := fs.Parse([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	got := out.String()
	for _, want := range []string{"Usage: tool [flags]\n\nTool does things.\n\n", "PAPERFETCH_<FLAG>", "PAPERFETCH_LOG_LEVEL", "-per-host-delay duration"} {
		if !strings.Contains(got, want) {
			t.Errorf("usage lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "Usage:"); n != 1 {
		t.Errorf("usage printed %d times:\n%s", n, got)
	}
}

func TestExitCode(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Int("n", 1, "")
	help := Parse(fs, []string{"-h"}, func(string) (string, bool) { return "", false })
	bad := Parse(fs, []string{"-n", "x"}, func(string) (string, bool) { return "", false })
	env := Parse(fs, nil, func(k string) (string, bool) { return "many", k == "PAPERFETCH_N" })
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0}, {help, 0}, {bad, ExitUsage}, {env, ExitUsage},
		{Usage(errors.New("Config.X must be positive")), ExitUsage},
		{fmt.Errorf("run: %w", Usage(errors.New("wrapped"))), ExitUsage},
		{errors.New("listen: address in use"), ExitFailed},
	} {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	if Usage(nil) != nil {
		t.Fatal("Usage(nil) is not nil")
	}
}

// A bad value is explained by what the flag wants, from the command line and the environment.
func TestExplain(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Int("n", 3, "")
	fs.Duration("d", time.Second, "")
	fs.Bool("b", false, "")
	fs.Float64("f", 0.5, "")
	fs.Float64("g", 10, "") // a whole default: still a number, not a whole one
	fs.Uint("u", 0, "")
	fs.Duration("z", 0, "")
	for name, want := range map[string]string{"n": "not a whole number", "d": "not a duration (write 30s, 2m, 1h)", "b": "want true or false", "f": "not a number", "g": "not a number", "u": "not a whole number", "z": "not a duration (write 30s, 2m, 1h)"} {
		err := fs.Set(name, "junk")
		if got := Explain(fs.Lookup(name), err); got == nil || got.Error() != want {
			t.Errorf("-%s junk: %v, want %q", name, got, want)
		}
	}
	err := Apply(fs, func(k string) (string, bool) { return "lots", k == "PAPERFETCH_N" })
	if want := `environment variable PAPERFETCH_N: invalid value "lots": not a whole number`; err == nil || err.Error() != want {
		t.Errorf("Apply: %v, want %q", err, want)
	}
}
