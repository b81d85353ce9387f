package originlib

import (
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// Faults describes how an origin misbehaves. Every field can be set per request by the query
// parameter named in its comment; a parameter that is absent keeps the origin's default.
//
// The "first K requests" faults count the requests of each paper number separately, in the
// order latency → fail503 → fail500 → reset → truncate → flaky, so a paper served with
// fail503=1&reset=1 answers 503, then resets, then succeeds. Because every fault is bounded,
// a client that retries enough always gets the paper in the end: outcomes are deterministic.
type Faults struct {
	// Latency delays the response headers (query "latency", a Go duration).
	Latency time.Duration
	// Rate throttles the body to this many bytes per second; 0 is unthrottled (query "rate").
	Rate int64
	// Stall pauses the body once, after StallAt bytes (query "stall", a Go duration).
	Stall time.Duration
	// StallAt is the byte offset of the stall; 0 means half the body (query "stall_at").
	StallAt int64
	// Fail503 answers the first K requests of each paper with 503 and Retry-After
	// (query "fail503").
	Fail503 int
	// RetryAfter is the Retry-After value, in seconds, of the 503s (query "retry_after"); 0
	// sends no Retry-After (a plain 503: a server error, not a request to slow down).
	RetryAfter int
	// Fail500 answers the next K requests of each paper with 500 (query "fail500").
	Fail500 int
	// Reset sends half the body of the next K requests of each paper, then resets the TCP
	// connection (query "reset").
	Reset int
	// Truncate sends half the body of the next K requests of each paper after declaring the full
	// Content-Length, then closes the connection cleanly (query "truncate").
	Truncate int
	// Flaky fails each later request with this probability in percent (0–100), choosing
	// deterministically from (paper, request number) among 503, 500, reset and truncate
	// (query "flaky").
	Flaky int
	// FlakyMax bounds the flaky failures per paper (query "flaky_max"; default 2).
	FlakyMax int
}

// Validate reports an out-of-range field.
func (f Faults) Validate() error {
	switch {
	case f.Latency < 0 || f.Stall < 0:
		return fmt.Errorf("latency and stall must not be negative")
	case f.Rate < 0 || f.StallAt < 0:
		return fmt.Errorf("rate and stall_at must not be negative")
	case f.Fail503 < 0 || f.Fail500 < 0 || f.Reset < 0 || f.Truncate < 0 || f.FlakyMax < 0 || f.RetryAfter < 0:
		return fmt.Errorf("fault counts must not be negative")
	case f.Flaky < 0 || f.Flaky > 100:
		return fmt.Errorf("flaky must be a percentage (0-100), got %d", f.Flaky)
	}
	return nil
}

// WithQuery returns f overridden by the parameters present in q.
func (f Faults) WithQuery(q url.Values) (Faults, error) {
	dur := func(name string, dst *time.Duration) error {
		if v := q.Get(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("query %s: %w", name, err)
			}
			*dst = d
		}
		return nil
	}
	i64 := func(name string, dst *int64) error {
		if v := q.Get(name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("query %s: %w", name, err)
			}
			*dst = n
		}
		return nil
	}
	num := func(name string, dst *int) error {
		if v := q.Get(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("query %s: %w", name, err)
			}
			*dst = n
		}
		return nil
	}
	for _, err := range []error{
		dur("latency", &f.Latency),
		i64("rate", &f.Rate),
		dur("stall", &f.Stall),
		i64("stall_at", &f.StallAt),
		num("fail503", &f.Fail503),
		num("retry_after", &f.RetryAfter),
		num("fail500", &f.Fail500),
		num("reset", &f.Reset),
		num("truncate", &f.Truncate),
		num("flaky", &f.Flaky),
		num("flaky_max", &f.FlakyMax),
	} {
		if err != nil {
			return f, err
		}
	}
	return f, f.Validate()
}

// failure is what a request gets instead of (or in the middle of) its body.
type failure int

const (
	failNone failure = iota
	fail503
	fail500
	failReset
	failTruncate
)

// String names the failure for logs and stats.
func (k failure) String() string {
	switch k {
	case fail503:
		return "503"
	case fail500:
		return "500"
	case failReset:
		return "reset"
	case failTruncate:
		return "truncate"
	}
	return "none"
}

// decide returns the failure for request number r (0-based) of paper n, given how many flaky
// failures that paper had already; flaky reports whether the failure is a flaky one.
func (f Faults) decide(n uint64, r, flakyFails int) (kind failure, flaky bool) {
	switch {
	case r < f.Fail503:
		return fail503, false
	case r < f.Fail503+f.Fail500:
		return fail500, false
	case r < f.Fail503+f.Fail500+f.Reset:
		return failReset, false
	case r < f.Fail503+f.Fail500+f.Reset+f.Truncate:
		return failTruncate, false
	}
	if f.Flaky == 0 || flakyFails >= f.FlakyMax {
		return failNone, false
	}
	h := mix(n*0x100000001B3 + uint64(r) + 1)
	if int(h%100) >= f.Flaky {
		return failNone, false
	}
	return failure(1 + (h>>32)%4), true
}
