package fetcher

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// TestKeepsConnectionsOfEveryDownloadThatMayRun: a fetcher may run Slots + Prefetch downloads of
// one host at once (a successor starts as its predecessor's body is in); the connections of all
// of them stay open for the next downloads instead of being closed as they go idle and dialled
// again (before: only Slots were kept, the other Prefetch were dialled anew every round).
func TestKeepsConnectionsOfEveryDownloadThatMayRun(t *testing.T) {
	const slots, prefetch = 2, 3
	const n = slots + prefetch
	pdf := pdfBody(4096, 7)
	var dials atomic.Int64
	var mu sync.Mutex
	arrived, release := 0, make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every request of a round waits until all n arrived: n connections are open at once.
		mu.Lock()
		arrived++
		if arrived == n {
			close(release)
		}
		ch := release
		mu.Unlock()
		<-ch
		w.Header().Set("Content-Type", "application/pdf")
		w.Header().Set("Content-Length", strconv.Itoa(len(pdf)))
		_, _ = w.Write(pdf)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	tf := newTestFetcher(t, func(c *Config) { c.Slots, c.Prefetch = slots, prefetch })
	for round := range 3 {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if _, fail, _ := tf.run(t, fmt.Sprintf("%s/p/%d/%d", srv.URL, round, i), nil); fail != nil {
					t.Errorf("round %d download %d: %v", round, i, fail.msg)
				}
			})
		}
		wg.Wait()
		mu.Lock()
		arrived, release = 0, make(chan struct{})
		mu.Unlock()
	}
	if got := dials.Load(); got != n {
		t.Fatalf("%d connections for 3 rounds of %d concurrent downloads, want %d (one per download that may run at once)", got, n, n)
	}
}
