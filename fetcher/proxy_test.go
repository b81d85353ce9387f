package fetcher

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// proxyServer is a forward proxy for plain http targets that records the requests it gets and
// answers them itself with a PDF (it never connects anywhere).
func proxyServer(t *testing.T) (*httptest.Server, func() []*http.Request) {
	var mu sync.Mutex
	var got []*http.Request
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Clone(r.Context()))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/pdf")
		_, _ = w.Write(pdfBody(4096, 7))
	}))
	t.Cleanup(s.Close)
	return s, func() []*http.Request {
		mu.Lock()
		defer mu.Unlock()
		return append([]*http.Request(nil), got...)
	}
}

// Downloads go through a forward proxy with the extra headers; the proxy on loopback is
// allowed explicitly, and a target that is an address literal is still judged by the guard.
func TestForwardProxyAndHeaders(t *testing.T) {
	px, requests := proxyServer(t)
	pu, mode, err := ParseProxy(px.URL)
	if err != nil || mode != ProxyForward {
		t.Fatalf("ParseProxy: %v %v", mode, err)
	}
	tf := newTestFetcher(t, func(c *Config) {
		c.AllowPrivateNetworks = false
		c.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} // the proxy's address, explicitly
		c.Proxy, c.ProxyMode = pu, mode
		c.Headers = http.Header{"X-Api-Key": {"secret"}}
	})
	_, fail, _ := tf.run(t, "http://papers.example.org/a.pdf", nil)
	if fail != nil {
		t.Fatal(fail)
	}
	got := requests()
	if len(got) != 1 || got[0].URL.String() != "http://papers.example.org/a.pdf" || got[0].Header.Get("X-Api-Key") != "secret" {
		t.Fatalf("proxy saw %v", got)
	}
	// What the guard can still check through the proxy: address literals and localhost.
	for _, target := range []string{"http://10.0.0.1/x.pdf", "http://169.254.169.254/latest", "http://localhost/x.pdf", "http://2130706434/x.pdf"} { // 2130706434 is 127.0.0.2
		_, fail, _ := tf.run(t, target, nil)
		wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_FORBIDDEN_ADDRESS)
	}
	if n := len(requests()); n != 1 {
		t.Fatalf("forbidden targets reached the proxy: %d requests", n)
	}
}

// A proxy on a private address that is not allowed is refused like any origin.
func TestProxyAddressGuarded(t *testing.T) {
	px, requests := proxyServer(t)
	pu, mode, _ := ParseProxy(px.URL)
	tf := newTestFetcher(t, func(c *Config) { c.AllowPrivateNetworks = false; c.Proxy, c.ProxyMode = pu, mode })
	_, fail, _ := tf.run(t, "http://papers.example.org/a.pdf", nil)
	wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_FORBIDDEN_ADDRESS)
	if len(requests()) != 0 {
		t.Fatal("the guard let a connection to a loopback proxy through")
	}
}

// An EZproxy-style prefix gets the target URL appended.
func TestPrefixProxy(t *testing.T) {
	px, requests := proxyServer(t)
	pu, mode, err := ParseProxy(px.URL + "/login?url=")
	if err != nil || mode != ProxyPrefix {
		t.Fatalf("ParseProxy: %v %v", mode, err)
	}
	tf := newTestFetcher(t, func(c *Config) { c.Proxy, c.ProxyMode = pu, mode })
	if _, fail, _ := tf.run(t, "https://papers.example.org/a.pdf", nil); fail != nil {
		t.Fatal(fail)
	}
	got := requests()
	if len(got) != 1 || got[0].URL.Path != "/login" || got[0].URL.Query().Get("url") != "https://papers.example.org/a.pdf" {
		t.Fatalf("proxy saw %v", got)
	}
}

func TestParseProxyAndHeader(t *testing.T) {
	for _, bad := range []string{"ftp://x", "http://", "http://u:p@proxy:3128"} {
		if _, _, err := ParseProxy(bad); err == nil {
			t.Errorf("ParseProxy(%q) accepted", bad)
		}
	}
	// A refused --proxy value never echoes its password nor a token-like query parameter (the
	// message goes to the terminal and logs), whatever else is wrong with it.
	for _, bad := range []string{"socks5://u:s3cret@proxy:1080", "http://u:s3cret@proxy/%zz", "http://u:s3cret@", "http://u:s3cret@proxy:3128", "socks5://proxy:1080/?token=s3cret", "https:///login?api_key=s3cret"} {
		_, _, err := ParseProxy(bad)
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("ParseProxy(%q): %v", bad, err)
		}
	}
	if k, v, err := ParseHeader("x-api-key:  abc "); err != nil || k != "X-Api-Key" || v != "abc" {
		t.Errorf("ParseHeader: %q %q %v", k, v, err)
	}
	for _, bad := range []string{"NoColon", "Bad Name: x", "Range: bytes=0-", "X: a\x01b", ": x", strings.Repeat("x", MaxHeaderBytes+1)} {
		if _, _, err := ParseHeader(bad); err == nil {
			t.Errorf("ParseHeader(%q) accepted", bad)
		}
	}
}
