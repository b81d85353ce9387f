package dashboard_test

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/paperfetch/paperfetch/coordinator"
	"github.com/paperfetch/paperfetch/dashboard"
	"github.com/paperfetch/paperfetch/embedded"
)

// TestClientsCountedApart checks that the coordinator's per-client limits see each HTTP client
// as itself, not every dashboard and curl user as the one in-process connection: with two
// watchers allowed per client address, a client on 127.0.0.1 holding two batch pages open is
// refused a third (429), while a client on 127.0.0.2 still gets one; a
// Grpc-Metadata-Paperfetch-Forwarded-Client header cannot make 127.0.0.1 pass for another.
func TestClientsCountedApart(t *testing.T) {
	o := newOrigin(t)
	s := startStack(t, func(o *embedded.Options) {
		tune := o.TuneCoordinator
		o.TuneCoordinator = func(c *coordinator.Config) {
			tune(c)
			c.WatchersPerPeer = 2
		}
	})
	s.call(t, "POST", "/v1/batches", `{"batchId":"slow","papers":[{"paperId":"s","urls":["`+o.URL+`/slow/s.pdf"]}]}`, nil)
	<-o.slowCalls
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 2 {
		s.follow(t, ctx, "/ui/events?batch=slow")
	}
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	}
	for _, c := range []struct {
		path   string
		ip     string
		header string
		want   int
	}{
		{"/ui/events?batch=slow", "127.0.0.1", "", http.StatusTooManyRequests},
		{"/v1/batches/slow:watch", "127.0.0.1", "", http.StatusTooManyRequests},
		{"/ui/events?batch=slow", "127.0.0.1", "10.1.2.3:4", http.StatusTooManyRequests},
		{"/v1/batches/slow:watch", "127.0.0.1", "10.1.2.3:4", http.StatusTooManyRequests},
		{"/ui/events?batch=slow", "127.0.0.2", "", http.StatusOK},
		{"/v1/batches/slow:watch", "127.0.0.2", "", http.StatusOK},
	} {
		req, err := http.NewRequestWithContext(ctx, "GET", s.url+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		if c.header != "" {
			req.Header.Set("Grpc-Metadata-Paperfetch-Forwarded-Client", c.header)
		}
		cl := from(c.ip)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		cl.CloseIdleConnections()
		if resp.StatusCode != c.want {
			t.Errorf("GET %s from %s (forwarded header %q): %d, want %d", c.path, c.ip, c.header, resp.StatusCode, c.want)
		}
	}
}

// TestOverviewStreamsPerClient checks that one client address holds at most
// MaxOverviewStreamsPerClient overview streams at once (the shared reader makes one more cost
// the coordinator nothing after its first read, so the coordinator's limits do not bound them):
// one more is refused with 429, another address still gets one, and a closed stream frees its
// place.
func TestOverviewStreamsPerClient(t *testing.T) {
	s := startStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	get := func(ip string) int {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		cl := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
		defer cl.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx, "GET", s.url+"/ui/events", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var stops []context.CancelFunc
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	for i := range dashboard.MaxOverviewStreamsPerClient {
		c, stop := context.WithCancel(ctx)
		stops = append(stops, stop)
		if ev := <-s.follow(t, c, "/ui/events"); ev.name != "overview" {
			t.Fatalf("stream %d: %s %s", i, ev.name, ev.data)
		}
	}
	if got := get("127.0.0.1"); got != http.StatusTooManyRequests {
		t.Fatalf("stream %d from one client: %d, want 429", dashboard.MaxOverviewStreamsPerClient+1, got)
	}
	if got := get("127.0.0.2"); got != http.StatusOK {
		t.Fatalf("another client: %d", got)
	}
	stops[0]()
	deadline := time.Now().Add(10 * time.Second)
	for get("127.0.0.1") != http.StatusOK { // the closed stream's handler returns soon after
		if time.Now().After(deadline) {
			t.Fatal("a closed stream did not free its place")
		}
		runtime.Gosched()
	}
}
