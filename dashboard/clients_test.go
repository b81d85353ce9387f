package dashboard_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/paperfetch/paperfetch/coordinator"
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
