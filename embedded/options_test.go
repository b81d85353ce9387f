package embedded_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/paperfetch/paperfetch/embedded"
	"github.com/paperfetch/paperfetch/fetcher"
)

// --header: a value with CR, LF or NUL (a header injection) is refused, and the bound is on the
// values, so one name repeated cannot grow the headers without end.
func TestHeaderFlag(t *testing.T) {
	var h http.Header
	set := embedded.HeaderFlag(&h)
	for _, bad := range []string{"X-A: v\r\nHost: evil", "X-A: v\nX-B: w", "X-A: v\x00", "X\r\nY: v", "Host: x", "no colon", strings.Repeat("X", fetcher.MaxHeaderBytes+1) + ": v"} {
		if err := set(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if len(h) != 0 {
		t.Fatalf("refused values were kept: %v", h)
	}
	for i := range fetcher.MaxHeaders {
		if err := set("X-Same: v" + strings.Repeat("x", i)); err != nil {
			t.Fatalf("header %d: %v", i, err)
		}
	}
	if err := set("X-Same: one too many"); err == nil {
		t.Fatalf("header %d accepted: %d values", fetcher.MaxHeaders+1, len(h["X-Same"]))
	}
}
