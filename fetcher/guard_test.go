package fetcher

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func TestGuardCheck(t *testing.T) {
	g := &guard{}
	refused := []string{
		"127.0.0.1", "127.1.2.3", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254",
		"192.168.1.1", "100.64.0.1", "169.254.169.254", "169.254.1.1", "0.0.0.0", "224.0.0.1",
		"255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
		"::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254", "64:ff9b::a00:1", "2002:a00:1::1",
	}
	for _, s := range refused {
		err := g.check(netip.MustParseAddr(s))
		var fa *forbiddenAddrError
		if !errors.As(err, &fa) {
			t.Errorf("%s allowed, want refused", s)
		}
	}
	allowed := []string{"8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"}
	for _, s := range allowed {
		if err := g.check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s refused: %v", s, err)
		}
	}
	all := &guard{allowAll: true}
	for _, s := range refused {
		if err := all.check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("allow-private-networks: %s refused: %v", s, err)
		}
	}
	cidr := &guard{allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("::1/128")}}
	for s, ok := range map[string]bool{"10.1.2.3": true, "::ffff:10.1.2.3": true, "::1": true, "10.2.0.1": false, "127.0.0.1": false} {
		if err := cidr.check(netip.MustParseAddr(s)); (err == nil) != ok {
			t.Errorf("allow-cidr: %s: err %v, want allowed=%v", s, err, ok)
		}
	}
}

// TestSSRFRefused downloads through the real dialer: every forbidden target fails permanently
// with FORBIDDEN_ADDRESS before any connection is made, and is allowed when configured.
func TestSSRFRefused(t *testing.T) {
	pdf := pdfBody(10_000, 5)
	origin := hostileOrigin(t, pdf)
	// The "public" origin is loopback too, so it is reached through an allowed CIDR; it
	// redirects to addresses that are not allowed.
	// The redirector listens on 127.0.0.2, the only address allowed in the redirect cases.
	redirector := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	}))
	lis, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	_ = redirector.Listener.Close()
	redirector.Listener = lis
	redirector.Start()
	t.Cleanup(redirector.Close)

	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "internal.example":
			return []netip.Addr{netip.MustParseAddr("10.0.0.7")}, nil
		case "rebind.example":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		case "metadata.example":
			return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
		}
		return nil, errors.New("no such host")
	}
	port := netip.MustParseAddrPort(origin.Listener.Addr().String()).Port()
	rebind := "http://rebind.example:" + strconv.Itoa(int(port)) + "/pdf"
	cases := []struct {
		name string
		url  string
	}{
		{"loopback", origin.URL + "/pdf"},
		{"ipv6 loopback", "http://[::1]:" + strconv.Itoa(int(port)) + "/pdf"},
		{"10/8", "http://10.1.2.3/x.pdf"},
		{"metadata", "http://169.254.169.254/latest/meta-data/"},
		{"ipv4-mapped", "http://[::ffff:127.0.0.1]:" + strconv.Itoa(int(port)) + "/pdf"},
		{"hostname resolving to private", "http://internal.example/x.pdf"},
		{"hostname resolving to loopback", rebind},
		{"hostname resolving to metadata", "http://metadata.example/"},
		{"redirect to private", redirector.URL + "/?to=http://10.0.0.1/x.pdf"},
		{"redirect to loopback", redirector.URL + "/?to=" + origin.URL + "/pdf"},
		{"redirect to loopback name", redirector.URL + "/?to=" + rebind},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tf := newTestFetcher(t, func(c *Config) {
				c.AllowPrivateNetworks = false
				c.LookupIP = lookup
				c.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
			})
			_, fail, _ := tf.run(t, tc.url, nil)
			wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_PERMANENT, pb.FailureReason_FAILURE_REASON_FORBIDDEN_ADDRESS)
			if strings.HasPrefix(tc.name, "redirect") && fail.url == tc.url {
				t.Fatalf("failed at the redirector (%s), want at the redirect target", fail.url)
			}
			tf.assertStore(t)
		})
	}

	t.Run("allowed with allow-private-networks", func(t *testing.T) {
		tf := newTestFetcher(t, func(c *Config) { c.AllowPrivateNetworks = true; c.LookupIP = lookup })
		for _, u := range []string{origin.URL + "/pdf", rebind, "http://[::ffff:127.0.0.1]:" + strconv.Itoa(int(port)) + "/pdf"} {
			if _, fail, _ := tf.run(t, u, nil); fail != nil {
				t.Fatalf("%s: %v", u, fail)
			}
		}
	})
	t.Run("allowed with allow-cidr", func(t *testing.T) {
		tf := newTestFetcher(t, func(c *Config) {
			c.AllowPrivateNetworks = false
			c.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		})
		if _, fail, _ := tf.run(t, origin.URL+"/pdf", nil); fail != nil {
			t.Fatal(fail)
		}
	})
}
